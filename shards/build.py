#!/usr/bin/env python
"""Build WebDataset shards from a corpus: a thin script over ``fe-shards build``.

    python shards/build.py --corpus manifest --root clips.jsonl --out shards/mycorpus
"""

import sys

from fe_train.cli import shards_main

if __name__ == "__main__":
    sys.exit(shards_main(["build", *sys.argv[1:]]))
