#!/usr/bin/env python
"""Merge the indexes and reports of a build's array tasks once all its shards exist: ``fe-shards merge``.

    python shards/merge.py shards/mycorpus
"""

import sys

from fe_train.cli import shards_main

if __name__ == "__main__":
    sys.exit(shards_main(["merge", *sys.argv[1:]]))
