"""Checkpoints written before the house was restructured (version 0.1 at 8813bba, modules named
``pipeline``/``operators`` at the top) still load: the scorer serves them and a run resumes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from banditloop.core.events import Click, Impression
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import LearningRun
from banditloop.serving.scorer import Scorer

OLD_DB = Path(__file__).parent / "data" / "checkpoints-0.1-8813bba.db"
LEARNERS = ["random", "egreedy", "ucb1", "ts", "linucb", "hybrid-linucb", "diag-linucb", "lints", "ctr-lr"]


@pytest.fixture
def old_store(tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(OLD_DB, db)  # the current code may add tables: never touch the fixture itself
    store = CheckpointStore(f"sqlite:///{db}")
    yield store
    store.close()


@pytest.mark.parametrize("learner", LEARNERS)
def test_an_old_checkpoint_is_served_and_resumed(old_store, learner):
    cp = old_store.latest(learner)
    assert cp is not None and cp.version == 1 and cp.counters["impressions"] == 300
    scorer = Scorer(old_store, learner)
    assert scorer.reload()
    context = {f"x{i}": 0.1 * i for i in range(4)}
    result = scorer.choose(context, ["a0", "a1", "a2", "a3"])
    assert result.arm in {"a0", "a1", "a2", "a3"} and all(np.isfinite(list(result.scores.values())))
    run = LearningRun.from_checkpoint(cp, expect=ModelConfig.from_dict(cp.config))
    assert run.join.counters["impressions"] == 300
    ts = run.join.watermark + 1.0
    assert run.process(Impression(event_id="new", ts=ts, impression_id="new", arm="a1", context=context)) \
        == "impression"
    assert run.process(Click(event_id="new-c", ts=ts + 1.0, impression_id="new")) == "click"
    state = run.learner.export_state()
    assert all(np.all(np.isfinite(a)) for a in state.arrays.values())
