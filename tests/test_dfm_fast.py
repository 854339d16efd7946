"""The packed FTRL steps of ``dfm`` and ``esmm`` learn what the straightforward implementation learns.

The reference below is the plain implementation the packed one replaced (the code before it): every
head's logit from the bias, shared and per-arm weights, the gradients with the array formulas, and
``ctr_ftrl.ftrl_step`` on the three blocks one after the other. The packed code uses ``math`` for
exp/log/tanh (which may differ from numpy's in the last bit) and one dot for the logits, so the states
agree to 1e-12; the FTRL arithmetic itself is the same float operations, bit for bit (checked
directly). ``z`` sums gradients of both signs, so a coordinate near zero after cancellation carries the
absolute rounding of the large terms: the arrays are compared to 1e-12 of their scale, the predictions
to 1e-12 relative. All randomness is seeded."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from banditloop.operators.ctr_ftrl import ftrl_step, ftrl_weights
from banditloop.operators.dfm import DelayedFeedbackModel, conversion_grad, survival_grad, window_grad
from banditloop.operators.esmm import ESMM
from banditloop.operators.ftrl_heads import _sigmoid, ftrl_step_packed

DAY = 86400.0


# -- the reference: the straightforward implementation, one numpy block at a time -------------------------
def ref_step(model, row: int, x: np.ndarray, grad: np.ndarray) -> None:
    a, g, h = model._arrays, model._globals, model._hyper()
    gx = np.outer(grad, x)
    ftrl_step(g["z_bias"], g["n_bias"], g["w_bias"], np.asarray(grad, dtype=float), *h)
    ftrl_step(g["z_shared"], g["n_shared"], g["w_shared"], gx, *h)
    ftrl_step(a["z"][row], a["n"][row], a["w"][row], gx, *h)


def ref_heads(model, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(p, log rate, index of p's head, of the delay head) of the delayed feedback part."""
    if isinstance(model, ESMM):
        return _sigmoid(out[0] + out[1]), out[2], 1, 2
    return _sigmoid(out[0]), out[1], 0, 1


def ref_learn(model, what: str, arm: str, x: np.ndarray, *args: float) -> None:
    r = model.add_arm(arm)
    out = model._logits(r, x)
    grad = np.zeros(model.heads)
    if what == "click":
        grad[0] = float(_sigmoid(out[0])) - args[0]
        model._arrays["impressions"][r] += 1.0
        model._arrays["clicks"][r] += args[0]
        ref_step(model, r, x, grad)
        return
    p, lr, ia, il = ref_heads(model, out)
    if what == "elapsed":
        g1, g0 = survival_grad(p, lr, np.array(args[1])), survival_grad(p, lr, np.array(args[0]))
        grad[ia], grad[il] = g1[0] - g0[0], g1[1] - g0[1]
    elif what == "conversion":
        ga, gl = conversion_grad(p, lr, np.array(args[0]))
        s0 = survival_grad(p, lr, np.array(args[1]))
        grad[ia], grad[il] = ga - s0[0], gl - s0[1]
        model._arrays["conversions"][r] += 1.0
    else:  # close, through window_grad (its survival part is the array formula in the reference)
        s = survival_grad(p, lr, np.array(model.window))
        label = args[0]
        ga, gl = window_grad(float(p), float(lr), model.window, 1.0)
        grad[ia] = label * ga + (1.0 - label) * float(s[0])
        grad[il] = label * gl + (1.0 - label) * float(s[1])
        model._arrays["conversions"][r] += label
    ref_step(model, r, x, grad)


def events(seed: int, n: int, dim: int, arms: int) -> list[tuple]:
    """A long random mix: ticks of pending items (as batches), conversions, closes, click labels."""
    rng = np.random.default_rng(seed)
    out: list[tuple] = []
    for _ in range(n):
        u = rng.random()
        if u < 0.6:
            k = int(rng.integers(1, 12))
            names = [f"a{int(i)}" for i in rng.integers(0, arms, k)]  # new arms appear as it goes
            X = rng.normal(size=(k, dim))
            e0 = np.where(rng.random(k) < 0.2, 0.0, rng.uniform(0, 6 * DAY, k))
            out.append(("batch", names, X, e0, e0 + rng.uniform(0, DAY, k)))
        else:
            what = ["conversion", "close", "click", "elapsed"][int(rng.integers(0, 4))]
            arm, x = f"a{int(rng.integers(0, arms))}", rng.normal(size=dim)
            if what == "conversion":
                args = (float(rng.exponential(DAY)), float(rng.uniform(0, DAY)))
            elif what == "elapsed":
                e0 = float(rng.uniform(0, 3 * DAY))
                args = (e0, e0 + float(rng.uniform(0, 2 * DAY)))
            else:
                args = (float(rng.random() < 0.3),)
            out.append((what, arm, x, *args))
    return out


def drive(model, evs, reference: bool) -> None:
    for ev in evs:
        if ev[0] == "batch":
            _, names, X, e0, e1 = ev
            if reference:
                for name, x, a, b in zip(names, X, e0, e1, strict=True):
                    ref_learn(model, "elapsed", name, x, float(a), float(b))
            else:
                model.learn_elapsed_batch(names, X, e0, e1)
            continue
        what, arm, x, *args = ev
        if what == "click" and not isinstance(model, ESMM):
            continue
        if reference:
            ref_learn(model, what, arm, x, *args)
        elif what == "conversion":
            model.learn_conversion(arm, x, args[0], args[1])
        elif what == "elapsed":
            model.learn_elapsed(arm, x, args[0], args[1])
        elif what == "click":
            model.learn_click(arm, x, args[0])
        else:
            model.learn_close(arm, x, args[0])


def states(model) -> dict[str, np.ndarray]:
    return {k: v for k, v in model.export_state().arrays.items()}


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # beta = 0: 0/0, masked
@pytest.mark.parametrize("cls", [DelayedFeedbackModel, ESMM])
@pytest.mark.parametrize("hyper", [{}, {"l1": 0.3, "l2": 0.5, "alpha": 0.2}, {"beta": 0.0}])
def test_packed_steps_match_the_reference_on_a_long_random_sequence(cls, hyper):
    evs = events(seed=7, n=1500, dim=5, arms=13)  # 13 arms: the tables grow (and repack) mid-stream
    fast, ref = cls(dim=5, **hyper), cls(dim=5, **hyper)
    drive(fast, evs, reference=False)
    drive(ref, evs, reference=True)
    assert fast.arms == ref.arms
    got, want = states(fast), states(ref)
    assert got.keys() == want.keys()
    for name in want:  # z sums gradients of both signs: relative to the array's scale, not per element
        scale = max(float(np.abs(want[name]).max()), 1e-300)
        assert float(np.abs(got[name] - want[name]).max()) <= 1e-12 * scale, name
    x = np.linspace(-1.0, 1.0, 5)
    for arm in fast.arms:  # what is served: the predictions, per arm, to 1e-12 relative
        assert fast.predict(arm, x) == pytest.approx(ref.predict(arm, x), rel=1e-12, abs=0)
    assert np.abs(got["z"]).max() > 0.1  # it learned something
    # the maintained weights are ftrl_weights of the statistics, bit for bit (as a restored model has)
    h = fast._hyper()
    assert np.array_equal(fast._arrays["w"], ftrl_weights(fast._arrays["z"], fast._arrays["n"], *h))
    g = fast._globals
    assert np.array_equal(g["w_shared"], ftrl_weights(g["z_shared"], g["n_shared"], *h))


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # beta = 0: 0/0, masked
@pytest.mark.parametrize("hyper", [(0.05, 1.0, 0.0, 0.0), (0.2, 0.5, 0.3, 0.5), (0.1, 0.0, 0.0, 0.0),
                                   (0.1, 0.0, 0.2, 0.0)])
def test_packed_ftrl_step_is_ftrl_step_bit_for_bit(hyper):
    rng = np.random.default_rng(3)
    z, n = rng.normal(size=50), rng.exponential(size=50)
    z[:5], n[:5] = 0.0, 0.0  # untouched coordinates
    w = ftrl_weights(z, n, *hyper)
    v = np.stack([z, n, w])
    for _ in range(20):
        g = rng.normal(size=50) * (rng.random(50) < 0.7)
        ftrl_step(z, n, w, g, *hyper)
        ftrl_step_packed(v, g, *hyper)
        assert np.array_equal(v, np.stack([z, n, w]))


@pytest.mark.parametrize("cls", [DelayedFeedbackModel, ESMM])
def test_restored_and_copied_models_continue_identically(cls):
    evs = events(seed=11, n=400, dim=3, arms=10)
    model = cls(dim=3)
    drive(model, evs[:200], reference=False)
    restored = type(model).from_state(model.export_state())
    copied = copy.deepcopy(model)  # its arrays no longer view its buffer: packed again on first use
    for m in (model, restored, copied):
        drive(m, evs[200:], reference=False)
    for other in (restored, copied):
        for name, arr in states(model).items():
            assert np.array_equal(arr, states(other)[name]), name


def test_batch_checks_shapes_before_learning():
    model = DelayedFeedbackModel(dim=2)
    before = states(model)
    with pytest.raises(ValueError):
        model.learn_elapsed_batch(["a", "b"], np.zeros((2, 3)), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError):
        model.learn_elapsed_batch(["a", "b"], np.zeros((2, 2)), np.zeros(3), np.ones(3))
    after = states(model)
    assert model.arms == [] and all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError):
        model.learn_elapsed("a", np.zeros(3), 0.0, 1.0)
    model.learn_elapsed_batch([], np.zeros((0, 2)), np.zeros(0), np.zeros(0))  # nothing pending: nothing
