"""Calibrated online CTR model: per-coordinate FTRL-Proximal logistic regression on context × arm
features, with a selectable treatment of delayed clicks and ε-greedy or softmax exploration.

**Model.** For context ``x`` and arm ``a`` the click probability is ``p = σ(logit(prior) + b + (w +
w_a)·x)``: a fixed offset (``prior`` is the prediction before any data, 0.5 by default; set it to the
expected CTR to skip the warm-up from 0.5), a learned intercept ``b``, weights ``w`` shared by all
arms and arm-specific weights ``w_a`` (the featurization of ``ctr-lr``; with the featurizer's bias in
slot 0, ``w_a[0]`` is the arm's own bias).

**Optimizer: FTRL-Proximal** (McMahan et al. 2013, "Ad Click Prediction: a View from the Trenches",
Algorithm 1), per coordinate ``i`` with statistics ``z_i`` and ``n_i`` (both 0 at first). For an example
of label ``y`` in [0, 1] and weight ``c``, the gradient is ``g_i = c (p − y) x_i`` and::

    σ_i = (sqrt(n_i + g_i²) − sqrt(n_i)) / alpha
    z_i ← z_i + g_i − σ_i w_i
    n_i ← n_i + g_i²
    w_i = 0                                                   if |z_i| ≤ l1
    w_i = −(z_i − sign(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)   otherwise

The per-coordinate step ``alpha / (beta + sqrt(n_i))`` shrinks as evidence accumulates, so a burst of
late labels moves a well-trained coordinate little (no constant step to swing the model).

**Delayed feedback** (``delay``), the treatment of a click that arrives after its impression:

* ``"fnw"`` (default): fake negative weighted (Ktena et al. 2019, "Addressing Delayed Feedback for
  Continuous Training with Neural Networks in CTR prediction", RecSys). The impression is learned at
  once as a negative, a click when it arrives as a positive of the same features. Of that stream a
  fraction ``p/(1+p)`` is positive, so the examples are importance-weighted with the model's own
  current prediction ``p`` (held constant: no gradient through the weight): positives by ``1 + p``,
  negatives by ``(1 − p)(1 + p)``. Per impression the expected gradient in the logit is then
  ``(1 + p)(1 − p)(p − π)`` for a true rate ``π``: its zero is ``p = π``, so the model predicts the
  click probability itself. Fresh, but a click later than the feedback window is never learned
  (the join dead-letters it), which biases ``p`` down by the share of such clicks.
* ``"wait"``: nothing is learned at the impression; each impression is learned once, with its final
  label, when its feedback window closes (``learns_at_close``). Unbiased when the window covers the
  delays, but the model lags the stream by the window.

A reward ``r`` in (0, 1] (the pipeline clips rewards, ``binary_reward``) is a positive of weight
``r (1 + p)`` under ``"fnw"`` and the soft label ``r`` under ``"wait"``. :meth:`CTRFTRL.ctr` and the
scores are the predicted click probability under both treatments.

**Exploration.** ``"egreedy"``: greedy on ``p`` with probability ``1−ε`` (ties split), uniform
otherwise; ``"softmax"``: Boltzmann over ``p / temperature``. Both propensities are exact.

**State** (plain arrays, no pickle): per arm ``z``, ``n`` (the ``w_a`` coordinates), ``impressions``
and ``clicks``; global ``z_shared``, ``n_shared`` (``w``) and ``z_bias``, ``n_bias`` (``b``). The
weights are a function of ``z`` and ``n``, rebuilt on load: a restored model continues identically.

**Merge is approximate** (``exact_merge = False``): per coordinate, the merged weight is the
``n``-weighted mean of the two weights (the shard that saw more gradient counts more), ``n`` adds
(sums of squared gradients are additive), and ``z`` is set so that the merged ``(z, n)`` gives that
weight; coordinates at 0 keep the ``n``-weighted mean of their ``z`` (within ``±l1``). Summing ``z``
instead would overstate converged weights by up to √2. It is exact when one side never touched a
coordinate (e.g. an empty shard).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from banditloop.operators.base import Learner, Shared
from banditloop.operators.policies import ExploredScores, check_exploration

DELAYS = ("fnw", "wait")


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def ftrl_weights(z: np.ndarray, n: np.ndarray, alpha: float, beta: float, l1: float, l2: float,
                 newton: bool = False) -> np.ndarray:
    """FTRL-Proximal weights of the statistics ``z``, ``n`` (McMahan et al. 2013, Algorithm 1); with
    ``newton``, ``n`` in place of ``√n`` (steps ``1/Σg²``: see :mod:`banditloop.operators.ftrl_heads`)."""
    w = -(z - np.sign(z) * l1) / ((beta + (n if newton else np.sqrt(n))) / alpha + l2)
    return np.where(np.abs(z) <= l1, 0.0, w)


def ftrl_step(z: np.ndarray, n: np.ndarray, w: np.ndarray, g: np.ndarray, alpha: float, beta: float,
              l1: float, l2: float) -> None:
    """One FTRL-Proximal update with gradient ``g``, in place: ``z``, ``n`` and the weights ``w``."""
    gg = g * g
    sigma = (np.sqrt(n + gg) - np.sqrt(n)) / alpha
    z += g - sigma * w
    n += gg
    w[...] = ftrl_weights(z, n, alpha, beta, l1, l2)


class CTRFTRL(ExploredScores, Learner):
    """FTRL-Proximal logistic regression on context × arm features with fake-negative weighting (or
    waiting for the window) for delayed clicks; calibrated click probabilities, ε-greedy or softmax.

    >>> import numpy as np
    >>> model = CTRFTRL(dim=2, delay="fnw", seed=0)
    >>> rng = np.random.default_rng(0)
    >>> x = np.array([1.0, 0.0])
    >>> for _ in range(4000):
    ...     model.learn_impression("ad", x)                       # a fake negative at once
    ...     if rng.random() < 0.2:
    ...         model.learn_reward("ad", x, 1.0)                  # the click, later
    >>> round(model.ctr("ad", x), 1)
    0.2
    """

    kind = "ctr-ftrl"
    binary_reward = True
    exact_merge = False
    additive_arrays = ("impressions", "clicks")
    derived_arrays = ("w", "w_shared", "w_bias")

    def __init__(self, dim: int, delay: str = "fnw", alpha: float = 0.05, beta: float = 1.0, l1: float = 0.0,
                 l2: float = 0.0, prior: float = 0.5, exploration: str = "egreedy", epsilon: float = 0.1,
                 temperature: float = 0.05, seed: int = 0) -> None:
        if delay not in DELAYS:
            raise ValueError(f"delay must be one of {DELAYS}, not {delay!r}")
        check_exploration(exploration, epsilon, temperature)
        if not alpha > 0 or not beta >= 0 or not l1 >= 0 or not l2 >= 0:
            raise ValueError("alpha must be > 0, beta, l1 and l2 >= 0")
        if not 0.0 < prior < 1.0:
            raise ValueError("prior must be in (0, 1)")
        self.delay = delay
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.prior = float(prior)
        self._offset = math.log(self.prior / (1.0 - self.prior))
        self.exploration = exploration
        self.epsilon = float(epsilon)
        self.temperature = float(temperature)
        self.learns_at_close = delay == "wait"
        super().__init__(dim, seed)

    def _arm_arrays(self):
        d = (self.dim,)
        return {"z": (d, 0.0), "n": (d, 0.0), "w": (d, 0.0), "impressions": ((), 0.0), "clicks": ((), 0.0)}

    def _global_arrays(self):
        d = (self.dim,)
        return {"z_shared": (d, 0.0), "n_shared": (d, 0.0), "w_shared": (d, 0.0),
                "z_bias": ((1,), 0.0), "n_bias": ((1,), 0.0), "w_bias": ((1,), 0.0)}

    def _hyper(self) -> tuple[float, float, float, float]:
        return self.alpha, self.beta, self.l1, self.l2

    # -- predictions ----------------------------------------------------------------------------
    def _logit(self, row: int, x: np.ndarray) -> float:
        g = self._globals
        return float(self._offset + g["w_bias"][0] + (g["w_shared"] + self._arrays["w"][row]) @ x)

    def ctr(self, arm: str, x: np.ndarray) -> float:
        """The predicted click probability of ``arm`` in context ``x``."""
        return float(_sigmoid(self._logit(self.add_arm(arm), np.asarray(x, dtype=float))))

    predict = ctr

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        rows = self._rows(candidates)
        g = self._globals
        x = np.asarray(x, dtype=float)
        return _sigmoid(self._offset + g["w_bias"][0] + g["w_shared"] @ x + self._arrays["w"][rows] @ x)

    # -- learning -------------------------------------------------------------------------------
    def _learn(self, row: int, x: np.ndarray, label: float, weight: float) -> None:
        """One weighted logistic example: an FTRL step on every coordinate (bias, shared, arm)."""
        a, g, h = self._arrays, self._globals, self._hyper()
        grad = weight * (float(_sigmoid(self._logit(row, x))) - label)
        gx = grad * x
        ftrl_step(g["z_bias"], g["n_bias"], g["w_bias"], np.array([grad]), *h)
        ftrl_step(g["z_shared"], g["n_shared"], g["w_shared"], gx, *h)
        ftrl_step(a["z"][row], a["n"][row], a["w"][row], gx, *h)

    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["impressions"][r] += 1.0
        self._count(impressions=1.0)
        if self.delay == "fnw":
            x = np.asarray(x, dtype=float)
            p = float(_sigmoid(self._logit(r, x)))
            self._learn(r, x, 0.0, (1.0 - p) * (1.0 + p))

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self._arrays["clicks"][r] += reward
        self._count(reward=reward, rewarded=1.0)
        if self.delay == "fnw" and reward > 0:
            x = np.asarray(x, dtype=float)
            p = float(_sigmoid(self._logit(r, x)))
            self._learn(r, x, 1.0, float(reward) * (1.0 + p))

    def learn_close(self, arm: str, x: np.ndarray | None, reward: float, shared: np.ndarray | None = None) -> None:
        if self.delay != "wait" or x is None:
            return
        r = self.add_arm(arm)
        self._learn(r, np.asarray(x, dtype=float), min(max(float(reward), 0.0), 1.0), 1.0)

    # -- state ----------------------------------------------------------------------------------
    def _on_load(self) -> None:
        a, g, h = self._arrays, self._globals, self._hyper()
        a["w"][...] = ftrl_weights(a["z"], a["n"], *h)
        g["w_shared"][...] = ftrl_weights(g["z_shared"], g["n_shared"], *h)
        g["w_bias"][...] = ftrl_weights(g["z_bias"], g["n_bias"], *h)

    def _merge_coords(self, z1: np.ndarray, n1: np.ndarray, z2: np.ndarray,
                      n2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Merged ``(z, n)`` of two coordinate sets (see the module docstring)."""
        alpha, beta, l1, l2 = h = self._hyper()
        n = n1 + n2
        share = np.divide(n2, n, out=np.full(n.shape, 0.5), where=n > 0)
        w = (1.0 - share) * ftrl_weights(z1, n1, *h) + share * ftrl_weights(z2, n2, *h)
        z_at_zero = np.clip((1.0 - share) * z1 + share * z2, -l1, l1)
        z = np.where(w == 0.0, z_at_zero, -(w * ((beta + np.sqrt(n)) / alpha + l2) + np.sign(w) * l1))
        z = np.where(share == 1.0, z2, np.where(share == 0.0, z1, z))  # one side only: keep it exactly
        return z, n

    def _merge_arrays(self, rows: np.ndarray, theirs: Mapping[str, np.ndarray], other: Learner) -> None:
        a, g = self._arrays, self._globals
        a["z"][rows], a["n"][rows] = self._merge_coords(a["z"][rows], a["n"][rows], theirs["z"], theirs["n"])
        for part in ("shared", "bias"):
            zk, nk = f"z_{part}", f"n_{part}"
            g[zk][...], g[nk][...] = self._merge_coords(g[zk], g[nk], theirs[zk], theirs[nk])
        a["impressions"][rows] += theirs["impressions"]
        a["clicks"][rows] += theirs["clicks"]
