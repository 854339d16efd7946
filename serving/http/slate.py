"""Propensities logged for the arms of a ranked slate (``k > 1``).

The first arm of a slate is the policy's choice, and its propensity is the policy's own
(:attr:`ScoreResult.propensity`): exact for argmax policies (1, or ``1/T`` among ``T`` tied best
scores) and for ε-greedy/softmax/uniform, a Monte Carlo estimate for Thompson sampling.

Below the first position the learners define no slate distribution, so what is logged is:

* **argmax policies** (LinUCB, Diag-LinUCB, hybrid LinUCB, UCB1; ``ScoreResult.probabilities`` is
  None): the rest of the ranking is a deterministic, stable sort of the scores, so the propensity is
  1.0 — except for arms tied with the best score, where the random choice among the ``T`` tied arms
  moves the others by one place; their exact probability of being at that position is logged
  (``r/T`` or ``(T-1-r)/T`` for the ``r``-th tied arm in candidate order).
* **randomised policies** (ε-greedy, CTR-LR, uniform random, Thompson sampling; ``probabilities`` is
  set): the probability that the arm would have been chosen *first* for this request. That is the
  top-1 marginal, **not** the probability of appearing at that position (exact only for uniform
  random); off-policy estimates that need slate propensities should use position 0, or a slate
  estimator with its own model of positions.
* a policy that could not estimate its propensity (Thompson sampling with ``propensity_draws=0``,
  NaN) logs None (unknown) at every position.

Impression events carry only propensities in (0, 1]: a 0 (an arm that never won the Monte Carlo
draws) or an unknown value is logged as absent.
"""

from __future__ import annotations

import math

from banditloop.serving.served import ScoreResult


def slate_propensities(result: ScoreResult) -> list[float | None]:
    """One propensity per arm of ``result.ranking`` (see the module docstring for the definition)."""
    first = result.propensity
    if first is None or math.isnan(first):
        return [None] * len(result.ranking)
    out: list[float | None] = [float(first)]
    if len(result.ranking) == 1:
        return out
    probs = result.probabilities
    if probs is not None:
        out.extend(float(probs[arm]) for arm in result.ranking[1:])
        return out
    scores = result.scores
    top = max(scores.values())
    tied = [arm for arm, s in scores.items() if s == top]  # candidate order = the stable sort's order
    t = len(tied)
    rank = {arm: r for r, arm in enumerate(tied)} if t > 1 else {}
    for position, arm in enumerate(result.ranking[1:], start=1):
        r = rank.get(arm)
        if r is None:
            out.append(1.0)
        elif position == r:  # one of the r tied arms before it was chosen
            out.append(r / t)
        else:  # position == r + 1: a tied arm after it was chosen
            out.append((t - 1 - r) / t)
    return out


def loggable(propensity: float | None) -> float | None:
    """The propensity as an impression event accepts it: in (0, 1], else unknown (None)."""
    if propensity is None or not 0.0 < propensity <= 1.0:
        return None
    return propensity
