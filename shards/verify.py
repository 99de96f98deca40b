#!/usr/bin/env python
"""Read every sample of a shard directory back through the training pipeline: ``fe-shards verify``.

    python shards/verify.py shards/mycorpus
"""

import sys

from fe_train.cli import shards_main

if __name__ == "__main__":
    sys.exit(shards_main(["verify", *sys.argv[1:]]))
