"""pCTR, pCVR and expected value per impression at the scorer, and ranking by expected value.

What a model predicts (``reward`` is the model's reward kind, from its configuration):

=====================================  ==============  ==============  ==============================
model                                  ``pctr``        ``pcvr``        ``expected_value``
=====================================  ==============  ==============  ==============================
``esmm`` (any reward)                  its pCTR head   pCTCVR / pCTR   pCTR × pCVR × value (= pCTCVR × value)
``ctr-lr``, ``ctr-ftrl``, ``vw-ctr``   ``ctr``         absent          pCTR × value (value per click, a CPC bid)
with reward ``click``
``dfm``                                absent          ``cvr``         absent (no pCTR: value per click only)
anything else                          absent          absent          absent
=====================================  ==============  ==============  ==============================

(a click model taught a conversion reward predicts conversions per impression, not clicks: absent too).
``value`` is the candidate's value given in the request (``values``), 1 when not given.

**Ranking by expected value** (``rank_by="expected_value"``): the chosen arm is the argmax of the
expected value over the eligible candidates, ties split evenly; a model with ε-greedy exploration
(``exploration="egreedy"``, ``ctr-lr`` and ``ctr-ftrl`` by default) explores the same way, uniformly
with probability ε (its own ε), so the propensity is exact:
``(1 − ε)/T + ε/K`` for one of ``T`` tied best of ``K`` candidates, ``ε/K`` for the others. Other
exploration (softmax, Thompson sampling) is not applied to values: greedy. The learner's own random
generator draws, so a served model stays reproducible per seed. ``scores`` are then the expected
values, and the rest of a slate follows them in decreasing order.

>>> import numpy as np
>>> from banditloop.operators.registry import make_learner
>>> model = make_learner("ctr-ftrl", 1, epsilon=0.0)
>>> x = np.array([1.0])
>>> predictions(model, "click", "a", x, 2.0).expected_value == 2.0 * model.ctr("a", x)
True
>>> rank_by_value(model, "click", x, ["a", "b"], {"a": 1.0, "b": 3.0}).arm      # same pCTR, b worth more
'b'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from banditloop.operators.base import Learner
from banditloop.operators.decision import Decision
from banditloop.operators.predictions import reward_probability

RANK_BY = ("model", "expected_value")


@dataclass(frozen=True)
class Predictions:
    """What the model predicts for one shown arm: each None when the model does not predict it (see the
    module docstring); ``p_reward`` is its probability of the model's own reward (click or conversion,
    as ``simulate`` calibrates it), for the calibration gauge."""

    pctr: float | None = None
    pcvr: float | None = None
    expected_value: float | None = None
    p_reward: float | None = None


def _has(learner: Learner, name: str) -> bool:
    return callable(getattr(learner, name, None))


def predicts_value(learner: Learner, reward_kind: str) -> bool:
    """True when the model gives an expected value per impression (pCTR, and pCVR for conversions)."""
    return _has(learner, "ctcvr") or (reward_kind == "click" and _has(learner, "ctr"))


def predictions(learner: Learner, reward_kind: str, arm: str, x: np.ndarray, value: float = 1.0) -> Predictions:
    """pCTR, pCVR, expected value and probability of the reward of ``arm`` in context ``x``."""
    entire_space = _has(learner, "ctcvr")
    pctr = learner.ctr(arm, x) if entire_space or (reward_kind == "click" and _has(learner, "ctr")) else None  # type: ignore[attr-defined]
    pcvr = learner.cvr(arm, x) if _has(learner, "cvr") else None  # type: ignore[attr-defined]
    ev = None
    if pctr is not None:
        ev = pctr * (pcvr if entire_space and pcvr is not None else 1.0) * float(value)
    predict = reward_probability(learner, reward_kind)
    return Predictions(pctr=pctr, pcvr=pcvr, expected_value=ev,
                       p_reward=None if predict is None else float(predict(arm, x)))


def expected_values(learner: Learner, reward_kind: str, x: np.ndarray, candidates: Sequence[str],
                    values: Mapping[str, float] | None = None) -> np.ndarray:
    """The expected value of every candidate, in candidate order."""
    values = values or {}
    # pCTR × pCVR = pCTCVR for esmm, one call per candidate either way
    per_impression = getattr(learner, "ctcvr", None) or learner.ctr  # type: ignore[attr-defined]
    return np.array([per_impression(arm, x) * float(values.get(arm, 1.0)) for arm in candidates])


def rank_by_value(learner: Learner, reward_kind: str, x: np.ndarray, candidates: Sequence[str],
                  values: Mapping[str, float] | None = None) -> Decision:
    """The decision of ranking by expected value (see the module docstring); ``ValueError`` for a model
    that predicts no expected value."""
    if not predicts_value(learner, reward_kind):
        raise ValueError(f"rank_by: model {learner.kind} (reward {reward_kind}) predicts no expected value "
                         "(needs esmm, or ctr-lr, ctr-ftrl or vw-ctr with a click reward)")
    ev = expected_values(learner, reward_kind, x, candidates, values)
    k = len(candidates)
    best = ev == ev.max()
    epsilon = float(getattr(learner, "epsilon", 0.0)) if getattr(learner, "exploration", None) == "egreedy" else 0.0
    probs = (1.0 - epsilon) * best / best.sum() + epsilon / k
    pick = int(learner.rng.choice(k, p=probs / probs.sum())) if epsilon > 0 or best.sum() > 1 else int(ev.argmax())
    return Decision(candidates[pick], float(probs[pick]), list(candidates), ev,
                    probabilities=probs if epsilon > 0 or best.sum() > 1 else None)
