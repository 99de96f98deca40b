#!/bin/bash
# One rank of a job, on its node: the site's environment hook first, then the command (exec'd, so that
# srun's signals reach it). FE_TRAIN_ENV names a bash file to source on every node before a rank starts:
# `module load`, `conda activate`, site NCCL settings. It is sourced in the batch shell too.
if [[ -n ${FE_TRAIN_ENV:-} ]]; then
  # shellcheck source=/dev/null
  source "$FE_TRAIN_ENV"
fi
exec "$@"
