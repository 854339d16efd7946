import numpy as np
import pytest
from sqlalchemy import update

from banditloop.core.features import FeatureSpec, dense_names
from banditloop.pipeline.checkpoints import CheckpointStore, checkpoints_table
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import LearningRun
from banditloop.pipeline.simulate import SimulationOptions, simulate
from banditloop.serving.scorer import Scorer
from banditloop.serving.served import NoModel
from banditloop.simulators.world import WorldConfig

DIM = 4
CONTEXT = {"x0": 0.3, "x1": -1.0, "x2": 0.5, "x3": 2.0}


def config(learner="linucb"):
    return ModelConfig(learner=learner, features=FeatureSpec(dim=DIM + 1, numeric=dense_names("x", DIM)))


@pytest.fixture
def store(tmp_path):
    s = CheckpointStore(f"sqlite:///{tmp_path / 's.db'}")
    yield s
    s.close()


def train(store, model="m", steps=1500, seed=0, learner="linucb", out=None):
    return simulate(WorldConfig(arms=6, dim=DIM, seed=seed), config(learner), model, store,
                    SimulationOptions(steps=steps, quiet=True, out=out))


def test_no_checkpoint_means_no_model(store):
    scorer = Scorer(store, "absent")
    assert scorer.reload() is False
    with pytest.raises(NoModel):
        scorer.choose(CONTEXT)


def test_scores_match_the_trained_learner_and_pick_the_argmax(store):
    train(store)
    scorer = Scorer(store, "m")
    assert scorer.reload() and scorer.version == 1
    learner = scorer.served.learner
    result = scorer.choose(CONTEXT, k=3)
    x = scorer.served.vectorizer.x(CONTEXT)
    expected = learner.score(x, learner.arms)
    assert result.scores == pytest.approx(dict(zip(learner.arms, expected, strict=True)))
    assert result.arm == learner.arms[int(np.argmax(expected))] and result.propensity == 1.0
    assert len(result.ranking) == 3 and result.ranking[0] == result.arm


def test_hot_reload_swaps_to_newer_versions_only(store):
    train(store, seed=0)
    scorer = Scorer(store, "m")
    scorer.reload()
    before = scorer.choose(CONTEXT).scores
    assert scorer.reload() is False  # nothing new
    train(store, seed=1)
    assert scorer.reload() is True and scorer.version == 2
    assert scorer.choose(CONTEXT).scores != before


def test_corrupt_checkpoint_is_refused_and_the_old_model_keeps_serving(store):
    train(store)
    scorer = Scorer(store, "m")
    scorer.reload()
    served = scorer.choose(CONTEXT).scores
    train(store, seed=5)
    with store.engine.begin() as session:
        session.execute(update(checkpoints_table).where(checkpoints_table.c.version == 2)
                        .values(state_arrays=b"garbage"))
    assert scorer.reload() is False and scorer.refused == 1 and "version 2" in scorer.last_error
    assert scorer.version == 1 and scorer.choose(CONTEXT).scores == served


def test_incompatible_learner_is_refused(store):
    train(store)
    scorer = Scorer(store, "m")
    scorer.reload()
    train(store, learner="diag-linucb", steps=200)
    assert scorer.reload() is False and "incompatible" in scorer.last_error


def test_serves_the_merge_of_shards(store, tmp_path):
    log = tmp_path / "log.jsonl"
    train(store, model="whole", out=log)
    from banditloop.pipeline.logs import load_log

    events = load_log(log).events
    shards = [LearningRun(config(), "sharded", shard=f"p{i}") for i in range(2)]
    for ev in events:  # partition by impression id, as Kafka keys do
        shards[hash(ev.impression_id) % 2].process(ev)
    store.save_many([run.snapshot({"kind": "test"}) for run in shards])
    whole, sharded = Scorer(store, "whole"), Scorer(store, "sharded")
    whole.reload()
    sharded.reload()
    assert sharded.served.shards == ("p0", "p1")
    assert sharded.choose(CONTEXT).scores == pytest.approx(whole.choose(CONTEXT).scores, rel=1e-9)


def test_arms_seen_only_in_requests_do_not_grow_without_bound(store):
    train(store)
    scorer = Scorer(store, "m", max_new_arms=50)
    scorer.reload()
    for i in range(300):
        scorer.choose(CONTEXT, candidates=[f"new-{i}", "a0"])
    assert len(scorer.served.learner.arms) <= 6 + 50 + 2
