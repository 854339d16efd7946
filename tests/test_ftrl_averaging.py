"""Opt-in options of the FTRL heads (``esmm``, ``dfm``): per-head rates and averaged iterates.

The averaged model is checked against a hand computation of McMahan's FTRL-Proximal steps and of the
ω-suffix average; a state round trip through the state codec continues as the uninterrupted model;
states written before the options load with them off; off, the models learn bit for bit as before."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from banditloop.core.state_codec import decode_state, encode_state
from banditloop.operators.dfm import DelayedFeedbackModel, conversion_factor_grad, elapsed_factor_grad
from banditloop.operators.esmm import ESMM
from banditloop.operators.registry import learner_from_state
from tests.test_dfm_fast import drive, events, states


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _ftrl(z: float, n: float, w: float, g: float, alpha: float, beta: float) -> tuple[float, float, float]:
    """One FTRL-Proximal step of one coordinate (McMahan et al. 2013, Algorithm 1; l1 = l2 = 0)."""
    sigma = (math.sqrt(n + g * g) - math.sqrt(n)) / alpha
    z, n = z + g - sigma * w, n + g * g
    return z, n, -z / ((beta + math.sqrt(n)) / alpha)


@pytest.mark.parametrize("omega", [0.0, 1.0])
def test_averaged_ctr_head_equals_a_hand_computation(omega):
    alpha, beta, x = 0.3, 1.0, 0.7
    model = ESMM(dim=1, ctr_prior=0.2, prior=0.02, ctr_alpha=alpha, ctcvr_alpha=0.1, average=omega)
    offset = math.log(0.2 / 0.8)
    # coordinates of the pCTR head: bias, shared, arm a, arm b (input 1, x, x, x)
    raw = {k: (0.0, 0.0, 0.0) for k in ("bias", "shared", "a", "b")}
    avg = dict.fromkeys(raw, 0.0)
    steps = dict.fromkeys(raw, 0)
    for arm, clicked in (("a", 1.0), ("b", 0.0), ("a", 0.0), ("a", 1.0)):
        model.learn_click(arm, np.array([x]), clicked)
        coords = ("bias", "shared", arm)
        logit = offset + raw["bias"][2] + (raw["shared"][2] + raw[arm][2]) * x
        g = _sig(logit) - clicked
        for c in coords:
            raw[c] = _ftrl(*raw[c], g * (1.0 if c == "bias" else x), alpha, beta)
            steps[c] += 1
            avg[c] += (raw[c][2] - avg[c]) * (1.0 + omega) / (steps[c] + omega)
    for arm in ("a", "b"):
        want = _sig(offset + avg["bias"] + (avg["shared"] + avg[arm]) * x)
        assert model.ctr(arm, np.array([x])) == pytest.approx(want, rel=1e-12)
        raw_logit = offset + raw["bias"][2] + (raw["shared"][2] + raw[arm][2]) * x
        assert model._gather(model.arm_index[arm], model._xv(np.array([x])))[3][0] == pytest.approx(raw_logit)
    assert steps == {"bias": 4, "shared": 4, "a": 3, "b": 1}
    assert model._globals["avg_steps_global"][0] == 4.0 and model._arrays["avg_steps"][:2].tolist() == [3.0, 1.0]
    # the pCTCVR and delay heads took zero-gradient steps only: their weights are still 0
    assert not model._globals["w_avg_bias"][1:].any() and not model._arrays["w_avg"][:2, 1:].any()


def _newton(z: float, n: float, w: float, g: float, alpha: float, beta: float) -> tuple[float, float, float]:
    """One ``steps="newton"`` step of one coordinate: FTRL-Proximal with ``n`` in place of ``√n``."""
    sigma = g * g / alpha
    z, n = z + g - sigma * w, n + g * g
    return z, n, -z / ((beta + n) / alpha)


def test_newton_steps_equal_a_hand_computation():
    alpha, beta, x, day = 0.8, 5.0, 0.6, 86400.0
    model = DelayedFeedbackModel(dim=1, prior=0.3, delay_prior=day, alpha=alpha, beta=beta, steps="newton")
    offsets = (math.log(0.3 / 0.7), -math.log(day))
    # per head (conversion, delay) the coordinates bias, shared and the arm's (inputs 1, x, x)
    raw = {(h, c): (0.0, 0.0, 0.0) for h in range(2) for c in ("bias", "shared", "arm")}
    for kind, t0, t1 in (("elapsed", 0.0, 0.5 * day), ("conversion", 0.5 * day, 0.8 * day),
                         ("elapsed", 0.0, 2.0 * day), ("elapsed", 2.0 * day, 3.0 * day)):
        a, lr = (offsets[h] + raw[h, "bias"][2] + (raw[h, "shared"][2] + raw[h, "arm"][2]) * x for h in range(2))
        if kind == "elapsed":
            model.learn_elapsed("ad", np.array([x]), t0, t1)
            grads = elapsed_factor_grad(_sig(a), lr, t0, t1)
        else:
            model.learn_conversion("ad", np.array([x]), delay=t1, elapsed_from=t0)
            grads = conversion_factor_grad(_sig(a), lr, t1, t0)
        for h, c in raw:
            raw[h, c] = _newton(*raw[h, c], grads[h] * (1.0 if c == "bias" else x), alpha, beta)
    a, lr = (offsets[h] + raw[h, "bias"][2] + (raw[h, "shared"][2] + raw[h, "arm"][2]) * x for h in range(2))
    assert model.cvr("ad", np.array([x])) == pytest.approx(_sig(a), rel=1e-12)
    assert model.mean_delay("ad", np.array([x])) == pytest.approx(math.exp(-lr), rel=1e-12)
    assert model._globals["n_bias"].tolist() == pytest.approx([raw[0, "bias"][1], raw[1, "bias"][1]], rel=1e-12)
    # a restored model rebuilds the weights from (z, n) with n in place of √n: the same predictions
    restored = learner_from_state(model.export_state())
    assert restored.cvr("ad", np.array([x])) == model.cvr("ad", np.array([x]))


def test_tick_averaging_averages_the_weights_at_the_ends_of_the_batches():
    omega, x = 2.0, np.array([0.5, -1.0])
    model = ESMM(dim=2, ctr_alpha=0.4, average=omega, average_at="tick")
    raw = ESMM(dim=2, ctr_alpha=0.4)  # the same raw learning, no averaging
    rng = np.random.default_rng(4)
    want, ticks = None, 0
    for _ in range(3):
        for m in (model, raw):
            m.learn_click("a", x, 1.0)
            m.learn_conversion("b", -x, 3600.0)
        if ticks == 0:  # before the first tick: the raw weights are served
            assert model.ctcvr("b", x) == raw.ctcvr("b", x)
        X = rng.normal(size=(4, 2))
        for m in (model, raw):
            m.learn_elapsed_batch(["a", "b", "a", "c"], X, np.zeros(4), np.full(4, 86400.0))
        ticks += 1
        w = raw._packed()[2].copy()
        want = w if want is None else want + (w - want) * (1.0 + omega) / (ticks + omega)
    assert np.array_equal(model._packed()[:3], raw._packed())  # learning itself is unchanged
    assert np.allclose(model._packed()[3], want, rtol=1e-13, atol=0)
    assert model._globals["avg_steps_global"][0] == 3.0
    model.learn_click("a", x, 1.0)  # between ticks the average does not move
    assert np.array_equal(model._packed()[3], want) or np.allclose(model._packed()[3], want, rtol=1e-13, atol=0)
    h, d = model.heads, model.dim
    row = model.arm_index["b"]
    avg = model._packed()[3]
    logits = model._offsets + avg[:h] + avg[h:h * (d + 1)].reshape(h, d) @ x + model._arrays["w_avg"][row] @ x
    assert model.ctcvr("b", x) == pytest.approx(1 / (1 + math.exp(-(logits[0] + logits[1]))), rel=1e-12)


OPTIONS = [(ESMM, {"average": 1.0, "ctr_alpha": 0.3, "ctcvr_alpha": 0.1}), (ESMM, {"ctcvr_alpha": 0.2}),
           (DelayedFeedbackModel, {"average": 0.0}), (ESMM, {"average": 1.0, "average_at": "tick"}),
           (DelayedFeedbackModel, {"steps": "newton", "alpha": 1.0, "beta": 20.0}),
           (DelayedFeedbackModel, {"steps": "newton", "average": 0.0, "l1": 0.1, "l2": 0.5}),
           (DelayedFeedbackModel, {"steps": "fisher", "alpha": 1.0, "beta": 20.0, "delay_features": "bias"}),
           (DelayedFeedbackModel, {"steps": "fisher", "average": 1.0, "l1": 0.1, "l2": 0.5, "tick": 0.0})]


@pytest.mark.parametrize(("cls", "options"), OPTIONS)
def test_codec_round_trip_mid_stream_continues_identically(cls, options):
    evs = events(seed=5, n=300, dim=3, arms=9)
    model = cls(dim=3, **options)
    drive(model, evs[:150], reference=False)
    restored = learner_from_state(decode_state(*encode_state(model.export_state())))
    assert restored.params() == model.params()
    for m in (model, restored):
        drive(m, evs[150:], reference=False)
    want, got = states(model), states(restored)
    assert want.keys() == got.keys()
    assert all(np.array_equal(want[k], got[k]) for k in want)
    if "average" in options:
        assert {"w_avg", "avg_steps", "w_avg_shared", "w_avg_bias", "avg_steps_global"} <= want.keys()
        merged = model.merge(cls(dim=3, **options))  # with an empty model: the same predictions
        x = np.array([0.2, -0.4, 1.0])
        assert all(merged.predict(a, x) == pytest.approx(model.predict(a, x), rel=1e-12) for a in model.arms)


@pytest.mark.parametrize(("cls", "options"), OPTIONS)
def test_batch_of_elapsed_times_is_the_single_calls_with_the_options(cls, options):
    evs = events(seed=9, n=200, dim=2, arms=5)
    batched, single = cls(dim=2, **options), cls(dim=2, **options)
    drive(batched, evs, reference=False)
    unrolled = []
    for ev in evs:
        if ev[0] == "batch":
            unrolled += [("elapsed", n, x, float(a), float(b)) for n, x, a, b in zip(*ev[1:], strict=True)]
        else:
            unrolled.append(ev)
    drive(single, unrolled, reference=False)
    want, got = states(single), states(batched)
    if options.get("average_at") == "tick":  # single calls are no ticks: the learning is the same
        want = {k: v for k, v in want.items() if not k.startswith(("w_avg", "avg_steps"))}
    assert all(np.array_equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("cls", [ESMM, DelayedFeedbackModel])
def test_old_states_load_with_the_options_off_and_off_is_unchanged(cls):
    model = cls(dim=2)
    drive(model, events(seed=2, n=80, dim=2, arms=4), reference=False)
    state = model.export_state()
    new = {"average", "average_at", "ctr_alpha", "ctcvr_alpha", "steps"}
    old = dataclasses.replace(state, params={k: v for k, v in state.params.items() if k not in new})
    loaded = learner_from_state(old)
    assert loaded.average is None and "w_avg" not in loaded.export_state().arrays
    assert loaded.steps == "ftrl"
    assert all(np.array_equal(v, state.arrays[k]) for k, v in loaded.export_state().arrays.items())
    # rates given equal to alpha take the plain (scalar) path: bit for bit the default model
    same = cls(dim=2, **({"ctr_alpha": 0.05, "ctcvr_alpha": 0.05} if cls is ESMM else {}))
    drive(same, events(seed=2, n=80, dim=2, arms=4), reference=False)
    assert all(np.array_equal(v, state.arrays[k]) for k, v in same.export_state().arrays.items())


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="steps"):
        DelayedFeedbackModel(dim=1, steps="adam")
    with pytest.raises(ValueError, match="average"):
        ESMM(dim=1, average=-1.0)
    with pytest.raises(ValueError, match="average"):
        DelayedFeedbackModel(dim=1, average=math.inf)
    with pytest.raises(ValueError, match="alpha"):
        ESMM(dim=1, ctcvr_alpha=0.0)
    with pytest.raises(ValueError, match="average"):
        ESMM(dim=1, average="1")  # type: ignore[arg-type]  # a JSON string from --param
    with pytest.raises(ValueError, match="alpha"):
        ESMM(dim=1, ctr_alpha=True)
    with pytest.raises(ValueError, match="average_at"):
        DelayedFeedbackModel(dim=1, average=1.0, average_at="day")
