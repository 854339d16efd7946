"""``banditloop demo``: its parts, and end to end as a real subprocess (broker, consumer, scorer,
simulated users).

The demo starts its own broker (it must own the broker's lifetime), so the end-to-end tests do not
use the session broker fixture; like the other Kafka tests they are skipped when the Tansu binary is
missing (and fail instead under ``CI=true``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from banditloop.cli import build_parser
from banditloop.commands.common import feature_spec
from banditloop.commands.common import model_config as cli_model_config
from banditloop.core.features import FeatureSpec
from banditloop.core.reward import RewardSpec
from banditloop.demo.config import consume_argv, model_config, model_flags
from banditloop.demo.options import DEMO_WORLD, DemoError, DemoOptions
from banditloop.demo.plot import rolling_ratio
from banditloop.demo.readiness import wait_assigned
from banditloop.operators.registry import LEARNERS
from banditloop.pipeline.broker import BrokerError, find_tansu_binary
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.status import write_status
from banditloop.simulators.world import WorldConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEMO_DIR = Path(__file__).resolve().parents[1] / "banditloop" / "demo"


@pytest.fixture
def _tansu() -> None:
    """The end-to-end tests need the bundled broker."""
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


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.usefixtures("_tansu")
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


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.usefixtures("_tansu")
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


# -- the consumer's configuration ------------------------------------------------------------------


def _parsed(argv: list[str]) -> ModelConfig:
    """What ``banditloop consume`` builds from ``argv``."""
    args = build_parser(environ={}).parse_args(argv)
    return cli_model_config(args, feature_spec(args))


def _argv(config: ModelConfig, tmp_path: Path) -> list[str]:
    return consume_argv(config, model="m", bootstrap="127.0.0.1:9092", group="m-learners", db="sqlite://",
                        checkpoint_interval=1.0, ready_file=str(tmp_path / "ready.json"))


@pytest.mark.parametrize("learner", list(LEARNERS))
def test_consume_argv_parses_to_the_config_the_demo_built(learner: str, tmp_path: Path) -> None:
    options = DemoOptions(learner=learner)
    world = WorldConfig(arms=options.arms, dim=options.dim, seed=options.seed, **DEMO_WORLD)
    config = model_config(options, world)
    assert _parsed(_argv(config, tmp_path)) == config
    argv = _argv(config, tmp_path)
    assert argv[argv.index("--ready-file") + 1] == str(tmp_path / "ready.json")


def test_consume_argv_carries_params_windows_reward_and_features(tmp_path: Path) -> None:
    options = DemoOptions(learner="linucb", params={"alpha": 0.125, "ridge": 2}, dim=3)
    world = WorldConfig(arms=4, dim=3, seed=1, **{**DEMO_WORLD, "click_delay_mean": 7.3})
    config = model_config(options, world)
    assert config.learner_params == {"alpha": 0.125, "ridge": 2}  # the user's alpha over the demo's
    assert config.join.click_window == 110.0 and config.features.numeric == ("x0", "x1", "x2")
    assert _parsed(_argv(config, tmp_path)) == config
    other = dataclasses.replace(
        config, learner="hybrid-linucb", shared_features=FeatureSpec(dim=16),
        features=FeatureSpec(dim=12, numeric=("a", "b"), interactions=(("a", "c"),)),
        reward=RewardSpec(kind="click+value", weight=0.25),
        join=JoinConfig(click_window=12.5, conversion_window=99.0, allowed_lateness=0.1))
    assert _parsed(_argv(other, tmp_path)) == other


def test_model_flags_refuse_what_the_command_line_cannot_set() -> None:
    config = ModelConfig(learner="linucb", join=JoinConfig(clock_skew=1.0))
    with pytest.raises(ValueError, match="clock_skew"):
        model_flags(config)
    with pytest.raises(ValueError, match="bias"):
        model_flags(ModelConfig(learner="linucb", features=FeatureSpec(bias=False)))


def test_bad_param_is_a_demo_error() -> None:
    world = WorldConfig(arms=3, dim=2, seed=1, **DEMO_WORLD)
    with pytest.raises(DemoError, match="bad --param for linucb"):
        model_config(DemoOptions(learner="linucb", params={"nope": 1}), world)


# -- readiness ---------------------------------------------------------------------------------------


class _FakeChild:
    """What :func:`wait_assigned` looks at of a child."""

    def __init__(self, pid: int, log_path: Path) -> None:
        self.pid, self.log_path = pid, log_path
        self.proc = subprocess.CompletedProcess([], returncode=3)
        self.dead = False

    def alive(self) -> bool:
        return not self.dead

    def log_tail(self) -> str:
        return "boom"


def test_wait_assigned_reads_the_ready_file_of_its_own_child(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    child = _FakeChild(4242, tmp_path / "consume.log")
    stop = threading.Event()
    write_status(ready, {"pid": 1, "group": "g", "partitions": [0, 1], "restored": 2, "assignments": 1})
    assert wait_assigned(child, ready, 0.3, stop) is None  # an earlier run's file does not count
    write_status(ready, {"pid": 4242, "group": "g", "partitions": [], "restored": 0, "assignments": 1})
    assert wait_assigned(child, ready, 0.3, stop) is None  # nothing assigned yet
    status = {"pid": 4242, "group": "g", "partitions": [0, 1], "restored": 2, "assignments": 2}
    write_status(ready, status)
    assert wait_assigned(child, ready, 5.0, stop) == status
    child.dead = True
    ready.unlink()
    with pytest.raises(DemoError, match="consumer exited with code 3"):
        wait_assigned(child, ready, 5.0, stop)


# -- the package's shape -----------------------------------------------------------------------------


def _demo_imports() -> dict[str, set[str]]:
    """First-party modules each demo module imports (function-local and TYPE_CHECKING ones too)."""
    graph: dict[str, set[str]] = {}
    for path in sorted(DEMO_DIR.glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        graph[path.stem] = {n for n in names if n.startswith("banditloop")}
    return graph


def test_demo_parts_are_small_import_downwards_and_form_no_circle() -> None:
    graph = _demo_imports()
    for name, imports in graph.items():
        assert len((DEMO_DIR / f"{name}.py").read_text().splitlines()) < 300, name
        assert not any(m == "banditloop.cli" or m.startswith(("banditloop.commands", "banditloop.cli."))
                       for m in imports), (name, imports)
    edges = {name: {m.rsplit(".", 1)[1] for m in imports if m.startswith("banditloop.demo.")}
             for name, imports in graph.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import circle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for nxt in edges.get(name, ()):
            visit(nxt, (*path, name))
        done.add(name)

    for name in edges:
        visit(name, ())
