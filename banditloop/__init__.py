"""banditloop: streaming online learning for ads and recommendations.

The public Python API. Names are imported on first use, so ``import banditloop`` (and the
command line, which lives in this package) stays fast.

>>> from banditloop import FeatureSpec, Featurizer, LinUCB
>>> featurizer = Featurizer(FeatureSpec(dim=8, numeric=("age",)))
>>> learner = LinUCB(dim=8, alpha=0.2, seed=0)
>>> x = featurizer.transform({"age": 0.3, "country": "fr"})
>>> learner.learn_one("ad-1", x, 1.0)
>>> learner.learn_one("ad-2", x, 0.0)
>>> learner.choose(x, ["ad-1", "ad-2"]).arm
'ad-1'
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # vocabulary
    "Impression": "banditloop.core.events",
    "Click": "banditloop.core.events",
    "Conversion": "banditloop.core.events",
    "InvalidEvent": "banditloop.core.events",
    "decode_event": "banditloop.core.events",
    "encode_event": "banditloop.core.events",
    "RewardSpec": "banditloop.core.reward",
    "FeatureSpec": "banditloop.core.features",
    "Featurizer": "banditloop.core.features",
    "LearnerState": "banditloop.core.state_codec",
    # learners
    "Learner": "banditloop.operators.base",
    "Decision": "banditloop.operators.decision",
    "UniformRandom": "banditloop.operators.uniform_random",
    "EpsilonGreedy": "banditloop.operators.epsilon_greedy",
    "UCB1": "banditloop.operators.ucb1",
    "BetaTS": "banditloop.operators.beta_ts",
    "LinUCB": "banditloop.operators.linucb",
    "HybridLinUCB": "banditloop.operators.hybrid_linucb",
    "DiagLinUCB": "banditloop.operators.diag_linucb",
    "LinearTS": "banditloop.operators.lin_ts",
    "CTRLogisticRegression": "banditloop.operators.ctr_lr",
    "KLUCB": "banditloop.operators.kl_ucb",
    "LogisticTS": "banditloop.operators.logistic_ts",
    "GLMUCB": "banditloop.operators.glm_ucb",
    "DiscountedBetaTS": "banditloop.operators.beta_ts",
    "DiscountedUCB": "banditloop.operators.ucb1",
    "DiscountedLinUCB": "banditloop.operators.discounted_linucb",
    "VWContextualBandit": "banditloop.operators.vw_cb",
    "VWLogisticCTR": "banditloop.operators.vw_ctr",
    "CTRFTRL": "banditloop.operators.ctr_ftrl",
    "LEARNERS": "banditloop.operators.registry",
    "make_learner": "banditloop.operators.registry",
    "learner_from_state": "banditloop.operators.registry",
    # simulated worlds
    "World": "banditloop.simulators.world",
    "WorldConfig": "banditloop.simulators.config",
    # the stream pipeline
    "JoinConfig": "banditloop.pipeline.join",
    "LearningRun": "banditloop.pipeline.runner",
    "EventJoin": "banditloop.pipeline.join",
    "ModelConfig": "banditloop.pipeline.model",
    "CheckpointStore": "banditloop.pipeline.checkpoints",
    "replay_log": "banditloop.pipeline.replay",
    "simulate": "banditloop.pipeline.simulate",
    # serving
    "Scorer": "banditloop.serving.scorer",
    "ScoreResult": "banditloop.serving.served",
}

__all__ = sorted(_EXPORTS)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("banditloop")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read from the installed metadata on first use (importlib.metadata is slow)
        globals()[name] = value = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'banditloop' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from banditloop.core.events import Click, Conversion, Impression, InvalidEvent, decode_event, encode_event
    from banditloop.core.features import FeatureSpec, Featurizer
    from banditloop.core.reward import RewardSpec
    from banditloop.core.state_codec import LearnerState
    from banditloop.operators.base import Learner
    from banditloop.operators.beta_ts import BetaTS, DiscountedBetaTS
    from banditloop.operators.ctr_ftrl import CTRFTRL
    from banditloop.operators.ctr_lr import CTRLogisticRegression
    from banditloop.operators.decision import Decision
    from banditloop.operators.diag_linucb import DiagLinUCB
    from banditloop.operators.discounted_linucb import DiscountedLinUCB
    from banditloop.operators.epsilon_greedy import EpsilonGreedy
    from banditloop.operators.glm_ucb import GLMUCB
    from banditloop.operators.hybrid_linucb import HybridLinUCB
    from banditloop.operators.kl_ucb import KLUCB
    from banditloop.operators.lin_ts import LinearTS
    from banditloop.operators.linucb import LinUCB
    from banditloop.operators.logistic_ts import LogisticTS
    from banditloop.operators.registry import LEARNERS, learner_from_state, make_learner
    from banditloop.operators.ucb1 import UCB1, DiscountedUCB
    from banditloop.operators.uniform_random import UniformRandom
    from banditloop.operators.vw_cb import VWContextualBandit
    from banditloop.operators.vw_ctr import VWLogisticCTR
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.join import EventJoin, JoinConfig
    from banditloop.pipeline.model import ModelConfig
    from banditloop.pipeline.replay import replay_log
    from banditloop.pipeline.runner import LearningRun
    from banditloop.pipeline.simulate import simulate
    from banditloop.serving.scorer import Scorer
    from banditloop.serving.served import ScoreResult
    from banditloop.simulators.config import WorldConfig
    from banditloop.simulators.world import World
