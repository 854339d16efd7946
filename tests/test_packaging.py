"""A non-editable install puts one package, ``banditloop``, at the top of site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_installs_one_namespace_and_nothing_generic(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("banditloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"banditloop", wheel.name.rsplit("-", 3)[0] + ".dist-info"}
    for room in ("core", "operators", "simulators", "pipeline", "serving", "commands", "demo"):
        assert f"banditloop/{room}/__init__.py" in names
    assert "banditloop/serving/http/app.py" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import importlib.util, banditloop.pipeline.join as j, banditloop\n"
             f"assert j.__file__.startswith({str(target)!r}), j.__file__\n"
             "assert banditloop.LinUCB.__module__ == 'banditloop.operators.linucb'\n"
             "for name in ('pipeline', 'operators', 'simulators', 'core', 'serving'):\n"
             "    assert importlib.util.find_spec(name) is None, name\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
