"""Linear Thompson sampling (Agrawal & Goyal 2013, "Thompson Sampling for Contextual Bandits with
Linear Payoffs").

Per arm the same ridge statistics as LinUCB (:class:`banditloop.operators.linucb.RidgeArms`: raw ``Σxxᵀ``,
``Σrx`` and counts, prior ``λI`` added when the caches are built, Sherman–Morrison updates): the
posterior is ``θ_a ~ N(μ_a, v²A_a⁻¹)`` with ``μ_a = A_a⁻¹b_a``. The policy samples ``θ̃_a`` per arm
and plays the argmax of ``xᵀθ̃_a``. Only that scalar matters and it is exactly
``N(xᵀμ_a, v²·xᵀA_a⁻¹x)``, independent across arms, so one normal draw per arm replaces a
``d``-dimensional draw (and its Cholesky factor) without changing the policy.

The propensity of the chosen arm is estimated by Monte Carlo over ``propensity_draws`` joint draws of
those scalars (plus the draw actually used), as in :mod:`banditloop.operators.beta_ts`; ``propensity_draws=0``
skips it and reports NaN.

Default ``v = 0.2``: the posterior width for unit noise, rescaled to the noise of click rewards
(Bernoulli with rates of a few percent, standard deviation about 0.2); see :mod:`banditloop.operators.linucb`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditloop.operators.base import Shared
from banditloop.operators.linucb import RidgeArms
from banditloop.operators.policies import SampledPolicy


class LinearTS(SampledPolicy, RidgeArms):
    """Linear Thompson sampling (Agrawal & Goyal 2013): one draw of ``θ_a ~ N(μ_a, v²A_a⁻¹)`` per arm.

    >>> import numpy as np
    >>> lts = LinearTS(dim=2, v=0.05, seed=1)
    >>> x = np.array([1.0, 0.5])
    >>> for _ in range(30):
    ...     lts.learn_one("a", x, 1.0)
    ...     lts.learn_one("b", x, 0.0)
    >>> lts.choose(x, ["a", "b"]).arm
    'a'
    """

    kind = "lints"

    def __init__(self, dim: int, v: float = 0.2, ridge: float = 1.0, propensity_draws: int = 256,
                 refresh_every: int = 1000, seed: int = 0) -> None:
        if v < 0:
            raise ValueError("v must be >= 0")
        self.v = float(v)
        self.propensity_draws = int(propensity_draws)
        super().__init__(dim, ridge=ridge, refresh_every=refresh_every, seed=seed)

    def posterior(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``μ_a`` and covariance ``v²A_a⁻¹`` of the sampling distribution of ``θ_a``."""
        r = self.arm_index[arm]
        return self._arrays["theta"][r].copy(), self.v**2 * self._arrays["ainv"][r]

    def _moments(self, x: np.ndarray, candidates: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of ``xᵀθ̃_a`` for each candidate."""
        rows = self._rows(candidates)
        a = self._arrays
        mean = a["theta"][rows] @ x
        var = (a["ainv"][rows] @ x) @ x
        return mean, self.v * np.sqrt(np.maximum(var, 0.0))

    def score(self, x: np.ndarray, candidates: Sequence[str], shared: Shared = None) -> np.ndarray:
        mean, sd = self._moments(x, candidates)
        return mean + sd * self.rng.standard_normal(len(candidates))

    def _draws(self, x: np.ndarray, candidates: Sequence[str], n: int) -> np.ndarray:
        mean, sd = self._moments(x, candidates)
        return mean + sd * self.rng.standard_normal((n, len(candidates)))
