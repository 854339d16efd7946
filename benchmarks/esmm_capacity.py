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
* **estimation** (``sampled``): the same fits on ``--steps`` impressions with drawn outcomes (clicks and
  conversions, all conversions known: the delays are not the question here), for ``--seeds`` seeds.

Run: ``python benchmarks/esmm_capacity.py`` (about a minute). Figures: ``benchmarks/README.md``.
"""

from __future__ import annotations

import numpy as np

from banditloop.simulators.world import World, WorldConfig


def world(seed: int) -> WorldConfig:
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


def errors(models, arm, X, p_conv) -> tuple[float, float, float, float]:
    """(error, bias) of pCVR over the given impressions: clicked-only, then ESMM."""
    only, esmm = np.empty(len(arm)), np.empty(len(arm))
    for a, (cvr, ctr, delta) in models.items():
        m = arm == a
        only[m] = 1.0 / (1.0 + np.exp(-(X[m] @ cvr)))
        lc = X[m] @ ctr
        esmm[m] = np.minimum((1.0 + np.exp(-lc)) / (1.0 + np.exp(-(lc + X[m] @ delta))), 1.0)
    t = p_conv.mean()
    return (float(np.abs(only - p_conv).mean() / t), float(only.mean() / t - 1),
            float(np.abs(esmm - p_conv).mean() / t), float(esmm.mean() / t - 1))


def main() -> None:
    import argparse
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--oracle", type=int, default=400_000)
    ap.add_argument("--fresh", type=int, default=2000)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    print(f"esmm capacity vs estimation, selection-bias world; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    print(f"{'seed':<6}{'fit':<10}{'clicked-only err':>17}{'bias':>8}{'esmm err':>10}{'bias':>8}{'ratio':>7}")
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = world(seed)
        arm, X, pc, pv, clicked, converted, w = draw(cfg, args.steps)
        # fresh requests after the run, every arm (the benchmark's metric), from the same world
        f_arm, f_X, _, f_pv, *_ = draw(cfg, args.fresh, world_obj=w, all_arms=True)
        sampled = fit(arm, X, clicked, converted, converted, clicked, cfg.arms)
        e = errors(sampled, f_arm, f_X, f_pv)
        print(f"{seed:<6}{'sampled':<10}{e[0]:17.3f}{e[1]:+8.1%}{e[2]:10.3f}{e[3]:+8.1%}{e[2] / e[0]:7.2f}", flush=True)
        if seed == 0:
            o_arm, o_X, o_pc, o_pv, *_ = draw(cfg, args.oracle)
            oracle = fit(o_arm, o_X, o_pc, o_pv, o_pc * o_pv, o_pc, cfg.arms)
            e = errors(oracle, f_arm, f_X, f_pv)
            print(f"{seed:<6}{'oracle':<10}{e[0]:17.3f}{e[1]:+8.1%}{e[2]:10.3f}{e[3]:+8.1%}{e[2] / e[0]:7.2f}",
                  flush=True)
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
