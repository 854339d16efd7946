"""Contextual bandit on Vowpal Wabbit: ``--cb_explore_adf`` with its exploration algorithms.

Every decision is one multi-line ADF example: a ``shared`` line with the context ``x`` (namespace
``s``) and one line per candidate (``|a arm=<id>``), with the quadratic interaction ``-q sa`` so each
arm gets its own weights on the context. VW returns a probability mass function over the candidates;
the learner samples it with its own seeded generator, so the propensity is exactly VW's probability
of the arm (``score`` is that pmf too: its argmax is VW's greedy arm).

Exploration (``exploration``): ``"squarecb"`` (Foster & Rakhlin 2020; ``gamma_scale``),
``"epsilon"`` (ε-greedy, ``epsilon``), ``"cover"`` (online cover, Agarwal et al. 2014; ``cover``
policies, ``epsilon`` as its minimum exploration) and ``"regcb"`` (RegCB, Foster et al. 2018). The
cost estimator (``cb_type``) is ``"mtr"``, ``"ips"`` or ``"dr"``; VW accepts only ``mtr`` with
``squarecb`` and ``regcb`` (anything else is refused at construction with VW's message).

**Labels.** VW learns costs (``cost = −reward``) of one chosen action in a multi-line example of
all actions. The learner interface gives it the shown arm only, so the example lists every active
arm (the candidates of a closed loop with a fixed arm set) and the label's probability is VW's own
current probability of the arm, floored at ``PROBABILITY_FLOOR`` (RegCB can give an arm 0): with
immediate feedback (``choose`` then ``learn_one``) that is exactly the probability the arm was
played with, VW's standard loop. Rewards arrive as increments (delayed feedback): ``learn_impression``
learns the example with cost 0 at once, and a reward ``r`` that arrives later is learned as a second
example of the same context and arm with cost ``−r`` (the fake-negative scheme of
:mod:`banditloop.operators.ctr_lr`; the regression then ranks arms by a monotone function of their
expected reward), its probability taken when the reward arrives. Learning from someone else's log
(``replay``) therefore weights by this learner's probabilities, not the logging policy's: the
interface carries no logged propensity. Each update scores every active arm, so its cost grows
with the arm count: retire arms that are gone. State, merge (refused) and features: :mod:`banditloop.operators.vw_base`.

>>> import numpy as np
>>> lrn = VWContextualBandit(dim=2, exploration="epsilon", epsilon=0.2, seed=1)
>>> lrn.learn_one("a", np.array([1.0, 0.5]), 1.0)
>>> d = lrn.choose(np.array([1.0, 0.5]), ["a", "b"])
>>> [round(p, 3) for p in d.probabilities.tolist()]
[0.9, 0.1]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Shared
from banditloop.operators.policies import sample_index
from banditloop.operators.vw_base import VWModel, context_features

EXPLORATIONS = ("squarecb", "epsilon", "cover", "regcb")
#: lowest probability written into a label (VW weights a label by 1/probability)
PROBABILITY_FLOOR = 0.01
CB_TYPES = ("mtr", "ips", "dr")


class VWContextualBandit(VWModel):
    """A contextual bandit on Vowpal Wabbit (``--cb_explore_adf``); see the module docstring.

    >>> import numpy as np
    >>> vw = VWContextualBandit(dim=2, exploration="epsilon", epsilon=0.0, bits=12, seed=1)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     vw.learn_one("a", x, 1.0)
    ...     vw.learn_one("b", x, 0.0)
    >>> vw.choose(x, ["a", "b"]).arm
    'a'
    """

    kind = "vw-cb"

    def __init__(self, dim: int, exploration: str = "squarecb", cb_type: str = "mtr", epsilon: float = 0.05,
                 gamma_scale: float = 10.0, cover: int = 4, bits: int = 18, learning_rate: float = 0.5,
                 seed: int = 0) -> None:
        if exploration not in EXPLORATIONS:
            raise ValueError(f"exploration must be one of {EXPLORATIONS}, not {exploration!r}")
        if cb_type not in CB_TYPES:
            raise ValueError(f"cb_type must be one of {CB_TYPES}, not {cb_type!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon must be in [0, 1]")
        if not gamma_scale > 0 or not learning_rate > 0:
            raise ValueError("gamma_scale and learning_rate must be > 0")
        if int(cover) < 1 or not 1 <= int(bits) <= 30:
            raise ValueError("cover must be >= 1 and bits in [1, 30]")
        self.exploration = exploration
        self.cb_type = cb_type
        self.epsilon = epsilon
        self.gamma_scale = gamma_scale
        self.cover = cover
        self.bits = bits
        self.learning_rate = learning_rate
        super().__init__(dim, seed)

    def vw_args(self) -> str:
        explore = {"squarecb": f"--squarecb --gamma_scale {self.gamma_scale!r}",
                   "epsilon": f"--epsilon {self.epsilon!r}",
                   "cover": f"--cover {int(self.cover)} --epsilon {self.epsilon!r}",
                   "regcb": "--regcb"}[self.exploration]
        return (f"--cb_explore_adf {explore} --cb_type {self.cb_type} -q sa -b {int(self.bits)} "
                f"-l {self.learning_rate!r}")

    def _lines(self, x: np.ndarray, candidates: Sequence[str]) -> list[str]:
        return [f"shared |s {context_features(x)}", *(self._arm_feature(a) for a in candidates)]

    # -- decisions ------------------------------------------------------------------------------
    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        """VW's probability of each candidate (its exploration pmf)."""
        self._rows(candidates)
        pmf = np.asarray(self.vw.predict(self._lines(x, candidates)), dtype=float)
        if pmf.shape != (len(candidates),):
            raise RuntimeError(f"{self.kind}: VW returned {pmf.size} probabilities for {len(candidates)} arms")
        return pmf

    def propensities(self, x, candidates, scores, shared=None) -> np.ndarray:
        return scores / scores.sum()

    def _pick(self, x, candidates, scores, shared):
        probs = self.propensities(x, candidates, scores, shared)
        pick = sample_index(probs, self.rng)
        return pick, float(probs[pick]), probs

    # -- learning -------------------------------------------------------------------------------
    def _learn(self, arm: str, x: np.ndarray, cost: float) -> None:
        self.add_arm(arm)
        actions = self.active_arms()
        if arm not in actions:  # feedback for a retired arm still teaches its weights
            actions.append(arm)
        lines = self._lines(x, actions)
        pmf = np.asarray(self.vw.predict(lines), dtype=float)
        j = actions.index(arm)
        p = max(float(pmf[j] / pmf.sum()), PROBABILITY_FLOOR)
        lines[1 + j] = f"0:{cost!r}:{p!r} {lines[1 + j]}"
        self.vw.learn(lines)

    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        self._learn(arm, x, 0.0)
        self._count_impression(arm)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        if reward:
            self._learn(arm, x, -float(reward))
        self._count_reward(arm, reward)
