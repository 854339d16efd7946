"""Replay's bounded-memory sort: the exact order of ``load_log`` in every mode, temp files removed."""

import json
import random

import pytest

from banditloop.pipeline.log_sort import sorted_log
from banditloop.pipeline.logs import StrictModeError, load_log


def _lines(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = 1000.0 + i // 3  # ties: equal times keep type order, then line order
        out.append({"type": "impression", "event_id": f"e{i}", "ts": ts, "impression_id": f"i{i}",
                    "arm": f"a{i % 4}", "context": {"x": rng.random()}, "candidates": ["a0", "a1", "a2", "a3"]})
        if i % 5 == 0:
            out.append({"type": "click", "event_id": f"c{i}", "ts": ts, "impression_id": f"i{i}"})
    return [json.dumps(o) for o in out]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("shuffle, budget, mode", [
    ("none", 10**8, "sorted"),
    ("local", 10**8, "stream"),     # swaps within a few lines: a small reorder buffer sorts it
    ("all", 10**8, "stream"),       # fits the budget: a buffer as large as the log
    ("all", 20_000, "external"),    # does not: sorted runs spilled and merged
])
def test_every_mode_gives_the_order_of_load_log(tmp_path, shuffle, budget, mode):
    lines = ["{broken", '{"type":"click","ts":5}', ""] + _lines(3000)
    rng = random.Random(1)
    if shuffle == "none":  # already in event-time order
        order = {"impression": 0, "click": 1}
        lines[3:] = sorted(lines[3:], key=lambda line: (json.loads(line)["ts"], order[json.loads(line)["type"]]))
    elif shuffle == "all":
        rng.shuffle(lines)
    elif shuffle == "local":
        for i in range(0, len(lines) - 8, 3):
            j = i + rng.randrange(8)
            lines[i], lines[j] = lines[j], lines[i]
    path = _write(tmp_path / "log.jsonl", lines)
    expected = load_log(path)
    dead = []
    with sorted_log(path, memory_budget=budget, tmpdir=tmp_path,
                    on_invalid=lambda n, raw, reason: dead.append(n)) as log:
        events = list(log)
        assert log.mode == mode
        if mode == "external":
            assert log.runs > 2 and list(tmp_path.glob("banditloop-sort-*"))
    assert events == expected.events
    assert (log.events, log.invalid, log.lines) == (len(expected.events), expected.invalid, expected.lines)
    assert sorted(log.errors) == sorted(expected.errors) and len(dead) == expected.invalid == 2
    assert not list(tmp_path.glob("banditloop-sort-*"))  # spilled runs removed


def test_spilled_runs_are_removed_when_learning_fails(tmp_path):
    lines = _lines(500)
    random.Random(2).shuffle(lines)
    path = _write(tmp_path / "log.jsonl", lines)
    with pytest.raises(KeyboardInterrupt), sorted_log(path, memory_budget=20_000, tmpdir=tmp_path) as log:
        for i, _ in enumerate(log):
            if i == 100:
                raise KeyboardInterrupt
    assert log.mode == "external" and not list(tmp_path.glob("banditloop-sort-*"))


def test_strict_fails_before_any_event(tmp_path):
    path = _write(tmp_path / "log.jsonl", _lines(10) + ['{"type":"click"}'])
    with pytest.raises(StrictModeError, match=":13: "), sorted_log(path, strict=True):
        pass


@pytest.mark.parametrize("learner", ["linucb", "ts"])
def test_replay_in_bounded_memory_learns_the_same_parameters(tmp_path, learner):
    from banditloop.core.features import FeatureSpec
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.model import ModelConfig
    from banditloop.pipeline.replay import ReplayOptions, replay_log
    from tests.helpers import assert_states_equal

    lines = _lines(2000)
    random.Random(3).shuffle(lines)
    path = _write(tmp_path / "log.jsonl", lines)
    store = CheckpointStore(f"sqlite:///{tmp_path / 'm.db'}")
    config = ModelConfig(learner, features=FeatureSpec(dim=4))
    whole = replay_log(path, config, "whole", store, ReplayOptions(quiet=True))
    bounded = replay_log(path, config, "bounded", store, ReplayOptions(quiet=True, memory_budget=20_000,
                                                                       tmpdir=tmp_path))
    assert bounded["sort"]["mode"] == "external" and whole["sort"]["mode"] == "stream"
    assert {k: v for k, v in bounded.items() if k not in ("model", "sort") and "second" not in k} == \
        {k: v for k, v in whole.items() if k not in ("model", "sort") and "second" not in k}
    assert_states_equal(store.latest("bounded").state, store.latest("whole").state, rtol=0, atol=0)
    store.close()


def test_cli_memory_budget_and_tmpdir(tmp_path):
    import subprocess
    import sys

    from tests.test_cli import banditloop

    lines = _lines(1500)
    random.Random(4).shuffle(lines)
    _write(tmp_path / "log.jsonl", lines)
    spill = tmp_path / "spill"
    spill.mkdir()
    out = banditloop("replay", "log.jsonl", "--learner", "ts", "--memory-budget", "0.02", "--tmpdir", str(spill),
                     "--json", "--quiet", cwd=tmp_path)
    summary = json.loads(out.stdout)
    assert summary["sort"]["mode"] == "external" and summary["events"] == 1800 and not list(spill.iterdir())
    bad = subprocess.run([sys.executable, "-m", "banditloop.cli", "replay", "log.jsonl", "--learner", "ts",
                          "--memory-budget", "0"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "memory-budget" in bad.stderr
