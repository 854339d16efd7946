"""Does ``dfm``'s online path drift when the stream never reaches its steady state? (issue 11, clicks 2 h late)

The simplest world that shows it: one arm, no context, every impression clicks with probability ``--p``
(0.15, about the CTR of the arms a greedy model serves in ``calibration.py``) after an exponential delay
of mean ``--delay`` (2 h), ``--steps`` impressions at ``--rate`` requests/s, a 16 h window, ticks every
10 min. ``dfm`` (``delay_features=bias``) starts *at the truth* (``prior = p``, ``delay_prior`` = the
delay) and learns through the real join (:class:`~banditloop.pipeline.runner.LearningRun`), then the
backlog: every click arrives and every window closes. Printed: the model's predicted ÷ true CTR when
each impression is served, per tenth of the run, and after the backlog, with its mean delay.

Each factor of the likelihood has a zero expected gradient at the truth (a censored likelihood, learned
as conditional factors: ``operators/dfm.py``), so a batch fit would not move. The online path does: FTRL's
step shrinks only as 1/√n, so its iterate weighs recent factors more, and while the run is shorter than
the window the stream's mix is not stationary: during the run the clicks of older impressions arrive
while the newest add little "not yet"; in the backlog the clicks come first and the last hours are pure
"not yet" of the oldest ages. The bias follows the step: at 10 requests/s, ``alpha`` 0.1, 30k and 50k
impressions, seeds 0-1: 1.00-1.23 during the run and **0.86-0.88 after the backlog** (with or without
averaging); ``alpha`` 0.02 (30k, seed 0): 1.02-1.10, 0.97 after; ``conversions_at="arrival"`` (clicks
before each tick's "not yet"): a sawtooth 1.1-2.9, 2.09 after. Figures: ``benchmarks/README.md`` (issue 11,
seventh session).

``--rule newton`` (``dfm``'s ``steps="newton"``: ``1/Σg²`` steps, every factor weighs alike) with ``--alpha 1
--beta 20``, same seed: 1.01-1.20 during, 0.964 after from the truth (the run alone is 0.42 mean delays: p and
the rate are hardly told apart yet); ``--history 50000`` (the run starts from the checkpoint of 50k earlier
impressions, every click arrived): **0.965-0.983 per tenth, 1.004 after**, against FTRL α 0.1's 0.867-0.997,
1.003 (its checkpoint comes out of the history's backlog low). Eighth session.

``--rule fisher`` (the Newton step with the outcome-independent information of each factor as curvature,
``operators/dfm_curvature.py``), ``--alpha 1 --beta 20 --history 50000``, seed 0: 0.967-0.985 per tenth, 1.005
after: the same as ``newton`` within 0.002. The low first tenths are not the curvature's doing. Ninth session.

    python benchmarks/dfm_ordering.py [--steps 30000] [--rate 10] [--alpha 0.1] [--average OMEGA]
                                      [--conversions-at tick|arrival] [--rule ftrl|newton|fisher] [--beta 1]
                                      [--history N] [--seed 0]

About 4 minutes at the defaults (the backlog's 96 ticks learn every pending impression each), 6-7 with
``--history 50000``.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from banditloop.core.events import Click, Impression  # noqa: E402
from banditloop.core.features import FeatureSpec  # noqa: E402
from banditloop.operators.base import Learner  # noqa: E402
from banditloop.operators.registry import learner_from_state  # noqa: E402
from banditloop.pipeline.join import JoinConfig  # noqa: E402
from banditloop.pipeline.model import ModelConfig  # noqa: E402
from banditloop.pipeline.runner import LearningRun  # noqa: E402

WINDOW = 16 * 3600.0
TICK = 600.0


def run(p: float, delay: float, rate: float, steps: int, seed: int, params: dict,
        history: int = 0) -> tuple[list[float], float, float]:
    """Served predicted ÷ true CTR per tenth, after the backlog, and the final mean delay (seconds); with
    ``history``, the model first learns that many impressions of an earlier period (every click arrived,
    every window closed) and the run starts from that checkpoint."""
    config = ModelConfig("dfm", {"prior": p, "delay_prior": delay, "window": WINDOW, "tick": TICK,
                                 "delay_features": "bias", **params},
                         features=FeatureSpec(dim=1), join=JoinConfig(click_window=WINDOW))
    rng = np.random.default_rng(seed)
    learner = None
    if history:
        learner = learner_from_state(stream(config, None, rng, p, delay, rate, history, 0.0)[0].export_state())
    start = history / rate + 10 * WINDOW if history else 0.0
    learner, served = stream(config, learner, rng, p, delay, rate, steps, start)
    x = LearningRun(config, model="ordering").vectorizer.x({})
    tenths = [float(part.mean() / p) for part in np.array_split(served, 10)]
    return tenths, float(learner.score(x, ["a"])[0] / p), float(learner.mean_delay("a", x))


def stream(config: ModelConfig, learner: Learner | None, rng: np.random.Generator, p: float, delay: float,
           rate: float, steps: int, start: float) -> tuple[Learner, np.ndarray]:
    """``steps`` impressions from event time ``start`` through the join, then their backlog: the learner and
    its served predictions."""
    learning = LearningRun(config, model="ordering", learner=learner)
    learner, x = learning.learner, learning.vectorizer.x({})
    pending: list[tuple[float, int, Click]] = []
    served = np.empty(steps)
    for i in range(steps):
        ts = start + i / rate
        while pending and pending[0][0] <= ts:
            learning.process(heapq.heappop(pending)[2])
        learning.process(Impression(event_id=f"i{start}:{i}", ts=ts, impression_id=f"i{start}:{i}", arm="a",
                                    context={}))
        served[i] = learner.score(x, ["a"])[0]
        if rng.random() < p:
            click = Click(event_id=f"c{start}:{i}", ts=ts + float(rng.exponential(delay)),
                          impression_id=f"i{start}:{i}")
            heapq.heappush(pending, (click.ts, i, click))
    while pending:  # the backlog: every click arrives, then every window closes
        learning.process(heapq.heappop(pending)[2])
    learning.join.advance(start + steps / rate + 10 * WINDOW)
    learning.flush()
    return learner, served


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--p", type=float, default=0.15, help="true click probability")
    ap.add_argument("--delay", type=float, default=7200.0, help="mean click delay, seconds")
    ap.add_argument("--rate", type=float, default=10.0, help="requests per second of event time")
    ap.add_argument("--steps", type=int, default=30_000)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--average", type=float, default=None, help="dfm's average (ω); default off")
    ap.add_argument("--conversions-at", choices=("tick", "arrival"), default="tick")
    ap.add_argument("--rule", choices=("ftrl", "newton", "fisher"), default="ftrl", help="dfm's steps (its step rule)")
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--history", type=int, default=0, help="impressions of an earlier period learned first")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0.0 < args.p < 1.0 or args.delay <= 0 or args.rate <= 0 or args.steps < 10:
        ap.error("need 0 < --p < 1, --delay > 0, --rate > 0, --steps >= 10")
    params = {"alpha": args.alpha, "average": args.average, "conversions_at": args.conversions_at,
              "steps": args.rule, "beta": args.beta}
    tenths, after, mean_delay = run(args.p, args.delay, args.rate, args.steps, args.seed, params, args.history)
    print(f"dfm from the truth (p {args.p}, delay {args.delay:g} s), {args.steps} impressions at {args.rate:g}/s "
          f"({args.steps / args.rate / args.delay:.2f} mean delays), window {WINDOW / 3600:g} h, {params}, "
          f"seed {args.seed}" + (f", from a checkpoint of {args.history} earlier impressions" if args.history else ""))
    print("served ÷ true per tenth: " + " ".join(f"{v:.3f}" for v in tenths))
    print(f"after the backlog: {after:.3f} (mean delay {mean_delay:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
