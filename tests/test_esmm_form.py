"""``esmm`` with ``form="product"``: Ma et al.'s pCTCVR = pCTR × pCVR, the pCVR a head of its own."""

import numpy as np
import pytest

from banditloop.operators.esmm import ESMM
from banditloop.operators.registry import learner_from_state


def test_product_form_learns_the_rates_and_its_gradient_is_the_chain_rule():
    from banditloop.operators.dfm import elapsed_factor_grad

    model = ESMM(dim=1, ctr_prior=0.5, prior=0.1, form="product")
    rng, x = np.random.default_rng(0), np.array([1.0])
    for _ in range(4000):
        clicked = rng.random() < 0.4
        model.learn_click("ad", x, clicked)
        if clicked and rng.random() < 0.25:
            model.learn_conversion("ad", x, delay=3600.0)
        else:
            model.learn_elapsed("ad", x, 0.0, 30 * 86400.0)
    assert model.ctr("ad", x) == pytest.approx(0.4, abs=0.02)
    assert model.cvr("ad", x) == pytest.approx(0.25, abs=0.02)
    assert model.ctcvr("ad", x) == pytest.approx(model.ctr("ad", x) * model.cvr("ad", x))
    assert model.score(x, ["ad"])[0] == pytest.approx(model.ctcvr("ad", x))
    # d/da of −log S(e₁)/S(e₀) with P = σ(c)σ(a), against a finite difference
    c, a, lr, h = 0.3, -1.2, -11.0, 1e-6

    def loss(a):
        p = 1 / (1 + np.exp(-c)) / (1 + np.exp(-a))
        s = lambda e: 1 - p + p * np.exp(-np.exp(lr) * e)  # noqa: E731
        return -np.log(s(2e5) / s(5e4))

    p, scale = model._ctcvr(c, a)
    ga, _ = elapsed_factor_grad(p, lr, 5e4, 2e5)
    assert ga * scale == pytest.approx((loss(a + h) - loss(a - h)) / (2 * h), rel=1e-5)


def test_product_form_params_and_old_states():
    import dataclasses

    with pytest.raises(ValueError, match="form"):
        ESMM(dim=1, form="sum")
    with pytest.raises(ValueError, match="prior"):
        ESMM(dim=1, ctr_prior=0.1, prior=0.2, form="product")
    state = ESMM(dim=2).export_state()
    old = dataclasses.replace(state, params={k: v for k, v in state.params.items() if k != "form"})
    assert learner_from_state(old).form == "logit"
    restored = learner_from_state(ESMM(dim=2, form="product", ctr_prior=0.2, prior=0.05).export_state())
    assert restored.form == "product" and restored.cvr("a", np.array([1.0, 0.0])) == pytest.approx(0.25)
