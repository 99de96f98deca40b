#!/usr/bin/env python
"""Shard-writer throughput: audio hours written per minute per core, and its ratio to decoding + FLAC-encoding
the same files in a plain loop (no probe, plan, tar, records or index). Not a test: it prints figures.

    PYTHONPATH=. python bench/shards.py --actors 8 --workers 2

It writes a RAVDESS-layout corpus of espeak-ng speech (48 kHz, every third actor stereo, all 60 trials per
actor) into a temporary folder, then, for 1 and for ``--workers`` processes, times side by side and
``--repeat`` times each (the best counts): (a) the plain loop over the files the writer keeps (decode,
downmix, resample to 16 kHz, FLAC, nothing kept), split evenly over the processes, and (b) ``fe-shards
build`` end to end (scan, probe, plan, write shards of 48 clips, records, merge) with that many workers.
Every process runs one torch thread. Ratio = (b)'s hours per minute per core / (a)'s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import torch

from fe_train.data import audio, corpora
from fe_train.data.build import BuildOptions, build
from fe_train.data.corpora import ravdess
from fe_train.data.stats import Skips
from fe_train.fixtures.layouts import VOICES, Recorder


def make_corpus(root: Path, actors: int) -> Path:
    recorder = Recorder()
    for actor in range(1, actors + 1):
        for emotion in ravdess.EMOTIONS:
            for intensity in ("01",) if emotion == "01" else ("01", "02"):
                for statement in ravdess.STATEMENTS:
                    for repetition in ("01", "02"):
                        stem = f"03-01-{emotion}-{intensity}-{statement}-{repetition}-{actor:02d}"
                        voice = VOICES[(actor + int(repetition)) % len(VOICES)]
                        recorder.write(root / f"Actor_{actor:02d}" / f"{stem}.wav", ravdess.STATEMENTS[statement],
                                       voice, 48000, channels=2 if actor % 3 == 0 else 1)
    return root


def plain_loop(paths: list[Path]) -> None:
    """Decode, downmix, resample and FLAC-encode every file, keeping nothing."""
    for path in paths:
        audio.encode_flac(audio.decode(str(path), 16000), 16000)


def plain(paths: list[Path], workers: int) -> float:
    """Seconds for the plain loop over ``paths``, split evenly over ``workers`` processes of one torch thread."""
    start = time.perf_counter()
    if workers == 1:
        plain_loop(paths)
    else:
        with multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            pool.map(plain_loop, [paths[i::workers] for i in range(workers)])
    return time.perf_counter() - start


def writer(root: Path, out: Path, workers: int) -> tuple[float, float]:
    """(seconds, audio hours written) of a whole build."""
    start = time.perf_counter()
    skips = Skips()
    result = build(corpora.scan("ravdess", root, skips), BuildOptions(out, workers=workers, max_count=48), skips)
    return time.perf_counter() - start, result.merged.report["hours"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=8, help="RAVDESS actors to generate (60 clips each)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel runs")
    parser.add_argument("--repeat", type=int, default=3, help="timings of each kind; the best is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_corpus(Path(tmp) / "ravdess", args.actors)
        skips = Skips()
        kept = [clip.audio for clip in corpora.scan("ravdess", root, skips)]
        print(f"corpus: {len(kept)} clips kept of {len(kept) + skips.total} files (48 kHz, some stereo); "
              f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
        baseline: float | None = None
        for workers in sorted({1, args.workers}):
            loops, builds = [], []
            for attempt in range(args.repeat):
                loops.append(plain(kept, workers))
                builds.append(writer(root, Path(tmp) / f"out-{workers}-{attempt}", workers))
            hours = builds[0][1]
            loop_rate = hours / (min(loops) / 60) / workers
            rate = hours / (min(t for t, _ in builds) / 60) / workers
            baseline = baseline or loop_rate
            print(f"{workers} process(es), {hours * 60:.2f} audio min: plain decode+FLAC {loop_rate:.3f} h/min/core "
                  f"(runs {[round(t, 2) for t in loops]} s); fe-shards build {rate:.3f} h/min/core "
                  f"(runs {[round(t, 2) for t, _ in builds]} s); ratio {rate / loop_rate:.2f} at the same "
                  f"parallelism, {rate / baseline:.2f} to the 1-process plain loop")
        print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
