"""Which of a learner's predictions is the probability of a binary reward (``simulate``'s calibration,
``evaluate --calibration``, the scorer's ``pctr``/``pcvr``/``expected_value``):

* click reward: ``ctr(arm, x)`` (``ctr-lr``, ``ctr-ftrl``, ``vw-ctr``, ``esmm``'s pCTR head); a model
  with only ``cvr`` (``dfm``, which through the pipeline learns each impression's final reward) its ``cvr``;
* conversion reward (an impression clicked *and* converted): ``ctcvr`` (``esmm``), else ``cvr`` (``dfm``),
  else ``ctr`` (a click model taught the conversion reward predicts it per impression);
* any other reward (values, weighted sums): none, the reward is not a probability.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from banditloop.operators.base import Learner

Predict = Callable[[str, np.ndarray], float]


def reward_probability(learner: Learner, reward_kind: str) -> Predict | None:
    """The learner's predicted probability of a binary reward of ``reward_kind`` (see the module docstring).

    >>> from banditloop.operators.registry import make_learner
    >>> reward_probability(make_learner("ctr-ftrl", 2), "click").__name__
    'ctr'
    >>> reward_probability(make_learner("esmm", 2), "conversion").__name__
    'ctcvr'
    >>> reward_probability(make_learner("linucb", 2), "click") is None
    True
    """
    if reward_kind == "click":
        names: tuple[str, ...] = ("ctr", "cvr")
    elif reward_kind == "conversion":
        names = ("ctcvr", "cvr", "ctr")
    else:
        return None
    for name in names:
        predict = getattr(learner, name, None)
        if callable(predict):
            return predict
    return None
