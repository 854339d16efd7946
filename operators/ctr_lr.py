"""Online CTR model: river logistic regression on context × arm features, with ε-greedy or softmax
exploration.

**Features.** For context ``x`` and arm ``a`` the model sees ``{"x{i}": x_i}`` (weights shared by all
arms) plus ``{"{a}:x{i}": x_i}`` (arm-specific weights), zero entries omitted (sparse, river's
convention); plus river's intercept. The logit of arm ``a`` is therefore ``b + (w + w_a)·x``.

**Delayed feedback: fake negatives** (Ktena et al. 2019, "Addressing Delayed Feedback for Continuous
Training with Neural Networks in CTR prediction", RecSys, Twitter). ``learn_impression`` trains the
example at once as a negative (label 0); when a reward ``r > 0`` arrives, ``learn_reward`` trains the
same example again as a positive with sample weight ``r``. A model trained this way estimates
``q = p/(1+p)`` rather than the click probability ``p``; :meth:`CTRLogisticRegression.ctr` applies the
paper's fake-negative calibration ``p = q/(1−q)``. Scores are the raw ``q``: ranking and ε-greedy are
unchanged by the monotone calibration, and the softmax temperature is simply on the ``q`` scale.

**Exploration.** ``"egreedy"``: greedy on the score with probability ``1−ε`` (ties split), uniform
otherwise; ``"softmax"``: Boltzmann over ``score / temperature``. Both propensities are exact.

**State** (no pickle): per arm ``w`` (the ``{a}:x{i}`` weights as a ``(dim,)`` row), ``n``
(impressions) and ``clicks`` (reward sum); global ``w_shared`` (``x{i}`` weights) and ``intercept``.
Feature names are not stored: they are a function of the arm ids and ``dim``, which the state
already holds, so every array stays numeric. River's model is the source of truth while learning;
``w``, ``w_shared`` and ``intercept`` are written from it on export and it is rebuilt from them on
import, giving identical predictions (a missing river weight and a stored 0 are the same). The SGD
learning rates are constant (river's default 0.01), so the optimizer has no other state to carry.

**Merge is approximate** (``exact_merge = False``): logistic regression has no additive sufficient
statistics, so two shards are combined by averaging their weights, each arm's ``w`` weighted by the
arm's impressions in each shard and ``w_shared``/``intercept`` by the shards' total impressions (a
one-shot parameter average, cf. Zinkevich et al. 2010). It is exact only in trivial cases, e.g. when
one side has no impressions.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from river import linear_model, optim, utils

from banditloop.operators.base import Learner
from banditloop.operators.policies import FakeNegativeCTR, check_exploration


class CTRLogisticRegression(FakeNegativeCTR, Learner):
    """Online logistic regression on context × arm features with fake negatives, ε-greedy or softmax (module docstring).

    >>> import numpy as np
    >>> ctr = CTRLogisticRegression(dim=2, epsilon=0.0, learning_rate=0.1)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     ctr.learn_one("a", x, 1.0)
    ...     ctr.learn_one("b", x, 0.0)
    >>> ctr.choose(x, ["a", "b"]).arm
    'a'
    """

    kind = "ctr-lr"
    binary_reward = True
    exact_merge = False
    additive_arrays = ("n", "clicks")

    def __init__(self, dim: int, exploration: str = "egreedy", epsilon: float = 0.1, temperature: float = 0.05,
                 learning_rate: float = 0.01, intercept_lr: float = 0.01, l2: float = 0.0, seed: int = 0) -> None:
        check_exploration(exploration, epsilon, temperature)
        if learning_rate <= 0 or intercept_lr < 0 or l2 < 0:
            raise ValueError("learning_rate must be > 0, intercept_lr and l2 >= 0")
        self.exploration = exploration
        self.epsilon = float(epsilon)
        self.temperature = float(temperature)
        self.learning_rate = float(learning_rate)
        self.intercept_lr = float(intercept_lr)
        self.l2 = float(l2)
        super().__init__(dim, seed)
        self._shared_names = [f"x{i}" for i in range(self.dim)]
        self._cross_names: dict[str, list[str]] = {}
        self.model = self._new_model()

    def _arm_arrays(self):
        return {"w": ((self.dim,), 0.0), "n": ((), 0.0), "clicks": ((), 0.0)}

    def _global_arrays(self):
        return {"w_shared": ((self.dim,), 0.0), "intercept": ((), 0.0)}

    def _new_model(self) -> linear_model.LogisticRegression:
        return linear_model.LogisticRegression(optimizer=optim.SGD(self.learning_rate), l2=self.l2,
                                               intercept_lr=self.intercept_lr)

    # -- features -------------------------------------------------------------------------------
    def _names(self, arm: str) -> list[str]:
        names = self._cross_names.get(arm)
        if names is None:
            names = self._cross_names[arm] = [f"{arm}:x{i}" for i in range(self.dim)]
        return names

    def features(self, arm: str, x: np.ndarray) -> dict[str, float]:
        """The river feature dict of ``arm`` in context ``x`` (zero entries omitted)."""
        nz = np.flatnonzero(x).tolist()
        values = np.asarray(x, dtype=float)[nz].tolist()
        shared, cross = self._shared_names, self._names(arm)
        out = {shared[i]: v for i, v in zip(nz, values, strict=True)}
        out.update({cross[i]: v for i, v in zip(nz, values, strict=True)})
        return out

    # -- decisions ------------------------------------------------------------------------------
    def predict(self, arm: str, x: np.ndarray) -> float:
        """The model's probability of a positive label (under fake negatives: ``p/(1+p)``)."""
        return self.model.predict_proba_one(self.features(arm, x))[True]

    # -- learning -------------------------------------------------------------------------------
    def learn_impression(self, arm: str, x: np.ndarray, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        self.model.learn_one(self.features(arm, x), False)
        self._arrays["n"][r] += 1.0
        self._count(impressions=1.0)

    def learn_reward(self, arm: str, x: np.ndarray, reward: float, shared: np.ndarray | None = None) -> None:
        r = self.add_arm(arm)
        if reward > 0:
            self.model.learn_one(self.features(arm, x), True, w=float(reward))
        self._arrays["clicks"][r] += reward
        self._count(reward=reward, rewarded=1.0)

    # -- state ----------------------------------------------------------------------------------
    def _sync_arrays(self) -> None:
        """Write river's weights into ``w``, ``w_shared`` and ``intercept``."""
        n = len(self.arms)
        w = np.zeros((n, self.dim))
        w_shared = np.zeros(self.dim)
        shared_slot = {name: i for i, name in enumerate(self._shared_names)}
        for name, value in self.model.weights.items():
            i = shared_slot.get(name)
            if i is not None:
                w_shared[i] = value
                continue
            arm, _, slot = name.rpartition(":x")
            w[self.arm_index[arm], int(slot)] = value
        self._arrays["w"][:n] = w
        self._globals["w_shared"][...] = w_shared
        self._globals["intercept"][...] = self.model.intercept

    def _state_arrays(self) -> dict[str, np.ndarray]:
        self._sync_arrays()
        return super()._state_arrays()

    def _on_load(self) -> None:
        """Rebuild the river model from the arrays (after import or merge)."""
        model = self._new_model()
        weights: dict[str, float] = {}
        for i in np.flatnonzero(self._globals["w_shared"]).tolist():
            weights[self._shared_names[i]] = float(self._globals["w_shared"][i])
        w = self._arrays["w"]
        for r, arm in enumerate(self.arms):
            names = self._names(arm)
            for i in np.flatnonzero(w[r]).tolist():
                weights[names[i]] = float(w[r, i])
        # river has no public setter for the weights; GLM keeps them in a VectorDict
        model._weights = utils.VectorDict(weights)
        model.intercept = float(self._globals["intercept"])
        self.model = model

    def _merge_arrays(self, rows: np.ndarray, theirs: Mapping[str, np.ndarray], other: Learner) -> None:
        """Count-weighted average of the weights (approximate, see the module docstring); counts add."""
        a, g = self._arrays, self._globals
        n_mine, n_theirs = a["n"][rows], theirs["n"]
        total = n_mine + n_theirs
        share = np.divide(n_theirs, total, out=np.full(total.shape, 0.5), where=total > 0)[:, None]
        a["w"][rows] = (1.0 - share) * a["w"][rows] + share * theirs["w"]
        all_mine, all_theirs = a["n"][: len(self.arms)].sum(), theirs["n"].sum()
        s = all_theirs / (all_mine + all_theirs) if all_mine + all_theirs > 0 else 0.5
        g["w_shared"][...] = (1.0 - s) * g["w_shared"] + s * theirs["w_shared"]
        g["intercept"][...] = (1.0 - s) * g["intercept"] + s * theirs["intercept"]
        a["n"][rows] += n_theirs
        a["clicks"][rows] += theirs["clicks"]
