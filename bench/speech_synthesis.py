"""espeak-ng speech, one ``speak`` after another vs ``speak_each`` (several processes at once), side by side.

    python bench/speech_synthesis.py [--clips 240] [--rounds 2]

The clips are the tests' world's questions said by the voices of the encoder's grid at their own rate and pitch
(``fe_train.fixtures.listener.GRID``), as the fixture worlds and ``fe-shards units`` render them. Each round times
the same clips one after another and then through ``speak_each`` with 1, 2, ... up to the CPUs this process may use
(the machine's drift falls on all); every way must give the same speech, sample for sample. Prints clips/s per way
and round, then the medians and each one's ratio to one after another.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import numpy as np

from fe_train.data import synthetic
from fe_train.fixtures.listener import GRID


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(0)
    questions = synthetic.questions()
    items = [(n, rng.choice(questions).text, synthetic.Voice(rng.choice(GRID), rng.randint(130, 190), rng.randint(25, 75)))
             for n in range(args.clips)]
    reference = [synthetic.speak(text, voice) for _, text, voice in items]  # warm-up, and the speech to match
    ways = {"one after another": lambda: [synthetic.speak(text, voice) for _, text, voice in items]}
    for workers in range(1, len(os.sched_getaffinity(0)) + 1):
        ways[f"speak_each, {workers} workers"] = lambda w=workers: [wave for _, wave in synthetic.speak_each(items, workers=w)]
    rates: dict[str, list[float]] = {way: [] for way in ways}
    for round_index in range(args.rounds):
        for way, run in ways.items():
            started = time.perf_counter()
            waves = run()
            rates[way].append(args.clips / (time.perf_counter() - started))
            assert all(np.array_equal(a, b) for a, b in zip(waves, reference, strict=True)), f"{way}: other speech"
            print(f"round {round_index}: {way}: {rates[way][-1]:.1f} clips/s", flush=True)
    base = statistics.median(rates["one after another"])
    for way, values in rates.items():
        print(f"median {way}: {statistics.median(values):.1f} clips/s ({statistics.median(values) / base:.2f}x)")


if __name__ == "__main__":
    main()
