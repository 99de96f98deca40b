"""Rank 0 waits forever, rank 1 fails: torchrun terminates rank 0, whose stack must say where it waited."""

import os
import sys
import time

from fe_train.launch.logs import setup_rank

rank = int(os.environ["RANK"])
setup_rank(rank)


def wait_for_the_peer() -> None:
    time.sleep(600)


if rank == 0:
    wait_for_the_peer()
time.sleep(2)
sys.exit(1)
