"""Learning from a log (no choosing): batch throughput of our learners against per-event peers.

Part 1, pre-featurized arrays: ``N`` logged events (uniformly random logging policy, K=20 arms,
d=16 = bias + 15 context features, rewards from the simulated world's true click probabilities; a
50k-step stream tiled to ``N``), given as ``X``, ``rewards`` and the arms either as ids (for
``learn_batch``) or as row indexes from ``rows_of`` (for ``learn_batch_rows``, where a learner has
it), learned in chunks of 100k. Single core (BLAS pinned to one thread). Targets (issue):
≥ 1,000,000 events/s for Beta TS and Diag-LinUCB, ≥ 200,000 for LinUCB at d=16. Peers on the same
data: river ``LinUCBDisjoint.update`` and VW ``learn`` per event (their only way to learn), and
MABWiser ``partial_fit`` on chunks (its batch API). ``learn_one`` per event is shown for reference.

Part 2, end to end (clearly not the same thing): JSON lines of a simulated event log decoded with
``banditloop.core.events.decode_event``, contexts featurized with ``banditloop.core.features.Featurizer`` and
learned — event at a time (clicks joined to their impression through an in-memory dict, as they
arrive) and as one batch (decode, featurize into one matrix and join, then one ``learn_batch``).
This is a minimal loop, not ``banditloop.pipeline.replay``; it shows where the time goes (decoding,
featurizing, learning).

    python benchmarks/learn_from_log.py [--quick] [--events N] [--budget S]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import inspect  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from banditloop.core.events import Click, Conversion, Impression, decode_event  # noqa: E402
from banditloop.core.features import FeatureSpec, Featurizer, dense_names  # noqa: E402
from banditloop.operators.base import Learner  # noqa: E402
from banditloop.operators.registry import LEARNERS, learner_class  # noqa: E402
from banditloop.simulators.config import WorldConfig  # noqa: E402
from banditloop.simulators.logs import generate_log, read_log  # noqa: E402
from benchmarks.common import emit_json, table, world_stream  # noqa: E402

ARMS, CONTEXT_DIM, CHUNK = 20, 15, 100_000
TARGETS = {"ts": 1_000_000, "diag-linucb": 1_000_000, "linucb": 200_000}
#: learners that need per-arm shared vectors (not part of this benchmark's data)


class Data:
    """The logged events as arrays, plus the same events in each peer's input format (lazily)."""

    def __init__(self, n: int, seed: int) -> None:
        stream = world_stream(ARMS, CONTEXT_DIM, seed, min(n, 50_000))
        rng = np.random.default_rng([seed, 0x106])
        t = np.arange(n) % stream.steps
        cols = rng.integers(ARMS, size=n)
        self.arm_ids = [stream.arms[j] for j in stream.candidates[0]]
        self.X = np.ascontiguousarray(stream.with_bias()[t])
        self.rewards = stream.rewards[t, cols]
        self.cols = cols
        self.arms = [self.arm_ids[c] for c in cols.tolist()]
        self.n = n
        self._dicts: list[dict[str, float]] | None = None

    def dicts(self, m: int) -> list[dict[str, float]]:
        names = ["bias", *dense_names("x", CONTEXT_DIM)]
        if self._dicts is None or len(self._dicts) < m:
            self._dicts = [dict(zip(names, row, strict=True)) for row in self.X[:m].tolist()]
        return self._dicts[:m]


def batch_methods(learner: Learner) -> dict[str, Callable[[Learner, Data, int, int], None]]:
    """The ways a learner can learn a chunk ``[s, e)``: ``learn_batch`` and, if present, ``learn_batch_rows``."""
    methods: dict[str, Callable[[Learner, Data, int, int], None]] = {
        "learn_batch (arm ids)": lambda L, D, s, e: L.learn_batch(D.arms[s:e], D.X[s:e], D.rewards[s:e])}
    fast = getattr(learner, "learn_batch_rows", None)
    if fast is not None:
        with_x = "X" in inspect.signature(fast).parameters

        def rows_path(L: Learner, D: Data, s: int, e: int) -> None:
            rows = D.rows[s:e]  # type: ignore[attr-defined]
            if with_x:
                L.learn_batch_rows(rows, D.X[s:e], D.rewards[s:e])  # type: ignore[attr-defined]
            else:
                L.learn_batch_rows(rows, D.rewards[s:e])  # type: ignore[attr-defined]

        methods["learn_batch_rows (row indexes)"] = rows_path
    return methods


def measure_batches(make: Callable[[], Learner], method: Callable, data: Data, budget: float) -> tuple[int, float]:
    """Learn chunks of ``CHUNK`` events, cycling over the data, until ``budget`` seconds have passed.

    A probe of 2,000 events first estimates the speed, so that a slow learner is given a chunk it
    can finish within the budget rather than a full one."""
    learner = make()
    probe = min(2_000, data.n)
    t0 = time.perf_counter()
    method(learner, data, 0, probe)
    rate = probe / max(time.perf_counter() - t0, 1e-9)
    chunk = int(min(CHUNK, data.n, max(probe, rate * budget)))
    learner = make()
    done, start = 0, 0
    clock = time.perf_counter
    t0 = clock()
    while True:
        if start + chunk > data.n:
            start = 0
        method(learner, data, start, start + chunk)
        start += chunk
        done += chunk
        if clock() - t0 >= budget:
            break
    return done, clock() - t0


def measure_per_event(step: Callable[[int], None], n_data: int, budget: float) -> tuple[int, float]:
    """Call ``step(i % n_data)`` for i = 0, 1, ... until ``budget`` seconds have passed."""
    clock = time.perf_counter
    t0 = clock()
    deadline = t0 + budget
    i = 0
    while True:
        stop = i + 256
        while i < stop:
            step(i % n_data)
            i += 1
        if clock() >= deadline:
            break
    return i, clock() - t0


def peers(data: Data, budget: float, seed: int) -> dict[str, tuple[int, float]]:
    out: dict[str, tuple[int, float]] = {}
    from river.bandit import LinUCBDisjoint

    river = LinUCBDisjoint(alpha=1.0, beta=1.0, seed=seed)
    ctx = data.dicts(min(data.n, 20_000))
    arms, rewards = data.arms, data.rewards.tolist()
    out["river LinUCBDisjoint.update, per event"] = measure_per_event(
        lambda i: river.update(arms[i], ctx[i], rewards[i]), len(ctx), budget)

    from vowpalwabbit import Workspace

    vw = Workspace("--cb_explore_adf --epsilon 0.05 -q sa --quiet", quiet=True)
    actions = [f"|a arm={a}" for a in data.arm_ids]
    m = min(data.n, 50_000)
    shared = ["shared |s " + " ".join(f"x{i}:{v:.4f}" for i, v in enumerate(row[1:]))
              for row in data.X[:m].tolist()]
    cols = data.cols.tolist()
    prob = 1.0 / ARMS

    def vw_learn(i: int) -> None:
        lines = [shared[i], *actions]
        c = cols[i]
        lines[1 + c] = f"0:{-rewards[i]}:{prob} {actions[c]}"
        vw.learn(lines)

    out["vowpalwabbit learn (cb_explore_adf), per event"] = measure_per_event(vw_learn, m, budget)
    vw.finish()

    from mabwiser.mab import MAB, LearningPolicy

    X16 = data.X[:, 1:]  # MABWiser has no bias column; it fits per-arm ridge regressions without one too
    mab = MAB(list(data.arm_ids), LearningPolicy.LinUCB(alpha=1.0), seed=seed)
    mab.fit(arms[:1_000], data.rewards[:1_000], X16[:1_000])
    chunk = 10_000
    n = min(data.n - 1_000, 200_000)

    def mab_chunk(i: int) -> None:
        s = 1_000 + i * chunk
        mab.partial_fit(arms[s: s + chunk], data.rewards[s: s + chunk], X16[s: s + chunk])

    clock = time.perf_counter
    k, t0 = 0, clock()
    while k == 0 or clock() - t0 < budget:
        mab_chunk(k % max(1, n // chunk))
        k += 1
    out[f"MABWiser partial_fit, chunks of {chunk:,}"] = (k * chunk, clock() - t0)
    return out


def end_to_end(steps: int, seed: int, repeats: int) -> tuple[list[list[object]], dict]:
    """Decode + featurize + learn over a simulated JSON-lines log; best of ``repeats`` per path."""
    # no arm features in this log: none of the learners measured here uses them (see the last row)
    cfg = WorldConfig(arms=ARMS, dim=CONTEXT_DIM, seed=seed, click_delay_mean=30.0, conversion_delay_mean=600.0,
                      arm_feature_dim=0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = generate_log(cfg, "random", steps, Path(tmp) / "log.jsonl")
        gen_s = time.perf_counter() - t0
        lines = read_log(summary.path)
        heavy = generate_log(replace(cfg, arm_feature_dim=4), "random", max(1, steps // 5), Path(tmp) / "heavy.jsonl")
        heavy_lines = read_log(heavy.path)
    featurizer = Featurizer(FeatureSpec(dim=CONTEXT_DIM + 1, numeric=dense_names("x", CONTEXT_DIM)))
    n_lines, n_imp = len(lines), summary.impressions
    rows: list[list[object]] = []
    figures: dict[str, float] = {}

    def record(label: str, seconds: float) -> None:
        rows.append([label, n_lines / seconds, n_imp / seconds, seconds])
        figures[label] = round(n_lines / seconds, 1)

    clicks = convs = 0

    def decode_only() -> None:
        nonlocal clicks, convs
        clicks = convs = 0
        for line in lines:
            e = decode_event(line)
            clicks += isinstance(e, Click)
            convs += isinstance(e, Conversion)

    def decode_featurize() -> None:
        for line in lines:
            e = decode_event(line)
            if isinstance(e, Impression):
                featurizer.transform(e.context)

    def per_event(name: str) -> Callable[[], None]:
        def run() -> None:
            learner = learner_class(name)(dim=CONTEXT_DIM + 1, seed=seed)
            pending: dict[str, tuple[str, np.ndarray]] = {}
            for line in lines:
                e = decode_event(line)
                if isinstance(e, Impression):
                    x = featurizer.transform(e.context)
                    learner.learn_impression(e.arm, x)
                    pending[e.impression_id] = (e.arm, x)
                elif isinstance(e, Click):
                    hit = pending.get(e.impression_id)
                    if hit is not None:
                        learner.learn_reward(hit[0], hit[1], 1.0)
        return run

    def batch(name: str) -> Callable[[], None]:
        def run() -> None:
            # featurize into one preallocated matrix while decoding, join clicks by row, learn once
            learner = learner_class(name)(dim=CONTEXT_DIM + 1, seed=seed)
            X = np.zeros((n_imp, CONTEXT_DIM + 1))
            rewards = np.zeros(n_imp)
            index: dict[str, int] = {}
            arms: list[str] = []
            for line in lines:
                e = decode_event(line)
                if isinstance(e, Impression):
                    i = len(arms)
                    index[e.impression_id] = i
                    arms.append(e.arm)
                    featurizer.transform(e.context, X[i])
                elif isinstance(e, Click):
                    i = index.get(e.impression_id)
                    if i is not None:
                        rewards[i] = 1.0
            learner.learn_batch(arms, X, rewards)
        return run

    paths: list[tuple[str, Callable[[], None]]] = [("decode_event only", decode_only),
                                                   ("decode + featurize", decode_featurize)]
    paths += [(f"decode + featurize + {name} learn, event at a time", per_event(name))
              for name in ("diag-linucb", "linucb", "ts")]
    paths += [(f"decode + featurize + join, then one {name} learn_batch", batch(name))
              for name in ("diag-linucb", "linucb")]
    for label, run in paths:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        record(label, best)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for line in heavy_lines:
            decode_event(line)
        best = min(best, time.perf_counter() - t0)
    label = f"decode_event only, impressions WITH arm_features ({ARMS} arms x 4), {len(heavy_lines):,} lines"
    rows.append([label, len(heavy_lines) / best, heavy.impressions / best, best])
    figures["decode_event only, with arm_features"] = round(len(heavy_lines) / best, 1)
    info = {"lines": n_lines, "impressions": n_imp, "clicks": clicks, "conversions": convs,
            "generate_log_s": round(gen_s, 2), "events_per_s": figures}
    return rows, info


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300k events, 0.5 s budgets, 10k-step log")
    parser.add_argument("--events", type=int, default=None, help="logged events for part 1 (default 2,000,000)")
    parser.add_argument("--log-steps", type=int, default=None, help="impressions in the part-2 log (default 50,000)")
    parser.add_argument("--budget", type=float, default=None, help="seconds per measurement (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n = args.events or (300_000 if args.quick else 2_000_000)
    budget = args.budget if args.budget is not None else (0.5 if args.quick else 3.0)
    log_steps = args.log_steps or (10_000 if args.quick else 50_000)
    started = time.perf_counter()

    data = Data(n, args.seed)
    dim = CONTEXT_DIM + 1
    rows: list[list[object]] = []
    rates: dict[str, float] = {}
    notes: list[str] = []
    arms_list, X_all, reward_list = data.arms, data.X, data.rewards.tolist()
    first_seen = list(dict.fromkeys(data.arms))
    data.rows = learner_class("ts")(dim=dim).rows_of(data.arms)  # type: ignore[attr-defined]
    for name in LEARNERS:
        if learner_class(name).shared_features:
            notes.append(f"{name}: skipped (needs per-arm shared vectors)")
            continue
        try:
            cls = learner_class(name)
            cls(dim=dim, seed=args.seed)
        except (ImportError, AttributeError, TypeError) as exc:
            notes.append(f"{name}: skipped ({type(exc).__name__}: {exc})")
            continue

        def make(cls=cls) -> Learner:
            learner = cls(dim=dim, seed=args.seed)
            learner.rows_of(first_seen)  # the arm -> row mapping that data.rows was computed with
            return learner

        probe = make()
        for label, method in batch_methods(probe).items():
            events, secs = measure_batches(make, method, data, budget)
            rows.append([name, label, events / secs, events, secs])
            rates[f"{name} {label}"] = events / secs
        one = make()
        events, secs = measure_per_event(lambda i, one=one: one.learn_one(arms_list[i], X_all[i], reward_list[i]),
                                         data.n, min(budget, 1.0))
        rows.append([name, "learn_one, per event", events / secs, events, secs])
        rates[f"{name} learn_one"] = events / secs
    t0 = time.perf_counter()
    fresh = learner_class("diag-linucb")(dim=dim)
    fresh.rows_of(data.arms)
    rows_of_rate = data.n / (time.perf_counter() - t0)

    peer_rates: dict[str, float] = {}
    for label, (events, secs) in peers(data, budget, args.seed).items():
        rows.append(["peer", label, events / secs, events, secs])
        peer_rates[label] = events / secs

    river = next(v for k, v in peer_rates.items() if k.startswith("river"))
    vw = next(v for k, v in peer_rates.items() if k.startswith("vowpal"))
    print(f"learning from a log, pre-featurized arrays: {n:,} events, K={ARMS}, d={dim}, chunks of {CHUNK:,}, "
          f"single core")
    print(table(["learner", "method", "events/s", "events", "seconds"], rows))
    print(f"(rows_of for {n:,} arm ids: {rows_of_rate:,.0f} ids/s, done once before the timed learn_batch_rows)")
    print()
    ratio_rows = []
    checks = {}
    for name, target in TARGETS.items():
        best = max((v for k, v in rates.items() if k.startswith(name + " learn_batch")), default=float("nan"))
        ratio_rows.append([name, best, target, "meets" if best >= target else "MISSES", best / river, best / vw])
        checks[name] = {"events_per_s": round(best, 1), "target": target, "met": best >= target,
                        "over_river": round(best / river, 1), "over_vw": round(best / vw, 1)}
    print(table(["learner (best batch path)", "events/s", "target", "status", "× river", "× vw"], ratio_rows))
    print()
    e2e_rows, e2e = end_to_end(log_steps, args.seed, 1 if args.quick else 2)
    print(f"END TO END (JSON lines -> decode_event -> Featurizer -> learner), NOT pre-featurized: simulated log of "
          f"{e2e['impressions']:,} impressions, {e2e['lines']:,} lines ({e2e['clicks']:,} clicks, "
          f"{e2e['conversions']:,} conversions), impressions carry context + {ARMS} candidates, no arm_features")
    print(table(["path", "lines/s", "impressions/s", "seconds"], e2e_rows))
    for note in notes:
        print("note:", note)
    elapsed = time.perf_counter() - started
    print(f"took {elapsed:.1f} s")
    result = {"events": n, "arms": ARMS, "dim": dim, "chunk": CHUNK,
              "events_per_s": {k: round(v, 1) for k, v in rates.items()},
              "peers_events_per_s": {k: round(v, 1) for k, v in peer_rates.items()}, "targets": checks,
              "end_to_end": e2e, "notes": notes, "elapsed_s": round(elapsed, 1)}
    emit_json("learn_from_log", result)
    return result


if __name__ == "__main__":
    main()
