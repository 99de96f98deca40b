#!/usr/bin/env python
"""Shard-writer throughput: audio hours written per minute per core, and its ratio to decoding + FLAC-encoding
the same files in a plain loop (no probe, plan, tar, records or index). Not a test: it prints figures.

    PYTHONPATH=. python bench/shards.py --actors 12 --workers 2 --repeat 3

It writes a RAVDESS-layout corpus of espeak-ng speech (48 kHz, every third actor stereo, all 60 trials per
actor) into a temporary folder, then, for 1 and for ``--workers`` processes, times side by side and
``--repeat`` times each (the best counts): (a) the plain loop over the files the writer keeps (decode,
downmix, resample to 16 kHz, FLAC, nothing kept), split evenly over the processes, and (b) ``fe-shards
build`` end to end (scan, probe, plan, write shards of 48 clips, records, merge) with that many workers.
Every process runs one torch thread. Rates are audio hours per wall-clock minute per process, and audio
hours per CPU-minute (user + system time of the process and its workers: what a shared machine's other
load does not distort); ratio = (b)'s rate / (a)'s, for each.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
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


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the pool's workers), user + system."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def timed(run, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``run(*args)``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    run(*args)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def plain(paths: list[Path], workers: int) -> None:
    """The plain loop over ``paths``, split evenly over ``workers`` processes of one torch thread."""
    if workers == 1:
        plain_loop(paths)
    else:
        with multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            pool.map(plain_loop, [paths[i::workers] for i in range(workers)])


def writer(root: Path, out: Path, workers: int) -> float:
    """A whole build; returns the audio hours written."""
    skips = Skips()
    result = build(corpora.scan("ravdess", root, skips), BuildOptions(out, workers=workers, max_count=48), skips)
    return result.merged.report["hours"]


def rates(hours: float, runs: list[tuple[float, float]], workers: int) -> tuple[float, float]:
    """(h/min/core by wall clock, h/min per CPU-minute) of the best run of each kind."""
    return hours / (min(w for w, _ in runs) / 60) / workers, hours / (min(c for _, c in runs) / 60)


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
        hours = writer(root, Path(tmp) / "warm-up", 1)
        print(f"corpus: {len(kept)} clips kept of {len(kept) + skips.total} files (48 kHz, some stereo), "
              f"{hours * 60:.2f} audio min; cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
        for workers in sorted({1, args.workers}):
            loops, builds = [], []
            for attempt in range(args.repeat):
                loops.append(timed(plain, kept, workers))
                builds.append(timed(writer, root, Path(tmp) / f"out-{workers}-{attempt}", workers))
            (loop_wall, loop_cpu), (build_wall, build_cpu) = rates(hours, loops, workers), rates(hours, builds, workers)
            print(f"{workers} process(es): plain decode+FLAC {loop_wall:.3f} h/min/core wall, {loop_cpu:.3f} h/CPU-min "
                  f"(wall {[round(w, 2) for w, _ in loops]} s, CPU {[round(c, 2) for _, c in loops]} s)")
            print(f"{workers} process(es): fe-shards build  {build_wall:.3f} h/min/core wall, {build_cpu:.3f} h/CPU-min "
                  f"(wall {[round(w, 2) for w, _ in builds]} s, CPU {[round(c, 2) for _, c in builds]} s)")
            print(f"{workers} process(es): ratio {build_wall / loop_wall:.2f} by wall clock, "
                  f"{build_cpu / loop_cpu:.2f} by CPU time")
        print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
