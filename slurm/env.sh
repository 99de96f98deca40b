# shellcheck shell=bash
# Sourced by the slurm/*.sbatch scripts: settings that every rank inherits (srun exports the
# batch script's environment to the tasks). Site-specific network choices belong here too, e.g.
# NCCL_SOCKET_IFNAME=ib0 / GLOO_SOCKET_IFNAME=ib0 when the host name resolves to a slow or
# loopback interface, or NCCL_IB_HCA for InfiniBand. Every value can be preset in the environment.

# A failed or stuck peer makes the collectives raise (after engine.timeout_s at most) instead of hanging.
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"

# DeepSpeed's compiled ops (CPU Adam, shm comm) are built once per kind of CPU into this folder and reused by
# every rank and job; on a shared filesystem the first rank builds and the others wait for its lock. The ops
# are built with -march=native, so nodes with another CPU get a folder of their own (one built elsewhere would
# die with SIGILL). A build killed midway leaves its lock behind, and every later rank would wait for it:
# locks older than any build are removed.
cpu_kind=$(uname -m)-$( (grep -m1 '^model name' /proc/cpuinfo; grep -m1 '^flags' /proc/cpuinfo) 2>/dev/null | cksum | cut -d' ' -f1)
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-${FE_TRAIN_HOME:-$PWD}/.cache/torch_extensions/$cpu_kind}"
find "$TORCH_EXTENSIONS_DIR" -name lock -mmin +"${FE_STALE_LOCK_MIN:-30}" -delete 2>/dev/null || true

# One OpenMP/MKL thread per CPU that Slurm gave the task; torch would otherwise start one per core
# of the node in every rank.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"
export TOKENIZERS_PARALLELISM=false

# Rank logs in the order things happened.
export PYTHONUNBUFFERED=1
