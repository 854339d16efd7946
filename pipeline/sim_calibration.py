"""Calibration of a simulated model against the world's known probabilities (``simulate --json``).

Which prediction is the probability of the run's binary reward:
:func:`~banditloop.operators.predictions.reward_probability`.

The truth is the world's probability of that reward for the shown arm and context: the click
probability, or click × conversion-given-click probability (selection bias included).

:func:`final_calibration` measures the *final* model on fresh contexts. It works on a copy of the run
(learner and join state) whose every open feedback window is closed, so the model has learned all the
late feedback it ever will (models that learn at the window's close, ``dfm``, ``esmm``, ``ctr-ftrl
delay=wait``, learn the last window only there); the run, its checkpoints and its log are unchanged.
Contexts are drawn like the world's (standard normal, rounded to 4 decimals) from a generator of their
own seeded by ``(world seed, 0xCA1B)``, so the run draws nothing more.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from banditloop.operators.predictions import reward_probability
from banditloop.operators.registry import learner_from_state
from banditloop.pipeline.runner import LearningRun
from banditloop.simulators.conversions import conversion_probabilities
from banditloop.simulators.world import World

#: fresh contexts of the final calibration
FRESH_CONTEXTS = 2000


def true_probabilities(world: World, x: np.ndarray, arms: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The world's click probability and conversion-given-click probability of each arm for context ``x``,
    under the parameters of the world's last request (drift included). The conversion probability is NaN
    for an arm already replaced (``churn``) in the steps the world has drawn ahead: its parameters are gone."""
    c = world.config
    click_logit = np.empty(len(arms))
    conv_logit = np.empty(len(arms))
    for i, arm in enumerate(arms):
        click_logit[i] = float(world.theta(arm) @ x + world.arm_bias(arm))
        conv_logit[i] = world.conversion_logit(x, arm)
    p_click = 1.0 / (1.0 + np.exp(-click_logit))
    return p_click, conversion_probabilities(click_logit, conv_logit, c.selection_bias)


def _closed_copy(run: LearningRun) -> LearningRun:
    """A copy of ``run`` (learner and join) with every open feedback window closed."""
    run.flush()
    copy = LearningRun(run.config, run.model, learner=learner_from_state(run.learner.export_state()))
    copy.join.import_state(run.join.export_state())
    copy.join.set_watermark(math.inf)
    copy.flush()
    return copy


def _ratio(predicted: float, truth: float) -> float | None:
    return round(float(predicted) / float(truth), 6) if truth > 0 else None


def final_calibration(run: LearningRun, world: World, reward_kind: str,
                      contexts: int = FRESH_CONTEXTS) -> dict[str, Any]:
    """``final_calibration``: Σ predicted ÷ Σ true probability of the arm the final model chooses (with its
    exploration, as it would serve) on ``contexts`` fresh contexts; ``final_calibration_all_arms``: the
    same over every candidate of every fresh context; for ``esmm`` also ``final_calibration_heads``
    (pCTR, pCVR and pCTCVR each against its own truth, over every candidate). Every figure is None when
    the model predicts no probability of the reward."""
    none: dict[str, Any] = {"final_calibration": None, "final_calibration_all_arms": None}
    if reward_probability(run.learner, reward_kind) is None:
        return none
    final = _closed_copy(run)
    learner, vectorizer = final.learner, final.vectorizer
    predict = reward_probability(learner, reward_kind)
    assert predict is not None
    heads = all(callable(getattr(learner, h, None)) for h in ("ctr", "cvr", "ctcvr"))
    c = world.config
    rng = np.random.default_rng([c.seed, 0xCA1B])
    arms = world.active_arms
    if reward_kind != "click" or heads:  # arms whose conversion parameters are known (see true_probabilities)
        arms = [a for a in arms if world.has_conversion_truth(a)]
    names = [f"x{i}" for i in range(c.dim)]
    served = np.zeros(2)  # predicted, true
    every = np.zeros(2)
    head_sums = np.zeros((3, 2))  # ctr, cvr, ctcvr: predicted, true
    for _ in range(contexts):
        x_world = np.round(rng.standard_normal(c.dim), 4)
        context: dict[str, float | str] = dict(zip(names, x_world.tolist(), strict=True))
        candidates = arms if c.candidates is None or c.candidates >= len(arms) else [arms[i] for i in sorted(
            rng.choice(len(arms), size=c.candidates, replace=False).tolist())]
        p_click, p_conv = true_probabilities(world, x_world, candidates)
        truth = p_click if reward_kind == "click" else p_click * p_conv
        x = vectorizer.x(context)
        shared = None
        if vectorizer.shared is not None:
            shared = vectorizer.shared_for(context, candidates, {a: world.arm_features(a) for a in candidates})
        chosen = candidates.index(learner.choose(x, candidates, shared).arm)
        predicted = np.array([predict(a, x) for a in candidates])
        served += (predicted[chosen], truth[chosen])
        every += (predicted.sum(), truth.sum())
        if heads:
            for h, (name, true) in enumerate((("ctr", p_click), ("cvr", p_conv), ("ctcvr", p_click * p_conv))):
                head_sums[h] += (sum(getattr(learner, name)(a, x) for a in candidates), true.sum())
    out: dict[str, Any] = {"final_calibration": _ratio(*served), "final_calibration_all_arms": _ratio(*every)}
    if heads:
        out["final_calibration_heads"] = {name: _ratio(*head_sums[h]) for h, name in enumerate(("ctr", "cvr", "ctcvr"))}
    return out
