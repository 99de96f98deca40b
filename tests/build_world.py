"""Build one fixture world through the tests' cache and print its folder and checks.

Usage: FE_WORLD_SEED=1 python tests/build_world.py {assets,ser_assets} [--threads N]
(the slow tier's test_fixture_worlds.py runs it for several seeds and thread counts).
"""

import argparse

import torch

from conftest import build_world

parser = argparse.ArgumentParser()
parser.add_argument("world", choices=["assets", "ser_assets"])
parser.add_argument("--threads", type=int, default=torch.get_num_threads())
args = parser.parse_args()
torch.set_num_threads(args.threads)
root = build_world(args.world)
print(root)
print((root / "checks.json").read_text(), end="")
