"""Every script in benchmarks/ run with --smoke (seconds, tiny sizes, every path it measures), so a refactor
that breaks a benchmark fails the suite. Scripts are found by glob: a new benchmark is covered at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# Modules in benchmarks/ that are imported by the scripts, not run: none today. Name each with its reason.
NOT_ENTRY_POINTS: dict[str, str] = {}
# The ones that start Ray (an embedded one through `aal-sweep run`, or a local cluster): slow, as every
# test that starts Ray is. The others run in seconds without Ray.
NEEDS_RAY = {"cluster.py", "duke_scale.py", "overhead.py", "pipeline.py", "screening.py"}
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in NOT_ENTRY_POINTS)
TIMEOUT_S = {True: 600, False: 300}  # by NEEDS_RAY: ample on a loaded 2-core machine


def test_the_lists_name_scripts_that_exist():
    """A renamed benchmark must not leave a stale name behind (it would then run unmarked, or be skipped)."""
    names = {p.name for p in BENCHMARKS.glob("*.py")}
    assert NEEDS_RAY <= names and set(NOT_ENTRY_POINTS) <= names
    assert len(SCRIPTS) >= 10  # the glob found the folder


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=[pytest.mark.slow] if s in NEEDS_RAY else []) for s in SCRIPTS]
)
def test_smoke(script, tmp_path):
    """`python benchmarks/SCRIPT --smoke` exits 0 and prints its measurements."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(
        [sys.executable, str(BENCHMARKS / script), "--smoke"],
        cwd=tmp_path,  # anything a script writes beside it lands here, not in the checkout
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout stops exactly what it started
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S[script in NEEDS_RAY])
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script} --smoke still running after {TIMEOUT_S[script in NEEDS_RAY]} s\n{err[-3000:]}")
    assert proc.returncode == 0, f"{script} --smoke: exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    assert out.strip(), f"{script} --smoke printed nothing on stdout\n{err[-2000:]}"
