"""Learner names as used on the command line, and construction from names or stored states."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from banditloop.operators.base import Learner, LearnerState

#: CLI name -> "module:Class". Imported lazily so that ``banditloop --help`` stays fast.
LEARNERS: dict[str, str] = {
    "random": "banditloop.operators.uniform_random:UniformRandom",
    "egreedy": "banditloop.operators.epsilon_greedy:EpsilonGreedy",
    "ucb1": "banditloop.operators.ucb1:UCB1",
    "kl-ucb": "banditloop.operators.kl_ucb:KLUCB",
    "discounted-ucb": "banditloop.operators.ucb1:DiscountedUCB",
    "ts": "banditloop.operators.beta_ts:BetaTS",
    "discounted-ts": "banditloop.operators.beta_ts:DiscountedBetaTS",
    "linucb": "banditloop.operators.linucb:LinUCB",
    "discounted-linucb": "banditloop.operators.discounted_linucb:DiscountedLinUCB",
    "hybrid-linucb": "banditloop.operators.hybrid_linucb:HybridLinUCB",
    "diag-linucb": "banditloop.operators.diag_linucb:DiagLinUCB",
    "lints": "banditloop.operators.lin_ts:LinearTS",
    "logistic-ts": "banditloop.operators.logistic_ts:LogisticTS",
    "glm-ucb": "banditloop.operators.glm_ucb:GLMUCB",
    "ctr-lr": "banditloop.operators.ctr_lr:CTRLogisticRegression",
    "ctr-ftrl": "banditloop.operators.ctr_ftrl:CTRFTRL",
    "dfm": "banditloop.operators.dfm:DelayedFeedbackModel",
    "esmm": "banditloop.operators.esmm:ESMM",
    "vw-cb": "banditloop.operators.vw_cb:VWContextualBandit",
    "vw-ctr": "banditloop.operators.vw_ctr:VWLogisticCTR",
}


def learner_class(name: str) -> type[Learner]:
    try:
        target = LEARNERS[name]
    except KeyError:
        raise ValueError(f"unknown learner {name!r}; choose from {', '.join(LEARNERS)}") from None
    module, cls = target.split(":")
    return getattr(import_module(module), cls)


def learners_with(capability: str) -> list[str]:
    """Names of the learners whose class sets the boolean ``capability`` (imports every learner)."""
    return [name for name in LEARNERS if getattr(learner_class(name), capability)]


def make_learner(name: str, dim: int, **params: Any) -> Learner:
    return learner_class(name)(dim=dim, **params)


def learner_from_state(state: LearnerState) -> Learner:
    return learner_class(state.kind).from_state(state)
