"""Calibration of conversion models under conversion delays of days, against the simulator's known pCVR.

Run by ``python benchmarks/calibration.py --cvr`` (or this file). Two measurements, each on 200k
impressions of one simulated world (10 arms, dim 8, seed 0), a uniformly random arm shown per request,
run long compared to the delays: ``--days`` (60) days of event time, so a tenth is 6 days.

**1. Delayed conversions** (``WorldConfig(base_ctr=0.25, conversion_rate=0.25, conversion_context=0.5,
conversion_delay_mean=1 day)``, ``--conversion-rate``, exponential delays, 7-day window): every click is
a CVR example. Bias of pCVR per tenth of the run = Σ predicted pCVR ÷ Σ true pCVR − 1 over the clicks of
that tenth, each predicted by the model of that moment (before its own conversion is known). Target:
ours within ±2 % at every tenth, judged on ``dfm recommended`` (the README's setting: one delay rate for
every click, ``delay_features="bias"``, as the world's delay does not depend on the arm or the context, and
uniformly averaged iterates, ω 0; the default ``dfm`` runs beside it); the naive model (a negative at the
click, a positive when the conversion arrives: FTRL with the same features, optimiser and prior) ≥ 20 % off.
Peers fed the same stream: river's ``LogisticRegression`` naively (as the naive model), and ``ctr-ftrl``
with its fake-negative weights (Ktena 2019, designed for clicks). ``dfm`` learns the elapsed time of every
pending click at ticks every ``--tick`` hours (item by item) and at the window's close, and each conversion
when it arrives.
Two **no-delay oracles** run beside them: the naive model's FTRL and ``dfm`` with uniformly averaged
iterates (ω 0), each fed every click's eventual label (converted within the window) when the click
enters. They cannot exist in production; their wobble per tenth is the estimation noise of the model
class at this data size, which no treatment of the delay removes. ``--warm``: the FTRL models' prior is
the mean pCVR of a history of the same world (50k requests drawn after the run's), as production would
start from its history; without it, the world's ``conversion_rate``, the rate at the centre of its logits,
which is 2-15 % below the clicked population's mean pCVR on seeds 0-3.

**2. Selection bias** (``WorldConfig(selection_bias=True, base_ctr=0.1, theta_scale=1.5)``: pCTCVR is
logistic and the clicked population converts more than the unclicked one would): ESMM (``esmm``, pCTR and
pCTCVR on every impression, pCVR = pCTCVR/pCTR, conversions by the delayed feedback treatment) against
the same delayed feedback model trained on clicked impressions only (``dfm`` on clicks: the same delay
treatment, features and optimiser, so only the training population differs), and river's
LogisticRegression on clicked impressions with final labels (at the window's close). Error of pCVR over
all impressions: mean |predicted − true| ÷ mean true over every arm of ``--fresh`` fresh requests
(the final models), and the bias per tenth over all served impressions. Target: ours ≤ 0.5× the
clicked-only model's error.

The driver keeps the pending items and their event times and feeds the models directly (clicks come at
their impression: click delay 0). **3.** ``--only pipeline`` (or ``--pipeline``): the same world through
the join and ``LearningRun`` as simulate/replay learn (``benchmarks/calibration_pipeline.py``).

**Settings** (issue 11, ESMM's 0.5× target): ``--esmm-options`` (JSON keyword arguments) and
``--dfm-options`` (a JSON list of them) add ``esmm tuned`` and ``dfm clicked-only t1``, ``t2``... to
measurement 2 (and ``dfm t1``, ``t2``... to measurement 1, counted but not judged: a setting chosen per
seed is not a setting a user could choose): settings from the same grid of FTRL rates and averaged iterates
(``benchmarks/esmm_capacity.py --grid``), all with conversions learned at the tick (by default: ``esmm``
with ctr 0.5, ctcvr 0.2, ω 1, and the clicked-only model at α 0.05, 0.2, 0.5 with and without ω 1); the
ratio is printed for the defaults and for ``esmm tuned`` ÷ the best clicked-only model of the run
(default or tuned).
Figures: ``benchmarks/README.md`` (issue 11).
"""

from __future__ import annotations

import heapq
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ``benchmarks.*`` when run as a script

import numpy as np  # noqa: E402

from banditloop.operators.ctr_ftrl import CTRFTRL  # noqa: E402
from banditloop.operators.dfm import DelayedFeedbackModel  # noqa: E402
from banditloop.operators.esmm import ESMM  # noqa: E402
from banditloop.simulators.world import World, WorldConfig  # noqa: E402
from benchmarks.calibration_pipeline import later_truths  # noqa: E402

DAY = 86400.0
WINDOW = 7 * DAY
BIAS_TARGET = 0.02
NAIVE_TARGET = 0.20
#: requests of the history a warm start's prior is taken from (``--warm``)
HISTORY = 50_000
RATIO_TARGET = 0.5


class Contender:
    """A model fed the delayed stream. ``population``: "clicks" (clicked impressions only) or
    "impressions" (every impression); ``ticks``: learns the elapsed time of pending items."""

    population = "clicks"
    ticks = False
    #: learns each item's eventual label when it enters (:meth:`label`) instead of the delayed stream
    oracle = False

    def __init__(self, name: str) -> None:
        self.name = name

    def cvr(self, arm: str, x: np.ndarray) -> float:
        raise NotImplementedError

    def arrive(self, arm: str, x: np.ndarray, clicked: bool) -> None:
        """An item enters (an impression, or a click)."""

    def label(self, arm: str, x: np.ndarray, converted: bool) -> None:
        """An item enters with its eventual label (the no-delay oracle only)."""

    def convert(self, arm: str, x: np.ndarray, delay: float, elapsed_from: float) -> None:
        """Its conversion arrives ``delay`` seconds after it."""

    def tick(self, arms: list[str], X: np.ndarray, e0: np.ndarray, e1: np.ndarray) -> None:
        """Pending items are still unconverted at elapsed ``e1`` (last learned at ``e0``)."""

    def close(self, arm: str, x: np.ndarray, converted: bool) -> None:
        """An item's window closed."""


class DFM(Contender):
    ticks = True

    def __init__(self, name: str, model: DelayedFeedbackModel | ESMM, population: str = "clicks") -> None:
        super().__init__(name)
        self.model, self.population = model, population

    def cvr(self, arm, x):
        return self.model.cvr(arm, x)

    def arrive(self, arm, x, clicked):
        if isinstance(self.model, ESMM):
            self.model.learn_click(arm, x, clicked)

    def convert(self, arm, x, delay, elapsed_from):
        self.model.learn_conversion(arm, x, delay, elapsed_from)

    def tick(self, arms, X, e0, e1):
        self.model.learn_elapsed_batch(arms, X, e0, e1)


class NaiveFTRL(Contender):
    """A negative at the click, a positive on arrival (unweighted), or ctr-ftrl's fake-negative weights."""

    def __init__(self, name: str, dim: int, prior: float, weighted: bool) -> None:
        super().__init__(name)
        self.model, self.weighted = CTRFTRL(dim=dim, prior=prior), weighted

    def cvr(self, arm, x):
        return self.model.ctr(arm, x)

    def arrive(self, arm, x, clicked):
        if self.weighted:
            self.model.learn_impression(arm, x)
        else:
            self.model._learn(self.model.add_arm(arm), x, 0.0, 1.0)

    def convert(self, arm, x, delay, elapsed_from):
        if self.weighted:
            self.model.learn_reward(arm, x, 1.0)
        else:
            self.model._learn(self.model.add_arm(arm), x, 1.0, 1.0)


class NoDelayFTRL(Contender):
    """The same FTRL logistic model as the naive one, fed each click's eventual label (converted within
    the window) when the click enters: no delay at all, so its wobble per tenth is the estimation noise
    of this model class and data size (without averaged iterates; :class:`NoDelayDFM` has them)."""

    oracle = True

    def __init__(self, name: str, dim: int, prior: float) -> None:
        super().__init__(name)
        self.model = CTRFTRL(dim=dim, prior=prior)

    def cvr(self, arm, x):
        return self.model.ctr(arm, x)

    def label(self, arm, x, converted):
        self.model._learn(self.model.add_arm(arm), x, float(converted), 1.0)


class NoDelayDFM(Contender):
    """``dfm`` with averaged iterates fed each click's eventual label when it enters (``learn_close``: the
    label within the window, at once): the no-delay floor of the averaged settings of ours."""

    oracle = True

    def __init__(self, name: str, model: DelayedFeedbackModel) -> None:
        super().__init__(name)
        self.model = model

    def cvr(self, arm, x):
        return self.model.cvr(arm, x)

    def label(self, arm, x, converted):
        self.model.learn_close(arm, x, float(converted))


class RiverLR(Contender):
    """river's LogisticRegression on x and arm × x: naive (negative at the click, positive on arrival)
    or with the final label at the window's close."""

    def __init__(self, name: str, final_labels: bool) -> None:
        from river import linear_model

        super().__init__(name)
        self.model, self.final = linear_model.LogisticRegression(), final_labels

    @staticmethod
    def features(arm: str, x: np.ndarray) -> dict[str, float]:
        out = {f"x{i}": float(v) for i, v in enumerate(x)}
        out.update({f"{arm}:x{i}": float(v) for i, v in enumerate(x)})
        return out

    def cvr(self, arm, x):
        return float(self.model.predict_proba_one(self.features(arm, x))[True])

    def arrive(self, arm, x, clicked):
        if not self.final:
            self.model.learn_one(self.features(arm, x), False)

    def convert(self, arm, x, delay, elapsed_from):
        if not self.final:
            self.model.learn_one(self.features(arm, x), True)

    def close(self, arm, x, converted):
        if self.final:
            self.model.learn_one(self.features(arm, x), converted)


@dataclass
class Outcome:
    name: str
    population: str
    tenths: list[float] = field(default_factory=list)
    error: float = float("nan")
    bias: float = float("nan")
    seconds: float = 0.0


def run(world_config: WorldConfig, contenders: list[Contender], steps: int, tick: float, fresh: int,
        measure_all: bool) -> list[Outcome]:
    """The stream: per request a uniformly random arm; conversions and ticks in event-time order."""
    world = World(world_config)
    rng = np.random.default_rng(world_config.seed + 1)
    n_arms = world_config.arms
    X = np.zeros((steps, world_config.dim + 1))
    arm_of: list[str] = []
    t0 = np.zeros(steps)
    clicked = np.zeros(steps, dtype=bool)
    converted = np.zeros(steps, dtype=bool)
    learned = {c.name: np.zeros(steps) for c in contenders}
    done = {c.name: np.zeros(steps, dtype=bool) for c in contenders}
    pred = np.full((len(contenders), steps), np.nan)
    truth = np.zeros(steps)
    spent = np.zeros(len(contenders))
    conversions: list[tuple[float, int]] = []
    next_tick = tick

    def timed(k: int, fn: Callable[[], None]) -> None:
        s = time.perf_counter()
        fn()
        spent[k] += time.perf_counter() - s

    def do_tick(t: float) -> None:
        for k, c in enumerate(contenders):
            if not c.ticks:
                continue
            live = np.flatnonzero(~done[c.name][:len(arm_of)])
            if c.population == "clicks":
                live = live[clicked[live]]
            if not live.size:
                continue
            e = np.minimum(t - t0[live], WINDOW)
            timed(k, lambda c=c, live=live, e=e: c.tick([arm_of[i] for i in live], X[live], learned[c.name][live], e))
            learned[c.name][live] = e
            done[c.name][live[e >= WINDOW]] = True

    def close_due(t: float) -> None:  # non-ticking contenders: windows closing before t
        for k, c in enumerate(contenders):
            if c.ticks:
                continue
            live = np.flatnonzero(~done[c.name][:len(arm_of)] & (t0[:len(arm_of)] + WINDOW <= t))
            for i in live:
                if c.population == "impressions" or clicked[i]:
                    timed(k, lambda c=c, i=i: c.close(arm_of[i], X[i], bool(converted[i])))
            done[c.name][live] = True

    def advance(t: float) -> None:
        nonlocal next_tick
        while True:
            t_conv = conversions[0][0] if conversions else math.inf
            if min(t_conv, next_tick) > t:
                break
            if t_conv <= next_tick:
                tc, i = heapq.heappop(conversions)
                for k, c in enumerate(contenders):
                    if c.population == "clicks" and not clicked[i]:
                        continue
                    timed(k, lambda c=c, i=i, tc=tc: c.convert(arm_of[i], X[i], tc - t0[i], learned[c.name][i]))
                    done[c.name][i] = True
            else:
                close_due(next_tick)
                do_tick(next_tick)
                next_tick += tick

    for step in range(steps):
        req = world.next_request()
        advance(req.ts)
        j = int(rng.integers(n_arms))
        arm = req.candidates[j]
        x = np.concatenate(([1.0], req.x))
        X[step], t0[step] = x, req.ts
        arm_of.append(arm)
        tr = req.truth
        clicked[step] = tr.u_click[j] < tr.p_click[j]
        converted[step] = clicked[step] and tr.u_conv[j] < tr.p_conv[j]
        truth[step] = tr.p_conv[j]
        in_window = bool(converted[step] and tr.conv_delay[j] <= WINDOW)
        if in_window:
            heapq.heappush(conversions, (req.ts + float(tr.conv_delay[j]), step))
        for k, c in enumerate(contenders):
            if measure_all or clicked[step]:
                pred[k, step] = c.cvr(arm, x)
            if c.population != "impressions" and not clicked[step]:
                done[c.name][step] = True
            elif c.oracle:  # its eventual label at once: nothing pending
                timed(k, lambda c=c, arm=arm, x=x, y=in_window: c.label(arm, x, y))
                done[c.name][step] = True
            else:
                timed(k, lambda c=c, arm=arm, x=x, hit=bool(clicked[step]): c.arrive(arm, x, hit))
    out = []
    for k, c in enumerate(contenders):
        o = Outcome(c.name, c.population, seconds=float(spent[k]))
        for part in np.array_split(np.arange(steps), 10):
            part = part[~np.isnan(pred[k, part])]
            o.tenths.append(float(pred[k, part].sum() / truth[part].sum() - 1.0))
        out.append(o)
    if fresh:
        p_true, p_pred = [], [[] for _ in contenders]
        for _ in range(fresh):
            req = world.next_request()
            x = np.concatenate(([1.0], req.x))
            p_true.append(req.truth.p_conv)
            for k, c in enumerate(contenders):
                p_pred[k].append([c.cvr(a, x) for a in req.candidates])
        true_all = np.concatenate(p_true)
        for k, o in enumerate(out):
            every = np.concatenate(p_pred[k])
            o.error = float(np.abs(every - true_all).mean() / true_all.mean())
            o.bias = float(every.mean() / true_all.mean() - 1.0)
    return out


def history_cvr(cfg: WorldConfig, skip: int, requests: int = HISTORY) -> float:
    """The mean true pCVR of the clicked impressions of ``requests`` requests of the world drawn after its
    first ``skip`` (another period of the same stationary world, a random arm shown per request): the
    conversion rate a production system knows from its history, for a warm start (``--warm``)."""
    rng = np.random.default_rng(cfg.seed + 2)
    for _ in range(skip):  # the arms of the skipped requests too: one draw per request, as measured
        rng.integers(cfg.arms)
    total = clicks = 0.0
    for truth in later_truths(cfg, skip, requests):
        j = int(rng.integers(cfg.arms))
        if truth.u_click[j] < truth.p_click[j]:
            total, clicks = total + float(truth.p_conv[j]), clicks + 1.0
    return total / clicks


def delayed_conversions(steps: int, days: float, tick_hours: float, seed: int, cvr: float = 0.25,
                        conversions_at: str = "arrival", dfm_options: list[dict] | None = None,
                        warm: bool = False) -> list[Outcome]:
    cfg = WorldConfig(seed=seed, base_ctr=0.25, conversion_rate=cvr, conversion_context=0.5,
                      conversion_delay_mean=DAY, click_delay_mean=0.0, rate=steps / (days * DAY))
    d = cfg.dim + 1
    prior = history_cvr(cfg, skip=steps) if warm else cfg.conversion_rate
    print(f"delayed conversions: prior {prior:.4f} ({'warm: the history' if warm else 'the world conversion_rate'})",
          flush=True)
    contenders: list[Contender] = [
        DFM("dfm (ours)", DelayedFeedbackModel(dim=d, prior=prior, delay_prior=DAY, window=WINDOW,
                                               conversions_at=conversions_at)),
        NaiveFTRL("naive FTRL", d, prior, weighted=False),
        RiverLR("river LR naive", final_labels=False),
        NaiveFTRL("ctr-ftrl fnw", d, prior, weighted=True),
        NoDelayFTRL("oracle: FTRL no delay", d, prior),
        NoDelayDFM("oracle: dfm ω0 no delay", DelayedFeedbackModel(dim=d, prior=prior, delay_prior=DAY, window=WINDOW,
                                                                   tick=0.0, average=0.0)),
        DFM(RECOMMENDED, DelayedFeedbackModel(dim=d, prior=prior, delay_prior=DAY, window=WINDOW,
                                              **{**RECOMMENDED_DFM, "conversions_at": conversions_at}))]
    for k, options in enumerate(dfm_options or []):  # ours, other settings of the same grid
        contenders.append(DFM(f"dfm t{k + 1}", DelayedFeedbackModel(
            dim=d, prior=prior, delay_prior=DAY, window=WINDOW,
            **{"conversions_at": conversions_at, **options})))
    return run(cfg, contenders, steps, tick_hours * 3600.0, fresh=0, measure_all=False)


#: the README's setting for conversions days late (its "which model" table), measured in 1. beside the default:
#: one delay rate for every click (the world's delay does not depend on the arm or the context), uniformly
#: averaged iterates; conversions at the tick (``--conversions-at``, as every setting of the run)
RECOMMENDED_DFM: dict = {"delay_features": "bias", "average": 0.0}
RECOMMENDED = "dfm recommended"


#: the no-delay grid's best ``esmm`` (``esmm_capacity.py --grid``), which carries over to delays once
#: conversions are learned at the tick (``README.md``, issue 11, third session), and the clicked-only model
#: over the same grid of rates and averaging (its default, α 0.05 without averaging, is always run)
TUNED_ESMM: dict = {"ctr_alpha": 0.5, "ctcvr_alpha": 0.2, "average": 1.0, "conversions_at": "tick"}
TUNED_DFM = [{"alpha": a, **({"average": 1.0} if averaged else {}), "conversions_at": "tick"}
             for averaged in (False, True) for a in (0.05, 0.2, 0.5) if averaged or a != 0.05]


def selection_bias(steps: int, days: float, tick_hours: float, seed: int, fresh: int,
                   esmm_options: dict | None = None, dfm_options: list[dict] | None = None,
                   conversions_at: str = "arrival") -> list[Outcome]:
    cfg = WorldConfig(seed=seed, selection_bias=True, base_ctr=0.1, theta_scale=1.5, conversion_rate=0.1,
                      conversion_delay_mean=DAY, click_delay_mean=0.0, rate=steps / (days * DAY))
    d = cfg.dim + 1
    contenders: list[Contender] = [
        DFM("esmm (ours)", ESMM(dim=d, ctr_prior=cfg.base_ctr, prior=cfg.base_ctr * cfg.conversion_rate,
                                delay_prior=DAY, window=WINDOW, conversions_at=conversions_at),
            population="impressions"),
        DFM("dfm clicked-only", DelayedFeedbackModel(dim=d, prior=cfg.conversion_rate, delay_prior=DAY,
                                                     window=WINDOW, conversions_at=conversions_at)),
        RiverLR("river LR clicked-only", final_labels=True)]
    if esmm_options is not None:
        tuned = ESMM(dim=d, ctr_prior=cfg.base_ctr, prior=cfg.base_ctr * cfg.conversion_rate, delay_prior=DAY,
                     window=WINDOW, **{"conversions_at": conversions_at, **esmm_options})
        contenders.append(DFM("esmm tuned", tuned, population="impressions"))
    for k, options in enumerate(dfm_options or []):
        contenders.append(DFM(f"dfm clicked-only t{k + 1}", DelayedFeedbackModel(
            dim=d, prior=cfg.conversion_rate, delay_prior=DAY, window=WINDOW,
            **{"conversions_at": conversions_at, **options})))
    return run(cfg, contenders, steps, tick_hours * 3600.0, fresh=fresh, measure_all=True)


def report(delayed: list[Outcome], biased: list[Outcome]) -> bool:
    ok = True
    if delayed:
        print(f"\n1. pCVR bias (Σ predicted ÷ Σ true − 1) per tenth, clicks; mean conversion delay 1 day, 7-day "
              f"window; targets: ours within ±{BIAS_TARGET:.0%}, naive ≥ {NAIVE_TARGET:.0%}")
        print(f"{'model':<22}" + "".join(f"{i / 10:>7.1f}" for i in range(1, 11)) + f"{'max |b|':>9} {'s':>5} ok")
        ours_met = []  # ours: the default and the other settings of the grid (``--dfm-options``)
        for o in delayed:
            worst = max(abs(b) for b in o.tenths)
            mine = o.name.startswith("dfm")
            met = worst <= BIAS_TARGET if mine else (min(abs(b) for b in o.tenths) >= NAIVE_TARGET
                                                     if "naive" in o.name else None)
            if mine:
                ours_met.append(met)
            else:
                ok &= met is not False
            print(f"{o.name:<22}" + "".join(f"{b:+7.1%}" for b in o.tenths) + f"{worst:9.1%} {o.seconds:5.0f} "
                  + {True: "yes", False: "no", None: "-"}[met])
        recommended = next((o for o in delayed if o.name == RECOMMENDED), None)
        ok &= recommended is not None and max(abs(b) for b in recommended.tenths) <= BIAS_TARGET
        # a setting chosen per seed is not a setting: the verdict is the recommended one's, the count is context
        print(f"ours: {sum(ours_met)} of {len(ours_met)} settings within ±{BIAS_TARGET:.0%} on this seed; the verdict "
              f"is the {RECOMMENDED} setting's (a target met means by one setting on every seed)")
    if biased:
        print(f"\n2. selection-bias world: pCVR over all impressions (served, per tenth: bias; final models "
              f"on fresh requests x every arm: error = mean |pred − true| ÷ mean true); "
              f"target: ours ≤ {RATIO_TARGET}× clicked-only")
        print(f"{'model':<22}" + "".join(f"{i / 10:>7.1f}" for i in range(1, 11)) + f"{'error':>8}{'bias':>8}"
              f"{'ratio':>7} {'s':>5}")
        ref = next((o.error for o in biased if o.name == "dfm clicked-only"), float("nan"))
        for o in biased:
            print(f"{o.name:<22}" + "".join(f"{b:+7.1%}" for b in o.tenths) + f"{o.error:8.3f}{o.bias:+8.1%}"
                  f"{o.error / ref:7.2f} {o.seconds:5.0f}")
        errs = {o.name: o.error for o in biased}
        ours = biased[0].error / ref
        peers = [e for name, e in errs.items() if name.startswith("dfm clicked-only")]
        if "esmm tuned" in errs:  # against the best clicked-only setting of this run (default or tuned)
            ours = errs["esmm tuned"] / min(peers)
            print(f"defaults: ours / clicked-only error {biased[0].error / ref:.2f}; esmm tuned ÷ best clicked-only:")
        print(f"ours / clicked-only error: {ours:.2f} (target ≤ {RATIO_TARGET}) "
              f"{'yes' if ours <= RATIO_TARGET else 'no'}")
        ok &= ours <= RATIO_TARGET
    return ok


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import os
    from dataclasses import asdict

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200_000, help="impressions per world (default 200000)")
    ap.add_argument("--quick", action="store_true", help="20k impressions: a smoke run (targets not expected)")
    ap.add_argument("--days", type=float, default=60.0, help="event-time span of the run (days)")
    ap.add_argument("--tick", type=float, default=24.0, help="hours between elapsed-time updates")
    ap.add_argument("--fresh", type=int, default=2000, help="fresh requests (x every arm) for the final models")
    ap.add_argument("--only", choices=["delay", "selection", "pipeline"], default=None)
    ap.add_argument("--pipeline", action="store_true", help="also measure 3. (through the pipeline)")
    ap.add_argument("--conversion-rate", type=float, default=0.25,
                    help="the delayed-conversion world's conversion rate (default 0.25)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm", action="store_true",
                    help="1.: the FTRL models' prior is the mean pCVR of a history of the same world (else its "
                         "conversion_rate, the rate at the centre of its logits)")
    ap.add_argument("--conversions-at", choices=["arrival", "tick"], default="arrival",
                    help="when dfm and esmm (every setting) learn a conversion: on arrival, or at the next tick")
    ap.add_argument("--esmm-options", default=json.dumps(TUNED_ESMM), help="esmm tuned (JSON kwargs; none: off)")
    ap.add_argument("--dfm-options", default=json.dumps(TUNED_DFM),
                    help="dfm's other settings: clicked-only in 2., ours in 1. (JSON list of kwargs; none: off)")
    args = ap.parse_args(argv)
    tuned = [None if v == "none" else json.loads(v) for v in (args.esmm_options, args.dfm_options)]
    steps = 20_000 if args.quick else args.steps
    print(f"cvr calibration: {steps} impressions per world over {args.days:g} days, ticks every {args.tick:g} h, "
          f"conversions learned at {args.conversions_at}, "
          f"seed {args.seed}; load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    delayed = [] if args.only in ("selection", "pipeline") else delayed_conversions(
        steps, args.days, args.tick, args.seed, args.conversion_rate, args.conversions_at, tuned[1], args.warm)
    biased = [] if args.only in ("delay", "pipeline") else selection_bias(steps, args.days, args.tick, args.seed,
                                                                          args.fresh, *tuned, args.conversions_at)
    ok = report(delayed, biased)
    if args.pipeline or args.only == "pipeline":
        from benchmarks import calibration_pipeline as through

        ok &= through.report(through.measure(steps, args.days, args.tick, args.seed, args.conversion_rate))
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}; all targets met: {ok}")
    print("JSON " + json.dumps({"benchmark": "calibration-cvr", "steps": steps, "days": args.days, "tick": args.tick,
                                "seed": args.seed, "delayed": [asdict(o) for o in delayed],
                                "selection": [asdict(o) for o in biased]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
