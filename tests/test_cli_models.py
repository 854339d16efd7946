"""Models are protected from accidental overwrites; retention is a policy; the listing commands."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from banditloop.operators.linucb import LinUCB
from banditloop.pipeline.checkpoints import Checkpoint, CheckpointStore
from tests.test_cli_errors import assert_one_line_error, banditloop, env

SIM = ["--arms", "4", "--dim", "3", "--steps", "600", "--seed", "1"]
FEATURES = ["--dim", "4", "--numeric", "x0,x1,x2"]


def run_json(*args: str, cwd: Path) -> dict:
    proc = banditloop(*args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """Two logs, ``b.jsonl`` a week after ``a.jsonl``, and an empty one."""
    root = tmp_path_factory.mktemp("logs")
    run_json("simulate", "--policy", "linucb", *SIM, "--out", "a.jsonl", "--no-checkpoint", cwd=root)
    run_json("simulate", "--policy", "linucb", *SIM[:-1], "2", "--world", "start_ts=1767830400",  # a week later
             "--out", "b.jsonl", "--no-checkpoint", cwd=root)
    (root / "empty.jsonl").write_text("")
    return root


@pytest.fixture
def db(tmp_path: Path, logs: Path) -> Path:
    for name in ("a.jsonl", "b.jsonl", "empty.jsonl"):
        (tmp_path / name).write_bytes((logs / name).read_bytes())
    return tmp_path


def versions(cwd: Path, model: str) -> list[int]:
    store = CheckpointStore(f"sqlite:///{cwd / 'banditloop.db'}")
    try:
        return [v for v, _, _ in store.versions(model)]
    finally:
        store.close()


def test_empty_log_writes_no_version_and_warns(db):
    first = run_json("replay", "a.jsonl", "--learner", "linucb", *FEATURES, cwd=db)
    assert first["version"] == 1
    proc = banditloop("replay", "empty.jsonl", "--learner", "linucb", "--model", "other", cwd=db)
    assert proc.returncode == 0 and "no events to learn; no version written" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert versions(db, "other") == []


def test_the_issue_case_is_refused_and_the_model_kept(db):
    run_json("simulate", "--policy", "diag-linucb", *SIM, cwd=db)  # the trained diag-linucb model
    proc = banditloop("replay", "empty.jsonl", "--learner", "diag-linucb", cwd=db)
    assert_one_line_error(proc, "model 'diag-linucb'", "--force")
    assert versions(db, "diag-linucb") == [1]


def test_another_source_learner_or_configuration_is_refused(db):
    run_json("replay", "a.jsonl", "--learner", "linucb", *FEATURES, cwd=db)
    for args, needle in ((["b.jsonl", "--learner", "linucb", *FEATURES], "this run learns from"),
                         (["a.jsonl", "--learner", "ts", *FEATURES], "with learner ts"),
                         (["a.jsonl", "--learner", "linucb", "--dim", "8"], "another configuration")):
        assert_one_line_error(banditloop("replay", *args, "--model", "linucb", cwd=db), needle, "--resume", "--force")
    assert_one_line_error(banditloop("simulate", "--policy", "linucb", *SIM, "--seed", "9", cwd=db),
                          "written by replay of", "--force")
    assert versions(db, "linucb") == [1]
    # the same log with the same options rebuilds it: allowed
    assert run_json("replay", "a.jsonl", "--learner", "linucb", *FEATURES, cwd=db)["version"] == 2


def test_resume_continues_with_another_log(db):
    a = run_json("replay", "a.jsonl", "--learner", "linucb", *FEATURES, cwd=db)
    b = run_json("replay", "b.jsonl", "--learner", "linucb", *FEATURES, "--resume", cwd=db)
    assert b["version"] == 2 and b["resumed_from_event"] == 0
    assert b["impressions"] == 2 * a["impressions"] and b["late"] == 0  # learned on top of the stored model
    again = banditloop("replay", "b.jsonl", "--learner", "linucb", *FEATURES, "--resume", cwd=db)
    assert again.returncode == 0 and "nothing new in b.jsonl since version 2" in again.stderr
    assert versions(db, "linucb") == [1, 2]


def test_force_replaces_the_model_atomically(db):
    run_json("replay", "a.jsonl", "--learner", "linucb", *FEATURES, cwd=db)
    run_json("replay", "a.jsonl", "--learner", "linucb", *FEATURES, cwd=db)
    out = run_json("replay", "b.jsonl", "--learner", "ts", "--model", "linucb", "--force", cwd=db)
    assert out["version"] == 3 and versions(db, "linucb") == [3]  # versions keep increasing
    models = run_json("models", cwd=db)["models"]
    assert [(m["model"], m["learner"], m["versions"]) for m in models] == [("linucb", "ts", 1)]


def test_resume_and_force_exclude_each_other(db):
    proc = banditloop("replay", "a.jsonl", "--learner", "ts", "--resume", "--force", cwd=db)
    assert_one_line_error(proc, "exclude each other")


def test_no_checkpoint_prints_no_version(db):
    proc = banditloop("simulate", "--policy", "ts", *SIM, "--no-checkpoint", cwd=db)
    assert proc.returncode == 0
    assert not [line for line in proc.stdout.splitlines() if line.split()[0] in ("version", "db")]


# -- retention ---------------------------------------------------------------------------------------
def trained_state():
    learner = LinUCB(3)
    learner.learn_one("a", np.array([1.0, 0.0, 0.5]), 1.0)
    return learner.export_state()


def test_retention_keeps_n_and_join_state_only_on_the_newest_two(tmp_path):
    store = CheckpointStore(f"sqlite:///{tmp_path / 'r.db'}", keep=3)
    state = trained_state()
    for i in range(5):
        for shard in ("p0", "p1"):
            store.save(Checkpoint(model="m", shard=shard, config={}, state=state, join_state=b"{}" * (i + 1)))
    rows = store.versions("m")
    assert [v for v, s, _ in rows if s == "p0"] == [5, 7, 9] and [v for v, s, _ in rows if s == "p1"] == [6, 8, 10]
    from sqlalchemy import select

    from banditloop.pipeline.checkpoints import checkpoints_table

    with store.engine.connect() as session:
        joins = dict(session.execute(select(checkpoints_table.c.version, checkpoints_table.c.join_state)
                                     .where(checkpoints_table.c.model == "m")).all())
    assert {v for v, j in joins.items() if j is not None} == {7, 8, 9, 10}  # newest two per shard
    assert store.latest("m", "p0").join_state == b"{}" * 5  # what a restart resumes from is intact
    assert store.prune(keep=1) == {"m": 4}
    assert [v for v, _, _ in store.versions("m")] == [9, 10]
    store.close()


def test_models_prune_command(db):
    for _ in range(3):
        run_json("replay", "a.jsonl", "--learner", "linucb", *FEATURES, cwd=db)
    out = run_json("models", "--prune", "--keep", "1", cwd=db)
    assert out["pruned"] == {"linucb": 2}
    assert [(m["latest_version"], m["versions"]) for m in out["models"]] == [(3, 1)]
    assert_one_line_error(banditloop("models", "--prune", "--model", "nope", cwd=db), "no model 'nope'")
    human = banditloop("models", cwd=db).stdout.splitlines()[0].split()
    assert "versions" in human and "kept" not in human  # the same word as --json


def test_keep_option_is_used_by_writes(db):
    for _ in range(3):
        run_json("replay", "a.jsonl", "--learner", "linucb", *FEATURES, "--keep", "2", cwd=db)
    assert versions(db, "linucb") == [2, 3]


# -- listing, help, start-up imports -----------------------------------------------------------------
def test_learners_json_agrees_with_the_classes(tmp_path):
    from banditloop.operators.registry import LEARNERS, learner_class

    listed = {item["name"]: item for item in run_json("learners", cwd=tmp_path)["learners"]}
    assert list(listed) == list(LEARNERS)
    for name, item in listed.items():
        cls = learner_class(name)
        params = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name not in ("self", "dim") and p.default is not inspect.Parameter.empty}
        assert item["params"] == params, name
        assert item["cls"] == cls.__name__ and item["description"]
    # the whole first paragraph of the class docstring, not cut off
    assert listed["lints"]["description"] == ("Linear Thompson sampling (Agrawal & Goyal 2013): one draw of "
                                              "``θ_a ~ N(μ_a, v²A_a⁻¹)`` per arm.")


def test_version_and_defaults_in_help(tmp_path):
    from banditloop import __version__

    assert banditloop("--version", cwd=tmp_path).stdout.strip() == f"banditloop {__version__}"
    text = banditloop("simulate", "--help", cwd=tmp_path).stdout
    for fragment in ("(default: 10)", "(default: 10000)", "(default: click)", "(default: 20)"):
        assert fragment in " ".join(text.split()), fragment
    assert "default: clicks" in banditloop("produce", "--help", cwd=tmp_path).stdout  # options without help too


@pytest.mark.parametrize("argv, forbidden", [
    (["--help"], ("numpy", "sqlalchemy", "kafka", "river", "scipy", "matplotlib", "msgspec")),
    (["models"], ("numpy", "kafka", "river", "scipy", "matplotlib")),
    (["learners"], ("kafka", "river", "scipy", "matplotlib", "sqlalchemy")),
    (["replay", "--help"], ("kafka", "river", "scipy", "matplotlib", "sqlalchemy")),
])
def test_start_up_imports_only_what_the_command_uses(tmp_path, argv, forbidden):
    code = ("import sys\nfrom banditloop.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=60)
    loaded = set(proc.stdout.splitlines()[-1].split())
    assert not loaded & set(forbidden), loaded & set(forbidden)


def test_learners_source_reader_handles_every_registered_module():
    from banditloop.commands.learners import _from_source
    from banditloop.operators.registry import LEARNERS

    for target in LEARNERS.values():
        module, cls = target.split(":")
        assert _from_source(module, cls) is not None, target  # no silent fall-back to importing


def test_models_json_shows_each_shards_event_time_and_a_poisoned_one(tmp_path):
    import time

    store = CheckpointStore(f"sqlite:///{tmp_path / 'models.db'}")
    now = time.time()
    for shard, newest in (("p0", now - 60.0), ("p1", now + 86_400.0)):  # p1 learned an event dated tomorrow
        store.save(Checkpoint(model="live", shard=shard, config={}, state=trained_state(),
                              source={"kind": "kafka", "offsets": {"clicks": 3},
                                      "max_ts": {"impressions": now - 120.0, "clicks": newest}}))
    store.close()
    (row,) = run_json("models", "--db", f"sqlite:///{tmp_path / 'models.db'}", cwd=tmp_path)["models"]
    shards = {s["shard"]: s for s in row["event_time"]}
    assert shards["p0"]["ahead_seconds"] == 0 and shards["p0"]["newest"] == pytest.approx(now - 60.0)
    assert 86_000 < shards["p1"]["ahead_seconds"] < 86_500
    assert set(shards["p1"]["max_ts"]) == {"impressions", "clicks"}
