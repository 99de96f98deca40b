"""Under CI (``CI=true``) a test whose requirement is missing fails with the reason; elsewhere it is skipped.

A small pytest run in a subprocess, on a PATH that hides espeak-ng and shellcheck, over tests that need them
the ways the suite does: the ``assets`` fixture, the ``espeak_ng`` fixture of a module and ``skip_or_fail``;
and tests/sysdeps.sh (which ``make test`` runs first) on that PATH without apt-get.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from conftest import REPO

HIDDEN = ("espeak-ng", "shellcheck", "apt-get")
ESPEAK = "espeak-ng not installed (tests/sysdeps.sh installs it)"
TESTS = '''
import shutil
import pytest
from conftest import skip_or_fail

def test_assets(assets):
    pass

@pytest.mark.usefixtures("espeak_ng")
def test_module_mark():
    pass

def test_shellcheck():
    if shutil.which("shellcheck") is None:
        skip_or_fail("shellcheck not installed")
'''


def path_without(tmp: Path, hidden: tuple[str, ...]) -> str:
    """A PATH of one folder holding a link to every command of the current PATH except ``hidden``."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for folder in reversed(os.environ["PATH"].split(os.pathsep)):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if name not in hidden:
                (bin_dir / name).unlink(missing_ok=True)
                (bin_dir / name).symlink_to(Path(folder, name))
    return str(bin_dir)


@pytest.fixture(scope="module")
def hidden_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ci")
    (tmp / "test_needs.py").write_text(TESTS)
    return tmp, path_without(tmp, HIDDEN)


def outcomes(tmp: Path, path: str, ci: str | None) -> dict[str, tuple[str, str]]:
    """Each test's outcome (passed, skipped, error, failure) and message, from the run's JUnit XML."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=path, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]), **({"CI": ci} if ci else {}))
    report = tmp / f"report-{ci}.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
                    f"--junitxml={report}", "test_needs.py"], cwd=tmp, env=env, capture_output=True, timeout=120)
    found = {}
    for case in ElementTree.parse(report).iter("testcase"):
        outcome = next(iter(case), None)
        found[case.get("name")] = ("passed", "") if outcome is None else (outcome.tag, outcome.get("message", ""))
    return found


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_requirement_fails_naming_it(hidden_path, ci):
    found = outcomes(*hidden_path, ci)
    print(found)
    assert found == {
        "test_assets": ("error", f'failed on setup with "Failed: required in CI: {ESPEAK}"'),
        "test_module_mark": ("error", f'failed on setup with "Failed: required in CI: {ESPEAK}"'),
        "test_shellcheck": ("failure", "Failed: required in CI: shellcheck not installed"),
    }


def test_without_ci_a_missing_requirement_skips(hidden_path):
    found = outcomes(*hidden_path, None)
    print(found)
    assert found == {
        "test_assets": ("skipped", ESPEAK),
        "test_module_mark": ("skipped", ESPEAK),
        "test_shellcheck": ("skipped", "shellcheck not installed"),
    }


@pytest.mark.parametrize("ci", ["true", None])
def test_sysdeps_that_cannot_install_fails_under_ci_naming_the_packages(hidden_path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=hidden_path[1], **({"CI": ci} if ci else {}))
    proc = subprocess.run(["bash", str(REPO / "tests" / "sysdeps.sh")], env=env, capture_output=True, text=True, timeout=60)
    last = proc.stderr.strip().splitlines()[-1]
    print(proc.returncode, last)
    assert proc.returncode == (1 if ci else 0)
    assert last.startswith("sysdeps: error: missing " if ci else "sysdeps: missing ") and "(not root or no apt-get)" in last
    assert {"espeak-ng", "shellcheck"} <= set(last.split("(")[0].split()), last
