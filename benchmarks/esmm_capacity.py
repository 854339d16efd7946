"""Is ESMM's pCVR error in the selection-bias world capacity or estimation? (issue 11, the 0.5× target)

The world and metric of measurement 2 of ``benchmarks/calibration_cvr.py`` (``selection_bias=True``,
``base_ctr=0.1``, ``theta_scale=1.5``, ``conversion_rate=0.1``; error of pCVR = mean |predicted − true| ÷
mean true over every arm of ``--fresh`` fresh requests). No delays and no online optimiser here: each
model class is fitted in batch by maximum likelihood (Newton/IRLS, per arm on ``[1, x]``: the
features of ``esmm`` and ``dfm``, whose bias, shared and per-arm weights span exactly the per-arm
linear logits), so the figures bound what the online models can reach:

* **capacity** (``oracle``): fitted on ``--oracle`` impressions with the *true probabilities* as soft
  labels (no outcome noise: the best the class can do). Clicked-only: logistic pCVR fitted on the
  clicked population (each impression weighted by its click probability, label its pCVR). ESMM: pCTR
  logistic on every impression, pCTCVR = sigmoid(logit pCTR + δ·x) with δ fitted on every impression
  (label pCTR × pCVR), pCVR = pCTCVR ÷ pCTR, as ``operators/esmm.py``.
  **product** (Ma et al.'s form, ``pCTCVR = pCTR × sigmoid(v·x)``, the pCVR head fitted on every
  impression with the true pCTR; oracle only).
* **estimation** (``sampled``): the same fits on ``--steps`` impressions with drawn outcomes (clicks and
  conversions, all conversions known: the delays are not the question here), for ``--seeds`` seeds.
* **online** (``--online 0.05,0.2``): ``esmm`` and the clicked-only ``dfm`` themselves (FTRL-Proximal,
  ``alpha`` as given) on the same drawn outcomes, each impression learned once in order with its final
  labels (click label; conversion at an exponential delay, or unconverted at the window's end): the
  online optimiser without the delays; ``online2p``: the pCTR head learns every click label first, then
  the pCTCVR head every conversion term (the pCTR offset no longer moves under ``δ``: a diagnosis, not
  an online model).

``--world default``: the delayed-conversion world of ``calibration_pipeline`` instead (pCVR independent
of the click probability, logistic in x), the errors over every impression and over clicked ones
(weighted by the click probability). Run: ``python benchmarks/esmm_capacity.py`` (about a minute).
Figures: ``benchmarks/README.md``.
"""

from __future__ import annotations

import numpy as np

from banditloop.simulators.world import World, WorldConfig


def world(seed: int, kind: str = "selection") -> WorldConfig:
    if kind == "default":  # calibration_pipeline.world_config(50_000, 60.0, seed)
        return WorldConfig(seed=seed, base_ctr=0.25, conversion_rate=0.25, conversion_context=0.5,
                           conversion_delay_mean=86400.0, click_delay_mean=30.0, rate=50_000 / (60 * 86400.0))
    return WorldConfig(seed=seed, selection_bias=True, base_ctr=0.1, theta_scale=1.5, conversion_rate=0.1,
                       click_delay_mean=0.0)


def draw(cfg: WorldConfig, n: int, world_obj: World | None = None, all_arms: bool = False):
    """``n`` requests: (arm index, x with a leading 1, p_click, p_conv, clicked, converted) of a uniformly
    random arm per request (``all_arms``: every candidate of each request)."""
    w = world_obj or World(cfg)
    rng = np.random.default_rng([cfg.seed, 7])
    rows = []
    index = {f"a{i}": i for i in range(cfg.arms)}  # the world's arm ids (no churn in this world)
    for _ in range(n):
        req = w.next_request()
        x = np.concatenate(([1.0], req.x))
        tr = req.truth
        js = range(len(req.candidates)) if all_arms else [int(rng.integers(cfg.arms))]
        for j in js:
            arm = index.setdefault(req.candidates[j], len(index))
            clicked = tr.u_click[j] < tr.p_click[j]
            rows.append((arm, x, tr.p_click[j], tr.p_conv[j], clicked, clicked and tr.u_conv[j] < tr.p_conv[j]))
    arm = np.array([r[0] for r in rows])
    X = np.array([r[1] for r in rows])
    return arm, X, *(np.array([r[k] for r in rows], dtype=float) for k in range(2, 6)), w


def logistic(X: np.ndarray, y: np.ndarray, w: np.ndarray, offset: np.ndarray | None = None,
             ridge: float = 1e-6, iters: int = 50) -> np.ndarray:
    """Weighted logistic regression with soft labels ``y`` and a fixed ``offset`` (Newton steps)."""
    beta = np.zeros(X.shape[1])
    off = np.zeros(len(y)) if offset is None else offset
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ beta + off)))
        g = X.T @ (w * (p - y)) + ridge * beta
        H = (X * (w * p * (1 - p))[:, None]).T @ X + ridge * np.eye(X.shape[1])
        step = np.linalg.solve(H, g)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def fit(arm, X, y_click, y_conv_given_click, y_ctcvr, clicked_weight, arms: int):
    """Per arm: clicked-only pCVR weights, ESMM pCTR weights and δ."""
    out = {}
    for a in range(arms):
        m = arm == a
        cvr = logistic(X[m], y_conv_given_click[m], clicked_weight[m])
        ctr = logistic(X[m], y_click[m], np.ones(m.sum()))
        delta = logistic(X[m], y_ctcvr[m], np.ones(m.sum()), offset=X[m] @ ctr)
        out[a] = (cvr, ctr, delta)
    return out


def fit_product(arm, X, p_click, y_ctcvr, arms: int) -> dict[int, np.ndarray]:
    """Per arm the pCVR weights ``v`` of ``pCTCVR = p_click × sigmoid(v·x)`` (maximum likelihood)."""
    from scipy.optimize import minimize

    out = {}
    for a in range(arms):
        m = arm == a
        Xa, c, y = X[m], p_click[m], y_ctcvr[m]

        def loss(v, Xa=Xa, c=c, y=y):
            s = 1.0 / (1.0 + np.exp(-(Xa @ v)))
            P = np.clip(c * s, 1e-12, 1 - 1e-12)
            return (-(y * np.log(P) + (1 - y) * np.log(1 - P)).sum(),
                    Xa.T @ ((-(y / P) + (1 - y) / (1 - P)) * c * s * (1 - s)))
        out[a] = minimize(loss, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B").x
    return out


def errors(models, arm, X, p_conv, weight=None, product=None) -> tuple[float, ...]:
    """(error, bias) of pCVR over the given impressions (``weight``: per impression): clicked-only, ESMM,
    then the product form when given."""
    only, esmm, prod = np.empty(len(arm)), np.empty(len(arm)), np.empty(len(arm))
    w = np.ones(len(arm)) if weight is None else weight
    for a, (cvr, ctr, delta) in models.items():
        m = arm == a
        only[m] = 1.0 / (1.0 + np.exp(-(X[m] @ cvr)))
        lc = X[m] @ ctr
        esmm[m] = np.minimum((1.0 + np.exp(-lc)) / (1.0 + np.exp(-(lc + X[m] @ delta))), 1.0)
        if product is not None:
            prod[m] = 1.0 / (1.0 + np.exp(-(X[m] @ product[a])))
    t = w @ p_conv
    out = []
    for pred in (only, esmm) + ((prod,) if product is not None else ()):
        out += [float(np.abs(pred - p_conv) @ w / t), float(pred @ w / t - 1)]
    return tuple(out)


def online_model(kind: str, options: dict, arm, X, clicked, converted, f_arm, f_X, seed: int,
                 two_pass: bool = False) -> np.ndarray:
    """pCVR on the fresh impressions of ``esmm`` (``kind="esmm"``, every impression) or of the
    clicked-only ``dfm`` learned online with ``options`` (see the module docstring)."""
    from banditloop.operators.dfm import DelayedFeedbackModel
    from banditloop.operators.esmm import ESMM

    window, day = 7 * 86400.0, 86400.0
    model: ESMM | DelayedFeedbackModel
    if kind == "esmm":
        model = ESMM(dim=X.shape[1], ctr_prior=0.1, prior=0.01, delay_prior=day, window=window, **options)
    else:
        model = DelayedFeedbackModel(dim=X.shape[1], prior=0.1, delay_prior=day, window=window, **options)
    esmm = isinstance(model, ESMM)
    rng = np.random.default_rng([seed, 11])  # the same delays for both models
    if esmm and two_pass:
        for a, x, c in zip(arm.tolist(), X, clicked.tolist(), strict=True):
            model.learn_click(f"a{a}", x, bool(c))
    for a, x, c, v in zip(arm.tolist(), X, clicked.tolist(), converted.tolist(), strict=True):
        name = f"a{a}"
        if esmm and not two_pass:
            model.learn_click(name, x, bool(c))
        if v:
            model.learn_conversion(name, x, float(rng.exponential(day)), 0.0)
        elif esmm or c:
            model.learn_elapsed(name, x, 0.0, window)
    return np.array([model.cvr(f"a{a}", x) for a, x in zip(f_arm.tolist(), f_X, strict=True)])


def online(arm, X, clicked, converted, alpha: float, f_arm, f_X, seed: int, two_pass: bool = False,
           form: str = "logit") -> dict[str, np.ndarray]:
    """``online_model`` of both models at one ``alpha`` (``esmm`` of ``form``)."""
    data = (arm, X, clicked, converted, f_arm, f_X, seed)
    return {"only": online_model("dfm", {"alpha": alpha}, *data),
            "esmm": online_model("esmm", {"alpha": alpha, "form": form}, *data, two_pass=two_pass)}


#: ``--grid``: the same rates and averaging for both models (``esmm``: its pCTR and pCTCVR heads apart;
#: ``dfm``'s single ``alpha`` is its conversion head's); ``{}`` is the default model
RATES, AVERAGES = (0.05, 0.2, 0.5), (None, 1.0, 3.0)
ESMM_GRID = [{}] + [{"ctr_alpha": c, "ctcvr_alpha": v, "average": o} for c in RATES[1:] for v in RATES[:2]
                    for o in AVERAGES]
DFM_GRID = [{"alpha": a, "average": o} for a in RATES for o in AVERAGES]


def grid(data, f_pv: np.ndarray, seed: int) -> dict[str, list[float]]:
    """Error of pCVR of every setting of both grids (printed as they come)."""
    t, out = f_pv.mean(), {}
    for kind, settings in (("dfm", DFM_GRID), ("esmm", ESMM_GRID)):
        out[kind] = []
        for options in settings:
            p = online_model(kind, options, *data, seed)
            out[kind].append(float(np.abs(p - f_pv).mean() / t))
            print(f"{seed:<6}grid {kind:<5}{out[kind][-1]:8.3f}{p.mean() / t - 1:+8.1%}  {options or 'default'}",
                  flush=True)
    return out


def main() -> None:
    import argparse
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--oracle", type=int, default=400_000)
    ap.add_argument("--fresh", type=int, default=2000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--world", choices=["selection", "default"], default="selection")
    ap.add_argument("--form", default="logit", help="esmm's form in the online fits (logit, product)")
    ap.add_argument("--online", default="", help="FTRL alphas of the online fits (e.g. 0.05,0.2; default none)")
    ap.add_argument("--grid", action="store_true", help="online fits of both models over ESMM_GRID and DFM_GRID")
    args = ap.parse_args()
    grids: list[dict[str, list[float]]] = []
    print(f"esmm capacity vs estimation; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    print(f"{args.world} world")
    print(f"{'seed':<6}{'fit':<10}{'clicked-only err':>17}{'bias':>8}{'esmm err':>10}{'bias':>8}{'ratio':>7}"
          f"{'product err':>12}{'bias':>8}")
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = world(seed, args.world)
        arm, X, pc, pv, clicked, converted, w = draw(cfg, args.steps)
        # fresh requests after the run, every arm (the benchmark's metric), from the same world
        f_arm, f_X, f_pc, f_pv, *_ = draw(cfg, args.fresh, world_obj=w, all_arms=True)
        sampled = fit(arm, X, clicked, converted, converted, clicked, cfg.arms)
        e = errors(sampled, f_arm, f_X, f_pv)
        print(f"{seed:<6}{'sampled':<10}{e[0]:17.3f}{e[1]:+8.1%}{e[2]:10.3f}{e[3]:+8.1%}{e[2] / e[0]:7.2f}", flush=True)
        if args.grid:
            grids.append(grid((arm, X, clicked, converted, f_arm, f_X), f_pv, seed))
        for alpha, two in [(float(v), two) for v in args.online.split(",") if v for two in (False, True)]:
            p = online(arm, X, clicked, converted, alpha, f_arm, f_X, seed, two, args.form)
            t = f_pv.mean()
            eo, ee = (float(np.abs(p[k] - f_pv).mean() / t) for k in ("only", "esmm"))
            label = f"online{'2p' if two else ''} {alpha:g}"
            print(f"{seed:<6}{label:<10}{eo:17.3f}{p['only'].mean() / t - 1:+8.1%}{ee:10.3f}"
                  f"{p['esmm'].mean() / t - 1:+8.1%}{ee / eo:7.2f}", flush=True)
        if seed == 0:
            o_arm, o_X, o_pc, o_pv, *_ = draw(cfg, args.oracle)
            oracle = fit(o_arm, o_X, o_pc, o_pv, o_pc * o_pv, o_pc, cfg.arms)
            product = fit_product(o_arm, o_X, o_pc, o_pc * o_pv, cfg.arms)
            for label, weight in (("oracle", None), ("oracle/clk", f_pc))[:2 if args.world == "default" else 1]:
                e = errors(oracle, f_arm, f_X, f_pv, weight, product)
                print(f"{seed:<6}{label:<10}{e[0]:17.3f}{e[1]:+8.1%}{e[2]:10.3f}{e[3]:+8.1%}"
                      + (f"{e[2] / e[0]:7.2f}" if e[0] > 1e-6 else f"{'-':>7}")
                      + f"{e[4]:12.3f}{e[5]:+8.1%}", flush=True)
    if grids:
        report_grid(grids)
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def report_grid(grids: list[dict[str, list[float]]]) -> None:
    """Per setting the mean error over the seeds; the ratio ESMM ÷ clicked-only of the defaults and of
    each model's best setting (chosen on the mean over the seeds), mean ± sd over the seeds."""
    for kind, settings in (("dfm", DFM_GRID), ("esmm", ESMM_GRID)):
        errs = np.array([g[kind] for g in grids])
        for k, options in enumerate(settings):
            print(f"mean  {kind:<5}{errs[:, k].mean():8.3f} ± {errs[:, k].std(ddof=1) if len(grids) > 1 else 0:.3f}"
                  f"  {options or 'default'}")
    e, d = np.array([g["esmm"] for g in grids]), np.array([g["dfm"] for g in grids])
    be, bd = int(e.mean(axis=0).argmin()), int(d.mean(axis=0).argmin())
    default_dfm = DFM_GRID.index({"alpha": 0.05, "average": None})
    for label, i, j in (("defaults", 0, default_dfm), ("best of grid", be, bd)):
        r = e[:, i] / d[:, j]
        print(f"ratio esmm ÷ clicked-only, {label} ({ESMM_GRID[i] or 'default'} ÷ {DFM_GRID[j]}): "
              + ", ".join(f"{v:.2f}" for v in r) + f"; mean {r.mean():.2f} ± {r.std(ddof=1) if len(r) > 1 else 0:.2f}")


if __name__ == "__main__":
    main()
