"""How much of the frozen LLM's positions hold real tokens, with and without length grouping (issue 18).

    python bench/length_grouping.py [--seeds 0,1,2] [--window 256] [--ranks 8] [--micro 4]

No audio is read: the epoch plan (``fe_train.data.plan``) is built over shards of 1000 samples (``fe-shards
build``'s default) whose lengths are drawn from a documented mix, and each micro-batch is padded to its longest
sample, as the collate pads it. The mix (an assumption, not a corpus measurement; ``MIXES``):

    instructs2s  stages 1, 2b, 3: a spoken instruction of lognormal duration (median 4.5 s, sigma 0.5, 1-30 s) at
                 10 LLM positions per second (Whisper's 50 Hz stacked by 5), a reply of lognormal length (median 120
                 tokens, sigma 0.6, 5-512: ``prompt.max_reply_tokens``) and 40 prompt tokens
    ser          stage 2a: a clip of lognormal duration (median 3 s, sigma 0.4, 1-30 s; the SER corpora's clips
                 are 2-8 s), a label word of 2 tokens and 40 prompt tokens

It prints, per mix and seed, the real fraction of the LLM's positions without grouping and with it (the figures
of docs/shards.md, length grouping; ``tests/test_length_grouping.py`` asserts the grouped one).
"""

from __future__ import annotations

import argparse

import numpy as np

from fe_train.data.lengths import SPEECH_POSITIONS_PER_S, real_fraction
from fe_train.data.plan import EpochPlan, Geometry, Shard

PROMPT_TOKENS = 40
MIXES = {
    "instructs2s": dict(median_s=4.5, sigma_s=0.5, median_reply=120, sigma_reply=0.6),
    "ser": dict(median_s=3.0, sigma_s=0.4, median_reply=2, sigma_reply=0.0),
}


def mix_lengths(name: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """LLM positions of ``count`` samples of mix ``name``."""
    m = MIXES[name]
    seconds = np.clip(rng.lognormal(np.log(m["median_s"]), m["sigma_s"], count), 1.0, 30.0)
    reply = np.clip(np.round(rng.lognormal(np.log(m["median_reply"]), m["sigma_reply"], count)), 1, 512)
    return PROMPT_TOKENS + np.ceil(seconds * SPEECH_POSITIONS_PER_S) + reply


def mix_shards(name: str, shards: int, seed: int, per_shard: int = 1000) -> list[Shard]:
    rng = np.random.default_rng([seed, len(name)])
    return [Shard(f"{name}-{i:06d}.tar", per_shard, lengths=mix_lengths(name, per_shard, rng)) for i in range(shards)]


def fractions(name: str, seed: int, window: int, geometry: Geometry, shards: int = 64) -> tuple[float, float]:
    """(ungrouped, grouped) real fraction of the LLM positions over one epoch of the mix."""
    data = mix_shards(name, shards, seed)
    return tuple(real_fraction(EpochPlan(data, 0, seed, True, geometry, group=group)) for group in (0, window))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--micro", type=int, default=4)
    args = parser.parse_args()
    geometry = Geometry(args.ranks, 2, args.micro)
    print(f"{args.ranks} ranks x 2 workers, micro-batch {args.micro}, window {args.window} samples, 64 shards of 1000")
    print("| mix | seed | real fraction, ungrouped | grouped |")
    print("|---|---|---|---|")
    for name in MIXES:
        for seed in map(int, args.seeds.split(",")):
            plain, grouped = fractions(name, seed, args.window, geometry)
            print(f"| {name} | {seed} | {plain:.3f} | {grouped:.3f} |")


if __name__ == "__main__":
    main()
