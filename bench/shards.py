#!/usr/bin/env python
"""Shard-writer throughput: audio hours written per minute per core, and its ratio to decoding + FLAC-encoding
the same files in a plain loop (no probe, plan, tar, records or index). Not a test: it prints figures.

    PYTHONPATH=. python bench/shards.py --actors 8 --workers 2

It writes a RAVDESS-layout corpus of espeak-ng speech (48 kHz, every third actor stereo, all 60 trials per
actor) into a temporary folder, then times, side by side and ``--repeat`` times each, (a) the plain loop over
the files the writer keeps (decode, downmix, resample to 16 kHz, FLAC; one process, one torch thread) and
(b) ``fe-shards build`` end to end (scan, probe, plan, write, merge) with 1 and with ``--workers`` processes.
"""

from __future__ import annotations

import argparse
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


def plain_loop(paths: list[Path]) -> float:
    """Seconds to decode, downmix, resample and FLAC-encode every file in this process."""
    start = time.perf_counter()
    for path in paths:
        audio.encode_flac(audio.decode(str(path), 16000), 16000)
    return time.perf_counter() - start


def writer(root: Path, out: Path, workers: int) -> tuple[float, float]:
    """(seconds, audio hours written) of a whole build."""
    start = time.perf_counter()
    skips = Skips()
    result = build(corpora.scan("ravdess", root, skips), BuildOptions(out, workers=workers, max_count=100), skips)
    return time.perf_counter() - start, result.merged.report["hours"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=8, help="RAVDESS actors to generate (60 clips each)")
    parser.add_argument("--workers", type=int, default=2, help="writer processes for the parallel run")
    parser.add_argument("--repeat", type=int, default=2, help="timings of each kind; the best is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_corpus(Path(tmp) / "ravdess", args.actors)
        skips = Skips()
        kept = [clip.audio for clip in corpora.scan("ravdess", root, skips)]
        print(f"corpus: {len(kept)} clips kept of {len(kept) + skips.total} files (48 kHz, some stereo); "
              f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
        loops, runs = [], {1: [], args.workers: []}
        for attempt in range(args.repeat):
            loops.append(plain_loop(kept))
            for workers in runs:
                runs[workers].append(writer(root, Path(tmp) / f"out-{workers}-{attempt}", workers))
        hours = runs[1][0][1]
        loop_rate = hours / (min(loops) / 60)
        print(f"plain decode+FLAC loop, 1 core: {hours * 60:.2f} audio min in {min(loops):.2f} s "
              f"= {loop_rate:.4f} h/min/core (runs {[round(t, 2) for t in loops]})")
        for workers, timings in runs.items():
            best = min(t for t, _ in timings)
            rate = hours / (best / 60) / workers
            print(f"fe-shards build, {workers} worker(s): {best:.2f} s = {rate:.4f} h/min/core, "
                  f"ratio to the plain loop {rate / loop_rate:.2f} (runs {[round(t, 2) for t, _ in timings]})")


if __name__ == "__main__":
    main()
