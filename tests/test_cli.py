import json
import os
import subprocess
import sys

import pytest


def banditloop(*args, cwd, check=True):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "banditloop.cli", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def test_simulate_replay_models_with_embedded_sqlite_default(tmp_path):
    sim = json.loads(banditloop("simulate", "--policy", "diag-linucb", "--arms", "5", "--dim", "4",
                                "--steps", "2000", "--seed", "1", "--out", "log.jsonl.gz", "--json",
                                cwd=tmp_path).stdout)
    assert (tmp_path / "banditloop.db").exists(), "default checkpoint DB is SQLite in the current directory"
    assert sim["version"] == 1 and sim["impressions"] == 2000
    assert {"regret", "oracle_reward_per_step", "random_reward_per_step"} <= set(sim)
    rep = json.loads(banditloop("replay", "log.jsonl.gz", "--learner", "ts", "--model", "from-log", "--json",
                                cwd=tmp_path).stdout)
    assert rep["impressions"] == 2000 and rep["clicks"] == sim["clicks"] and rep["invalid"] == 0
    models = json.loads(banditloop("models", "--json", cwd=tmp_path).stdout)["models"]
    assert {(m["model"], m["learner"]) for m in models} == {("diag-linucb", "diag-linucb"), ("from-log", "ts")}
    human = banditloop("models", cwd=tmp_path).stdout
    assert "from-log" in human and "impressions" in human


def test_replay_reports_invalid_lines_and_strict_fails(tmp_path):
    (tmp_path / "bad.jsonl").write_text(
        '{"type":"impression","event_id":"e","ts":1,"impression_id":"i","arm":"a","context":{}}\nnope\n')
    out = json.loads(banditloop("replay", "bad.jsonl", "--learner", "ucb1", "--json", cwd=tmp_path).stdout)
    assert out["invalid"] == 1 and out["first_errors"][0].startswith("line 2: not JSON")
    strict = banditloop("replay", "bad.jsonl", "--learner", "ucb1", "--strict", cwd=tmp_path, check=False)
    assert strict.returncode == 2 and "bad.jsonl:2" in strict.stderr


@pytest.mark.parametrize("args, message", [
    (["replay", "missing.jsonl", "--learner", "linucb"], "no such log"),
    (["simulate", "--policy", "linucb", "--param", "alpha"], "KEY=VALUE"),
    (["simulate", "--policy", "linucb", "--param", "nonsense=1"], "bad --param"),
    (["simulate", "--policy", "linucb", "--world", "base_ctr=3"], "world"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, args, message):
    proc = banditloop(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_learners_lists_every_cli_name(tmp_path):
    out = banditloop("learners", cwd=tmp_path).stdout
    assert "unavailable" not in out
    for name in ("random", "egreedy", "ucb1", "ts", "linucb", "hybrid-linucb", "diag-linucb", "lints", "ctr-lr"):
        assert name in out
