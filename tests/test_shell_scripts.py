"""Every shipped shell script (slurm/*.sbatch, slurm/*.sh, tests/*.sh) passes shellcheck."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO, skip_or_fail

SCRIPTS = sorted([*REPO.glob("slurm/*.sbatch"), *REPO.glob("slurm/*.sh"), *REPO.glob("tests/*.sh")])


def test_the_slurm_recipes_exist():
    names = {p.name for p in SCRIPTS}
    assert {"train.sbatch", "env.sh", "sysdeps.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(script):
    if shutil.which("shellcheck") is None:
        skip_or_fail("shellcheck not installed (tests/sysdeps.sh installs it)")
    done = subprocess.run(["shellcheck", "--shell=bash", "--external-sources", str(script.relative_to(REPO))],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
