"""``banditloop demo`` end to end, as a real subprocess: broker, consumer, scorer, simulated users.

The demo starts its own broker (it must own the broker's lifetime), so these tests do not use the
session broker fixture; like the other Kafka tests they are skipped when the Tansu binary is missing
(and fail instead under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from banditloop.demo.plot import rolling_ratio
from banditloop.pipeline.broker import BrokerError, find_tansu_binary
from banditloop.pipeline.checkpoints import CheckpointStore

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _tansu() -> None:
    try:
        find_tansu_binary()
    except BrokerError as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"no Tansu broker binary: {exc}")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITLOOP_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "banditloop.cli", "demo", "--db", f"sqlite:///{tmp_path / 'demo.db'}",
         "--out", str(tmp_path / "out"), "--json", *extra],
        cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; it only waits for its parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _assert_no_orphans(summary: dict) -> None:
    pids = summary["pids"]
    assert set(pids) == {"broker", "consume", "serve"}
    assert all(isinstance(p, int) and p > 0 for p in pids.values())
    assert summary["orphans"] == []
    for name, pid in pids.items():
        assert not _pid_alive(pid), f"{name} (pid {pid}) is still running"
        assert not _group_alive(pid), f"a process of {name}'s group (pgid {pid}) is still running"


def _kill_leftovers(proc: subprocess.Popen[str]) -> None:
    """If a test fails half-way, take the demo's whole session down with it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_short_demo_learns_reloads_plots_and_leaves_nothing_behind(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--seconds", "15", "--rate", "60", "--seed", "3")
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        _kill_leftovers(proc)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])

    # the plot: a real PNG of some substance
    png = Path(summary["plot"]) if Path(summary["plot"]).is_absolute() else tmp_path / summary["plot"]
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 20_000
    written = json.loads((tmp_path / "out" / "demo-summary.json").read_text())
    assert written["requests"] == summary["requests"]

    # the load happened and was answered
    assert summary["interrupted"] is False
    assert summary["requests"] >= 15 * 60 * 0.7
    assert summary["request_errors"] == {}
    assert summary["clicks_sent"] > 0
    assert summary["feedback_errors"] == {}

    # regret is exact and consistent: the oracle is best, random is worse than what was served
    assert 0.0 < summary["ctr_random"] < summary["ctr_oracle"] <= 1.0
    assert summary["ctr_served"] > summary["ctr_random"]
    assert 0.0 <= summary["regret"] < summary["random_regret"]

    # the scorer reloaded models the consumer learned and checkpointed
    assert summary["versions_served"] >= 2
    assert summary["last_version_served"] > summary["initial_version"]
    learned = summary["learned"]
    assert learned["impressions"] == summary["requests"]  # the consumer caught up before it stopped
    assert learned["clicks"] == summary["clicks_sent"]
    assert learned["unmatched"] == 0 and learned["late"] == 0
    assert summary["exit_codes"] == {"consume": 0, "serve": 0}

    # compacted: one checkpoint per shard remains, and it holds the final model
    store = CheckpointStore(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        versions = store.versions(summary["model"])
        assert sorted(shard for _, shard, _ in versions) == ["p0", "p1"]
        assert max(v for v, _, _ in versions) == summary["kept_version"]
    finally:
        store.close()

    _assert_no_orphans(summary)


def test_sigint_mid_run_stops_cleanly(tmp_path: Path) -> None:
    proc = _start(tmp_path, "--seconds", "120", "--rate", "40")
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line or line.startswith("banditloop demo: broker"):
                break
        assert line.startswith("banditloop demo: broker"), f"demo did not start: {line!r}"
        time.sleep(4)  # mid-run: requests flowing, models reloading
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does (the foreground group)
        stdout, stderr = proc.communicate(timeout=120)
        stop_seconds = time.monotonic() - started
    finally:
        _kill_leftovers(proc)
    assert proc.returncode == 0, stderr[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted"] is True
    assert 0 < summary["requests"] < 120 * 40 / 2
    assert stop_seconds < 60
    assert (tmp_path / "out" / "demo-regret.png").read_bytes().startswith(PNG_MAGIC)
    assert summary["exit_codes"] == {"consume": 0, "serve": 0}
    # the consumer wrote its final checkpoint on the way out
    assert summary["consumer"] is not None and summary["consumer"]["checkpoints"] >= 1
    _assert_no_orphans(summary)


def test_rolling_ratio() -> None:
    values = [1.0, 2.0, 3.0, 0.0]
    counts = [1.0, 1.0, 1.0, 0.0]
    got = list(rolling_ratio(values, counts, 2))
    assert got == [1.0, 1.5, 2.5, 3.0]
    assert all(v != v for v in rolling_ratio([0.0], [0.0], 3))  # NaN while the window is empty
