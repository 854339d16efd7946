"""In-process scoring latency: ``Scorer.choose`` for K candidates and d features (defaults 100, 32).

For each learner a model is trained with the closed-loop simulator (``banditloop.pipeline.simulate``) into a
temporary SQLite database and loaded by :class:`banditloop.serving.scorer.Scorer` exactly as ``banditloop
serve`` loads it. Each call is timed alone (``perf_counter_ns``) after a warm-up, over fresh
contexts from the simulated world, in two cases:

* ``fixed``: the same candidate list every request (the model's arms, in its order) — a catalogue
  served as a whole;
* ``shuffled``: the same arms in a new random order every request, so no per-candidate-list cache
  helps — a retrieval stage that hands over a different list each time.

Target: p99 <= 1 ms. Figures are printed; nothing is asserted.

    python benchmarks/score_latency.py [--candidates 100] [--dim 32] [--requests 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one request = one core; set before numpy is imported
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from banditloop.core.features import FeatureSpec, dense_names  # noqa: E402
from banditloop.pipeline.checkpoints import CheckpointStore  # noqa: E402
from banditloop.pipeline.model import ModelConfig  # noqa: E402
from banditloop.pipeline.simulate import SimulationOptions, simulate  # noqa: E402
from banditloop.serving.scorer import Scorer  # noqa: E402
from banditloop.simulators.world import World, WorldConfig  # noqa: E402

LEARNERS = ("linucb", "diag-linucb")


def train(db: str, learner: str, arms: int, dim: int, steps: int, seed: int) -> WorldConfig:
    """A model of ``learner`` named after it, with ``dim`` features (bias + dim-1 numeric context fields)."""
    world = WorldConfig(arms=arms, dim=dim - 1, seed=seed)
    config = ModelConfig(learner=learner, features=FeatureSpec(dim=dim, numeric=dense_names("x", dim - 1)))
    store = CheckpointStore(db)
    try:
        simulate(world, config, learner, store, SimulationOptions(steps=steps, quiet=True, checkpoint_interval=None))
    finally:
        store.close()
    return world


def percentiles(ns: np.ndarray) -> dict[str, float]:
    us = ns / 1000.0
    return {"p50": float(np.percentile(us, 50)), "p90": float(np.percentile(us, 90)),
            "p99": float(np.percentile(us, 99)), "p99.9": float(np.percentile(us, 99.9)),
            "mean": float(us.mean()), "max": float(us.max())}


def measure(scorer: Scorer, contexts: list[dict], candidates: list[str], shuffled: bool, warmup: int,
            seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lists = [list(candidates) for _ in range(len(contexts))]
    if shuffled:
        for cands in lists:
            rng.shuffle(cands)
    choose = scorer.choose
    for i in range(warmup):
        choose(contexts[i % len(contexts)], lists[i % len(lists)])
    out = np.empty(len(contexts), dtype=np.int64)
    clock = time.perf_counter_ns
    for i, (ctx, cands) in enumerate(zip(contexts, lists, strict=True)):
        start = clock()
        choose(ctx, cands)
        out[i] = clock() - start
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=100, help="K: arms in the model and per request")
    parser.add_argument("--dim", type=int, default=32, help="d: feature vector length (bias included)")
    parser.add_argument("--requests", type=int, default=20_000, help="timed calls per case")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--train-steps", type=int, default=5_000)
    parser.add_argument("--learner", action="append", choices=LEARNERS, help="default: both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(f"Scorer.choose latency, in process: K={args.candidates} candidates, d={args.dim} features, "
          f"{args.requests} timed calls per case after {args.warmup} warm-up calls")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}")
    header = f"{'learner':<12} {'candidates':<10} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'p99.9 µs':>9} " \
             f"{'mean µs':>8} {'max µs':>8}  p99 <= 1 ms"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        for learner in args.learner or LEARNERS:
            world_config = train(db, learner, args.candidates, args.dim, args.train_steps, args.seed)
            scorer = Scorer(db, learner)
            scorer.reload()
            world = World(WorldConfig(arms=args.candidates, dim=args.dim - 1, seed=args.seed + 1))
            contexts = [dict(world.next_request().context) for _ in range(args.requests)]
            candidates = list(scorer.served.learner.arms)
            assert len(candidates) == args.candidates == world_config.arms
            for case in ("fixed", "shuffled"):
                stats = percentiles(measure(scorer, contexts, candidates, case == "shuffled", args.warmup,
                                            args.seed))
                verdict = "yes" if stats["p99"] <= 1000.0 else "NO"
                print(f"{learner:<12} {case:<10} {stats['p50']:>8.1f} {stats['p90']:>8.1f} {stats['p99']:>8.1f} "
                      f"{stats['p99.9']:>9.1f} {stats['mean']:>8.1f} {stats['max']:>8.1f}  {verdict}")
            scorer.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
