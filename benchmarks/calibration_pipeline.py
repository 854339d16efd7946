"""Calibration of the conversion models *through the pipeline* (the join → ``LearningRun``, as simulate,
replay and consume learn), in the delayed-conversion world of ``benchmarks/calibration_cvr.py``.

Run by ``python benchmarks/calibration_cvr.py --only pipeline`` (or this file). The world of its
measurement 1 (``base_ctr=0.25``, ``conversion_rate=0.25``, ``conversion_context=0.5``, exponential
conversion delays with a 1-day mean, click delays of 30 s mean, a 7-day conversion window, a 1-hour
click window, a conversion reward), a uniformly random arm per request, ``--days`` (60) days of event
time. Events go through ``LearningRun.process`` in event-time order, as ``simulate`` emits them.

Through the pipeline every impression is an example (the join knows no "clicked population"), so:

* ``dfm`` predicts ``P(conversion | impression)`` = pCTR × pCVR: its bias per tenth is Σ predicted ÷
  Σ true (``p_click × p_conv``) over every impression of that tenth, each predicted by the model of
  that moment; "end": the final model over 1000 fresh requests × every arm;
* ``esmm``: pCVR = pCTCVR / pCTR over the clicked impressions against the true pCVR (as measurement 1
  of ``calibration_cvr``), pCTR over every impression against the true click probability, and pCTCVR;
* peers: ``dfm`` with ``tick=0`` (learns each impression once at its window's close: the pipeline's
  behaviour before event times) and ``ctr-ftrl`` (fake-negative weights, conversion reward). The naive
  model of measurement 1 (a negative at the click, a positive on arrival) is not a pipeline learner.

Targets (issue 11): ``dfm`` and ``esmm`` pCVR within ±2 % per tenth.

Figures (50k impressions over 60 days, seed 0, machine shared by several jobs, load average 4-5 on 2
cores; bias per tenth 1 → 10, then the final model on fresh requests):

* 6-hour ticks (the default ``tick``): ``dfm`` P(conv) −6.7, −0.4, −1.3, −2.3, +1.1, −1.4, +4.6, +2.7,
  +1.6, −0.4 %, end −0.3 % (282 s of learning); ``esmm`` pCVR +2.9, +3.7, +3.2, +1.1, +3.4, +1.1, +4.4,
  +2.1, +3.3, +2.3 %, end −3.0 %; its pCTR within ±3.3 % at every tenth (end −1.6 %), pCTCVR within
  ±4.2 % (end +0.4 %) (211 s). ``dfm`` with ``tick=0`` (the close only, the pipeline before event
  times): −26.2, −10.5 %, then −2.7 % to +4.4 %, end −2.7 % (5 s); ``ctr-ftrl`` fnw −33.7, −5.6 %, then
  −3.4 % to +4.0 %, end −1.9 % (3 s). **The ±2 % target is not met** (max |bias| 6.7 % for ``dfm``, in
  the first tenth; 4.6 % after it; 4.4 % for ``esmm``'s pCVR). In this stationary world every model
  is within a few per cent once its first window has passed, and the tenths move together across
  models (+4 % at the 7th for all): past the first tenth the per-tenth figures are mostly the FTRL
  step noise, not the delay treatment; the delay treatment shows in the first tenth (−6.7 % against
  −26 % at the close only and −34 % for fake-negative weights).
* daily ticks: ``dfm`` +4.4 %, then −2.7 % to +4.4 %, end +3.5 % (28 s); ``esmm`` pCVR +14.3 % in the
  first tenth (early conversions push pCTCVR up before any survival evidence), then +0.6 % to +4.3 %,
  end +0.8 %; pCTR within ±3.5 %.
* hourly ticks, 20k impressions (fewer: every pending impression learns at every tick, 168 updates
  over its 7-day window): ``dfm`` −12.2, −4.9 %, then −4.3 % to +1.8 %, end −0.4 % (234 s); ``esmm``
  pCVR +0.6 % to +7.9 %, end −4.3 %; pCTR within ±3.5 %, end −1.7 % (494 s). Finer ticks do not help
  here: with 20k impressions the first tenth is the FTRL warm-up, and the rest is step noise.

**Throughput** (issue 12; the packed FTRL steps of ``operators/ftrl_heads.py``, the same sequential
steps; machine loaded: 2 cores shared with other jobs' benchmarks, load average 0.2-3.5). Per item,
best of 3, the code before (``dfm.py``/``esmm.py`` of commit 5964782, imported side by side) and after
in the same process, dim 16, 10 arms: ``learn_elapsed_batch`` of 1000 pending items ``dfm`` 53.9 →
12.1 µs, ``esmm`` 54.1 → 12.9 µs (a tick over 1M pending impressions: ~54 s → ~12 s);
``learn_conversion`` ``dfm`` 47.1 → 14.3 µs, ``esmm`` 47.8 → 14.9 µs; single ``learn_elapsed``
51.5 → 13.8 / 52.5 → 14.6 µs; ``esmm`` ``learn_click`` 36.0 → 13.6 µs. This script, ``--steps 20000
--days 60 --tick 6 --models dfm,esmm``, before then after in one job: learning ``dfm`` 33 → 8 s,
``esmm`` 30 → 9 s (wall 66 → 19 s), every bias figure identical to the shown digits (``dfm`` −9.8,
−4.4, −0.4, +1.6, −4.3, −3.3, +1.7, −0.3, −3.9, −1.9 %, end +0.2 %; ``esmm`` pCVR max 7.8 %, end
−3.4 %). The states agree with the straightforward implementation to 1e-12 (``tests/test_dfm_fast.py``:
``math`` exp/log/tanh and one dot for the logits may differ from numpy's in the last bit).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

import numpy as np

from banditloop.core.events import Event
from banditloop.core.features import FeatureSpec, dense_names
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.runner import LearningRun
from banditloop.simulators.world import World, WorldConfig

DAY = 86400.0
WINDOW = 7 * DAY
TYPE_ORDER = {"Impression": 0, "Click": 1, "Conversion": 2}


@dataclass
class PipelineOutcome:
    name: str
    #: per measured quantity (e.g. "pCVR"), the bias per tenth of the run
    tenths: dict[str, list[float]] = field(default_factory=dict)
    #: per quantity, the bias of the final model on fresh requests × every arm
    end: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)


def world_config(steps: int, days: float, seed: int, cvr: float = 0.25) -> WorldConfig:
    return WorldConfig(seed=seed, base_ctr=0.25, conversion_rate=cvr, conversion_context=0.5,
                       conversion_delay_mean=DAY, click_delay_mean=30.0, rate=steps / (days * DAY),
                       reward=RewardSpec("conversion"))


def model_config(cfg: WorldConfig, learner: str, params: dict) -> ModelConfig:
    return ModelConfig(learner, params, features=FeatureSpec(dim=cfg.dim + 1, numeric=dense_names("x", cfg.dim)),
                       reward=RewardSpec("conversion"),
                       join=JoinConfig(click_window=3600.0, conversion_window=WINDOW))


def through_pipeline(cfg: WorldConfig, name: str, learner: str, params: dict, steps: int,
                     fresh: int = 1000) -> PipelineOutcome:
    world = World(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    run = LearningRun(model_config(cfg, learner, params), "bench")
    model = run.learner
    pending: list[tuple[float, int, int, Event]] = []
    seq = 0
    quantities = ("pCVR", "pCTR", "pCTCVR") if learner == "esmm" else ("P(conv)",)
    pred = {q: np.full(steps, np.nan) for q in quantities}
    true = {q: np.zeros(steps) for q in quantities}
    spent = 0.0
    for step in range(steps):
        req = world.next_request()
        s = time.perf_counter()
        while pending and pending[0][0] <= req.ts:
            run.process(heapq.heappop(pending)[3])
        run.join.advance(req.ts)
        spent += time.perf_counter() - s
        j = int(rng.integers(cfg.arms))
        arm = req.candidates[j]
        x = run.vectorizer.x(req.context)
        tr = req.truth
        pc, pv = float(tr.p_click[j]), float(tr.p_conv[j])
        clicked = tr.u_click[j] < tr.p_click[j]
        if learner == "esmm":
            ctr, ctcvr = model.ctr(arm, x), model.ctcvr(arm, x)  # type: ignore[attr-defined]
            if clicked:
                pred["pCVR"][step], true["pCVR"][step] = min(ctcvr / ctr, 1.0), pv
            pred["pCTR"][step], true["pCTR"][step] = ctr, pc
            pred["pCTCVR"][step], true["pCTCVR"][step] = ctcvr, pc * pv
        else:
            predict = model.cvr if learner == "dfm" else model.ctr  # type: ignore[attr-defined]
            pred["P(conv)"][step], true["P(conv)"][step] = predict(arm, x), pc * pv
        out = world.respond(req, arm)
        s = time.perf_counter()
        run.process(out.impression)
        spent += time.perf_counter() - s
        for fb in (out.click, out.conversion):
            if fb is not None:
                seq += 1
                heapq.heappush(pending, (fb.ts, TYPE_ORDER[type(fb).__name__], seq, fb))
    o = PipelineOutcome(name, seconds=spent, counters={k: v for k, v in run.counters().items()
                                                       if k in ("impressions", "clicks", "conversions",
                                                                "unmatched", "late", "closed")})
    for q in quantities:
        o.tenths[q] = []
        for part in np.array_split(np.arange(steps), 10):
            part = part[~np.isnan(pred[q][part])]
            o.tenths[q].append(float(pred[q][part].sum() / true[q][part].sum() - 1.0))
    # the final model on fresh requests × every arm (pCVR over every impression, not only clicked ones)
    sums = {q: np.zeros(2) for q in quantities}
    for _ in range(fresh):
        req = world.next_request()
        x = run.vectorizer.x(req.context)
        tr = req.truth
        for j, arm in enumerate(req.candidates):
            pc, pv = float(tr.p_click[j]), float(tr.p_conv[j])
            if learner == "esmm":
                ctr, ctcvr = model.ctr(arm, x), model.ctcvr(arm, x)  # type: ignore[attr-defined]
                for q, p, t in (("pCVR", min(ctcvr / ctr, 1.0), pv), ("pCTR", ctr, pc), ("pCTCVR", ctcvr, pc * pv)):
                    sums[q] += (p, t)
            else:
                sums["P(conv)"] += ((model.cvr if learner == "dfm" else model.ctr)(arm, x), pc * pv)  # type: ignore
    o.end = {q: float(v[0] / v[1] - 1.0) for q, v in sums.items()}
    return o


def measure(steps: int, days: float, tick_hours: float, seed: int, cvr: float = 0.25,
            models: tuple[str, ...] = ("dfm", "esmm", "dfm-close", "ctr-ftrl")) -> list[PipelineOutcome]:
    cfg = world_config(steps, days, seed, cvr)
    tick = tick_hours * 3600.0
    common = {"delay_prior": DAY, "window": WINDOW}
    specs = {
        "dfm": ("dfm (ours)", "dfm", {"prior": cfg.base_ctr * cvr, "tick": tick, **common}),
        "esmm": ("esmm (ours)", "esmm", {"ctr_prior": cfg.base_ctr, "prior": cfg.base_ctr * cvr, "tick": tick,
                                         **common}),
        "dfm-close": ("dfm tick=0 (close)", "dfm", {"prior": cfg.base_ctr * cvr, "tick": 0.0, **common}),
        "ctr-ftrl": ("ctr-ftrl fnw", "ctr-ftrl", {"prior": cfg.base_ctr * cvr, "epsilon": 0.0}),
    }
    return [through_pipeline(cfg, *specs[m], steps) for m in models]


def report(outcomes: list[PipelineOutcome], target: float = 0.02) -> bool:
    print("\n3. through the pipeline (join → LearningRun), bias (Σ predicted ÷ Σ true − 1) per tenth; "
          f"target: ours' pCVR / P(conv) within ±{target:.0%}")
    print(f"{'model':<20}{'quantity':<9}" + "".join(f"{i / 10:>7.1f}" for i in range(1, 11))
          + f"{'max |b|':>9}{'end':>7} {'s':>5}")
    ok = True
    for o in outcomes:
        for q, tenths in o.tenths.items():
            worst = max(abs(b) for b in tenths)
            if o.name.endswith("(ours)") and q in ("pCVR", "P(conv)"):
                ok &= worst <= target
            print(f"{o.name:<20}{q:<9}" + "".join(f"{b:+7.1%}" for b in tenths)
                  + f"{worst:9.1%}{o.end[q]:+7.1%} {o.seconds:5.0f}")
        print(f"{'':<20}counters: {o.counters}")
    return ok


if __name__ == "__main__":
    import argparse
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50_000)
    ap.add_argument("--days", type=float, default=60.0)
    ap.add_argument("--tick", type=float, default=6.0, help="hours between ticks (the models' tick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", default="dfm,esmm,dfm-close,ctr-ftrl")
    args = ap.parse_args()
    print(f"through the pipeline: {args.steps} impressions over {args.days:g} days, ticks every {args.tick:g} h; "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    met = report(measure(args.steps, args.days, args.tick, args.seed, models=tuple(args.models.split(","))))
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}; targets met: {met}")
