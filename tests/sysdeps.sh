#!/usr/bin/env bash
# Debian packages the tests use: espeak-ng and sox (real speech), slurm + munge (the real-Slurm tier)
# and shellcheck (script lint). Installs what is missing when run as root with apt-get. What stays
# missing is named on one line: under CI (CI=true or 1) that is an error, since the tests needing it
# would fail; elsewhere a warning, and those tests are skipped with that reason.
set -euo pipefail

missing() {
  need=()
  command -v espeak-ng >/dev/null || need+=(espeak-ng)
  command -v sox >/dev/null || need+=(sox)
  command -v shellcheck >/dev/null || need+=(shellcheck)
  command -v slurmd >/dev/null || need+=(slurmd)
  command -v slurmctld >/dev/null || need+=(slurmctld)
  command -v sbatch >/dev/null || need+=(slurm-client)
  command -v munged >/dev/null || need+=(munge)
  command -v ip >/dev/null || need+=(iproute2)
}

missing
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "sysdeps: installing ${need[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >/dev/null || true
  missing
  if [ ${#need[@]} -eq 0 ]; then
    exit 0
  fi
  why="apt-get did not install them"
else
  why="not root or no apt-get"
fi
case "${CI:-}" in
  true | TRUE | True | 1)
    echo "sysdeps: error: missing ${need[*]} ($why); CI needs them" >&2
    exit 1
    ;;
esac
echo "sysdeps: missing ${need[*]} ($why); tests needing them will be skipped" >&2
