"""Online CTR model on Vowpal Wabbit: logistic regression with feature hashing, ε-greedy or softmax.

One example per (context, arm): namespace ``x`` (the context vector) and ``a`` (``arm=<id>``) with
the interaction ``-q xa``, so the logit of arm ``a`` is ``b + w·x + w_a + w_a'·x`` over a hashed
weight table of ``2**bits`` entries (VW's adaptive, normalised SGD; ``--loss_function logistic
--link logistic``, so predictions are probabilities).

**Delayed feedback: fake negatives**, as :mod:`banditloop.operators.ctr_lr`: ``learn_impression``
learns the example as a negative at once and a reward ``r > 0`` learns it again as a positive with
importance weight ``r``; the model then estimates ``q = p/(1+p)``, :meth:`VWLogisticCTR.ctr` returns
the calibrated ``q/(1−q)``, and scores are the raw ``q``. Exploration: ``"egreedy"`` (greedy on the
score with probability ``1−ε``, ties split) or ``"softmax"`` over ``score / temperature``; both
propensities are exact. State, merge (refused) and features: :mod:`banditloop.operators.vw_base`.

>>> import numpy as np
>>> lrn = VWLogisticCTR(dim=2, epsilon=0.2)
>>> for _ in range(20):
...     lrn.learn_one("a", np.array([1.0, 0.0]), 1.0)
...     lrn.learn_one("b", np.array([1.0, 0.0]), 0.0)
>>> lrn.ctr("a", np.array([1.0, 0.0])) > lrn.ctr("b", np.array([1.0, 0.0]))
True
"""

from __future__ import annotations

import numpy as np

from banditloop.operators.policies import FakeNegativeCTR, check_exploration
from banditloop.operators.vw_base import VWModel, context_features


class VWLogisticCTR(FakeNegativeCTR, VWModel):
    """Vowpal Wabbit's hashed logistic regression as an online CTR model; see the module docstring.

    >>> import numpy as np
    >>> vw = VWLogisticCTR(dim=2, epsilon=0.0, bits=12, seed=1)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     vw.learn_one("a", x, 1.0)
    ...     vw.learn_one("b", x, 0.0)
    >>> vw.choose(x, ["a", "b"]).arm
    'a'
    """

    kind = "vw-ctr"
    binary_reward = True

    def __init__(self, dim: int, exploration: str = "egreedy", epsilon: float = 0.1, temperature: float = 0.05,
                 bits: int = 18, learning_rate: float = 0.5, l2: float = 0.0, seed: int = 0) -> None:
        check_exploration(exploration, epsilon, temperature)
        if not learning_rate > 0 or not l2 >= 0:
            raise ValueError("learning_rate must be > 0, l2 >= 0")
        if not 1 <= int(bits) <= 30:
            raise ValueError("bits must be in [1, 30]")
        self.exploration = exploration
        self.epsilon = epsilon
        self.temperature = temperature
        self.bits = bits
        self.learning_rate = learning_rate
        self.l2 = l2
        super().__init__(dim, seed)

    def vw_args(self) -> str:
        return (f"--loss_function logistic --link logistic -q xa -b {int(self.bits)} -l {self.learning_rate!r} "
                f"--l2 {self.l2!r}")

    def _example(self, arm: str, x: np.ndarray, label: str = "") -> str:
        return f"{label}|x {context_features(x)} {self._arm_feature(arm)}"

    # -- decisions ------------------------------------------------------------------------------
    def predict(self, arm: str, x: np.ndarray) -> float:
        """The model's probability of a positive label (under fake negatives: ``p/(1+p)``)."""
        return float(self.vw.predict(self._example(arm, x)))

    # -- learning -------------------------------------------------------------------------------
    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        self.vw.learn(self._example(arm, x, "-1 1.0 "))
        self._count_impression(arm)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        if reward > 0:
            self.vw.learn(self._example(arm, x, f"1 {float(reward)!r} "))
        self._count_reward(arm, reward)
