"""What ``banditloop simulate --no-checkpoint`` imports: only what the run needs (issue 12).

Start-up is part of the command's throughput; these are not timings but the list of modules a fresh
process holds after the run, so they hold on any machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

RUN = """
import contextlib, io, json, sys
from banditloop.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = main({argv!r})
print(json.dumps({{"status": status, "summary": json.loads(out.getvalue()), "modules": sorted(sys.modules)}}))
"""


def _run(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUN.format(argv=argv)], capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _loaded(modules: list[str], package: str) -> list[str]:
    return [m for m in modules if m == package or m.startswith(package + ".")]


@pytest.fixture(scope="module")
def quiet_run() -> dict:
    return _run(["simulate", "--learner", "linucb", "--arms", "4", "--dim", "3", "--steps", "300",
                 "--no-checkpoint", "--json"])


@pytest.mark.parametrize("package", ["sqlalchemy", "scipy.special", "tqdm", "matplotlib", "apscheduler",
                                     "banditloop.pipeline.checkpoints", "banditloop.pipeline.checkpoint_tables"])
def test_simulate_without_checkpoints_does_not_import(quiet_run: dict, package: str) -> None:
    assert quiet_run["status"] == 0 and quiet_run["summary"]["steps"] == 300
    assert not _loaded(quiet_run["modules"], package)


def test_linucb_gets_blas_without_importing_scipy_linalg(quiet_run: dict) -> None:
    """``scipy.linalg`` imports SciPy's array-API layer (most of numpy, ~0.3 s); LinUCB loads only the
    compiled BLAS wrappers it needs."""
    modules = quiet_run["modules"]
    assert "scipy.linalg._fblas" in modules
    assert "scipy.linalg" not in modules and "numpy.f2py" not in modules and "numpy.ma" not in modules


def test_the_blas_module_loaded_directly_is_the_one_scipy_linalg_uses() -> None:
    code = ("import banditloop.operators.linucb as lin, scipy.linalg.blas as blas; "
            "print(lin._dger is blas.dger, blas._fblas is __import__('sys').modules['scipy.linalg._fblas'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_a_lognormal_delay_world_still_runs_without_scipy_at_start_up() -> None:
    """SciPy's ``ndtri`` is imported where the lognormal delays are drawn, not when the world module is."""
    result = _run(["simulate", "--learner", "diag-linucb", "--arms", "3", "--dim", "2", "--steps", "200",
                   "--no-checkpoint", "--json", "--world", "conversion_delay=lognormal"])
    assert result["status"] == 0 and result["summary"]["steps"] == 200
    assert "scipy.special" in result["modules"]
