"""Regret per quarter under drift and after a change point: stationary learners against their
discounted (non-stationary) variants. Printed figures, no assertions.

Scenarios (``simulators.world``; every contender sees the same world draws per seed):

* ``stationary``: the default contextual world (K=10 arms, d=8 context features, logistic clicks of a
  few percent), no drift; the reference for each learner.
* ``drift``: the same world with ``drift=0.005`` (the issue's ``simulate --drift 0.005``): every
  arm's true coefficients random-walk, so the best arm for a context changes over time.
* ``change``: context-free arms with click rates 0.10, 0.08, 0.06, 0.05, 0.04; at the change step the
  best arm drops to 0.02 (``change_points``). Reported: steps after the change until the mean
  expected reward over the last 500 steps is back within 10% of the oracle's.

Contenders run through the learner API with immediate feedback (``choose`` then ``learn_one``),
contexts with a leading bias of 1. Targets (issue 9): under drift the best non-stationary learner's
last-quarter regret ≤ 1.3× its stationary figure and ≤ 0.6× the stationary LinUCB's under the same
drift; after a change point back within 10% of the oracle's reward in ≤ 2,000 steps.

    python benchmarks/drift.py [--steps 40000] [--seeds 0 1] [--change-steps 20000] [--only NAME ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from banditloop.operators.registry import make_learner  # noqa: E402
from banditloop.simulators.world import World, WorldConfig  # noqa: E402

#: name -> (registry name, hyper-parameters, non-stationary)
CONTEXTUAL = {
    "linucb": ("linucb", {}, False),
    "discounted-linucb γ=0.999": ("discounted-linucb", {"discount": 0.999}, True),
    "discounted-linucb γ=0.9995": ("discounted-linucb", {"discount": 0.9995}, True),
    "discounted-linucb γ=0.9998": ("discounted-linucb", {"discount": 0.9998}, True),
    "ts": ("ts", {"propensity_draws": 0}, False),
    "discounted-ts γ=0.999": ("discounted-ts", {"discount": 0.999, "propensity_draws": 0}, True),
    "random": ("random", {}, False),
}
CONTEXT_FREE = {
    "ts": ("ts", {"propensity_draws": 0}, False),
    "discounted-ts γ=0.99": ("discounted-ts", {"discount": 0.99, "propensity_draws": 0}, True),
    "discounted-ts γ=0.995": ("discounted-ts", {"discount": 0.995, "propensity_draws": 0}, True),
    "discounted-ts γ=0.999": ("discounted-ts", {"discount": 0.999, "propensity_draws": 0}, True),
    "kl-ucb": ("kl-ucb", {}, False),
    "ucb1": ("ucb1", {}, False),
    "discounted-ucb γ=0.995": ("discounted-ucb", {"discount": 0.995, "c": 0.5}, True),
    "discounted-ucb γ=0.999": ("discounted-ucb", {"discount": 0.999, "c": 0.5}, True),
}
CHANGE_RATES = (0.10, 0.08, 0.06, 0.05, 0.04)


def play(kind: str, params: dict, cfg: WorldConfig, steps: int, seed: int) -> np.ndarray:
    """Per-step regret and expected reward of one contender: array (steps, 2)."""
    world = World(cfg)
    learner = make_learner(kind, cfg.dim + 1, seed=seed, **params)
    out = np.empty((steps, 2))
    x = np.ones(cfg.dim + 1)
    for t in range(steps):
        req = world.next_request()
        x[1:] = req.x
        arm = learner.choose(x, req.candidates).arm
        outcome = world.respond(req, arm)
        learner.learn_one(arm, x, outcome.reward)
        out[t] = (outcome.regret, outcome.expected_reward)
    return out


def quarters(regret: np.ndarray) -> list[float]:
    return [float(q.sum()) for q in np.array_split(regret, 4)]


def recovery(expected: np.ndarray, change: int, oracle: float, window: int = 500) -> int | None:
    """Steps after ``change`` until the mean expected reward of the last ``window`` steps ≥ 0.9 oracle."""
    csum = np.concatenate(([0.0], np.cumsum(expected)))
    for t in range(change + window, expected.size + 1):
        if (csum[t] - csum[t - window]) / window >= 0.9 * oracle:
            return t - change
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40_000)
    ap.add_argument("--change-steps", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--drift", type=float, default=0.005)
    ap.add_argument("--only", nargs="+", default=None, help="contenders to run (names as printed)")
    args = ap.parse_args()
    keep = (lambda name: True) if args.only is None else (lambda name: name in args.only or name == "linucb")
    started = time.perf_counter()
    results: dict = {"drift": {}, "stationary": {}, "change": {}}
    print(f"contextual world K=10 d=8, T={args.steps:,} (quarters of {args.steps // 4:,}), seeds {args.seeds}")
    print(f"{'learner':<28} {'scenario':<11} " + " ".join(f"{'Q' + str(i + 1):>8}" for i in range(4)))
    for name, (kind, params, _) in CONTEXTUAL.items():
        if not keep(name):
            continue
        for scenario, drift in (("stationary", 0.0), ("drift", args.drift)):
            q = np.mean([quarters(play(kind, params, WorldConfig(arms=10, dim=8, seed=s, drift=drift),
                                       args.steps, s)[:, 0]) for s in args.seeds], axis=0)
            results[scenario][name] = q.tolist()
            print(f"{name:<28} {scenario:<11} " + " ".join(f"{v:>8.1f}" for v in q), flush=True)
    change = args.change_steps // 2
    print(f"\nchange point: context-free rates {CHANGE_RATES}, best arm -> 0.02 at step {change:,} "
          f"of {args.change_steps:,}; oracle after the change {CHANGE_RATES[1]}")
    for name, (kind, params, _) in CONTEXT_FREE.items():
        if not keep(name):
            continue
        rec, reg = [], []
        for s in args.seeds:
            cfg = WorldConfig(arms=len(CHANGE_RATES), dim=1, seed=s, arm_probabilities=CHANGE_RATES,
                              change_points=((change, 0, 0.02),))
            out = play(kind, params, cfg, args.change_steps, s)
            rec.append(recovery(out[:, 1], change, CHANGE_RATES[1]))
            reg.append(float(out[change:, 0].sum()))
        results["change"][name] = {"recovery_steps": rec, "regret_after_change": float(np.mean(reg))}
        shown = ", ".join("never" if r is None else f"{r:,}" for r in rec)
        print(f"{name:<28} recovery steps {shown:<20} regret after the change {np.mean(reg):>8.1f}", flush=True)
    ns = [n for n, (_, _, moving) in CONTEXTUAL.items() if moving and n in results["drift"]]
    best = min(ns, key=lambda n: results["drift"][n][3])
    d, st, lin = results["drift"][best][3], results["stationary"][best][3], results["drift"]["linucb"][3]
    print(f"\nbest non-stationary learner under drift: {best}: last quarter {d:.1f}, "
          f"stationary {st:.1f} (×{d / st:.2f}, target ≤ 1.3), linucb under drift {lin:.1f} "
          f"(×{d / lin:.2f}, target ≤ 0.6)")
    ok = [n for n, v in results["change"].items() if all(r is not None and r <= 2000 for r in v["recovery_steps"])]
    print(f"back within 10% of the oracle in ≤ 2,000 steps after the change (every seed): {', '.join(ok) or 'none'}")
    print(f"total {time.perf_counter() - started:.0f} s")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
