#!/bin/bash
# The paper's recipe (docs/reproduce.md steps 2-13) as one pipeline, from one pipeline config:
#
#   slurm/reproduce.sh CONFIG [--local] [--dry-run] [--from STEP] [--to STEP] [--only STEP] [--list] [--rerun-changed]
#
# Slurm mode submits every step as a job (slurm/build_shards.sbatch, generate.sbatch, train.sbatch, step.sbatch)
# chained with --dependency=afterok; --local runs the same steps in order in this shell. A finished step leaves
# <out>/.pipeline/<step>.done and a rerun skips it. Run from the checkout; PYTHON picks the interpreter.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m fe_train.reproduce "$@"
