#!/usr/bin/env bash
# Debian packages the tests use: espeak-ng and sox (real speech), slurm + munge (the real-Slurm tier)
# and shellcheck (script lint). Installs what is missing when run as root with apt-get; otherwise says
# what is missing and leaves it (the tests that need it are skipped with that reason).
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v slurmd >/dev/null || need+=(slurmd)
command -v slurmctld >/dev/null || need+=(slurmctld)
command -v sbatch >/dev/null || need+=(slurm-client)
command -v munged >/dev/null || need+=(munge)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "sysdeps: installing ${need[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "sysdeps: missing ${need[*]} (not root or no apt-get); tests needing them will be skipped" >&2
fi
