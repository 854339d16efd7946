"""``banditloop evaluate``: off-policy estimates of a policy's value on a logged stream."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from banditloop.commands.common import (
    add_db_option,
    add_feature_options,
    add_model_options,
    add_output_options,
    db_url,
    emit,
    feature_spec,
    model_config,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="estimate what a policy would have earned on a logged stream (off-policy evaluation)",
        description="Joins the log as replay does and estimates the target policy's value (mean reward per "
                    "impression) with replay, IPS, SNIPS, cross-fitted DR, DR with the variance-optimal "
                    "control-variate coefficient (dr_cv), clipped IPS and switch-DR, each "
                    "with a 95% confidence interval (--interval) and effective sample size, beside the logging "
                    "policy's own value. The target is a learner (--learner, fresh, with --param) or a "
                    "checkpointed model (--model, merged over its shards as the scorer serves it); "
                    "--progressive lets it learn as it goes through the log. Impressions without a "
                    "propensity or candidates, and slate positions > 0, are counted and excluded. "
                    "--calibration --model NAME instead compares the model's predicted probability of each "
                    "impression's outcome (click, or conversion for a conversion model) with the outcome: log loss, "
                    "AUC, expected calibration error, predicted / observed overall and per arm, and with --plot a "
                    "reliability diagram.")
    p.add_argument("log", help="event log path (.jsonl / .jsonl.gz) whose impressions carry propensities")
    add_model_options(p, learner_required=False)
    add_feature_options(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--progressive", action="store_true",
                   help="the learner learns every impression after giving its probabilities for it")
    g.add_argument("--folds", type=int, default=2, help="cross-fitting folds of DR's reward model (default 2)")
    g.add_argument("--reward-model", choices=("ridge", "logistic"), default="ridge",
                   help="DR's cross-fitted reward model: per-arm ridge regression (default) or per-arm logistic "
                        "regression of the rewards rescaled to [0, 1] (the right link for clicks)")
    g.add_argument("--clip", type=float, default=20.0,
                   help="weight cap of clipped IPS and switch threshold of switch-DR (default 20)")
    g.add_argument("--draws", type=int, default=None,
                   help="Monte Carlo draws for Thompson-sampling targets (default: the learner's, or 256)")
    g.add_argument("--interval", choices=("default", "normal", "el"), default="default",
                   help="95%% intervals: el = empirical likelihood with E[w]=1 (covers under heavy importance "
                        "weights), normal = CLT; default: el for ips/snips/dr, normal for the clipped ones, "
                        "replay and the logging policy")
    g.add_argument("--weight-bound", default="logged", metavar="logged|W|inf|none",
                   help="el intervals: the sample may miss rows of weight up to W (e.g. K/ε for ε-greedy over K "
                        "arms); logged (default) = the target's largest probability / the smallest logged propensity; "
                        "inf = unbounded (widest); "
                        "none = no unseen row (plain EL with E[w]=1, narrowest)")
    g.add_argument("--seed", type=int, default=0, help="seed of the replay matching and the DR folds")
    g.add_argument("--plot", default=None, metavar="FILE.png",
                   help="write the estimates with their intervals (with --calibration: the reliability diagram)")
    c = p.add_argument_group("calibration")
    c.add_argument("--calibration", action="store_true",
                   help="report the calibration of --model's predicted probabilities on the log instead of "
                        "off-policy estimates")
    c.add_argument("--bins", type=int, default=10, help="bins of the ECE and the reliability diagram (default 10)")
    c.add_argument("--binning", choices=("mass", "width"), default="mass",
                   help="equal-mass bins (as many impressions each; default) or equal-width bins on [0, 1]")
    p.add_argument("--strict", action="store_true", help="stop at the first invalid line")
    add_db_option(p)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from banditloop.commands.common import CommandError
    from banditloop.evaluation.policy import TargetPolicy
    from banditloop.evaluation.run import EvaluationOptions, evaluate_log
    from banditloop.pipeline.logs import StrictModeError

    if args.calibration:
        return _run_calibration(args)
    if args.bins != 10 or args.binning != "mass":
        raise CommandError("--bins and --binning go with --calibration")
    if (args.learner is None) == (args.model is None):
        raise CommandError("give the target policy as --learner NAME or --model NAME (a checkpoint), one of them")
    if args.folds < 2:
        raise CommandError("--folds must be >= 2")
    if not args.clip > 0:
        raise CommandError("--clip must be > 0")
    weight_bound = _weight_bound(args.weight_bound)
    if args.draws is not None and args.draws < 1:
        raise CommandError("--draws must be >= 1")
    if args.model is not None:
        from banditloop.pipeline.checkpoints import CheckpointStore

        store = CheckpointStore(db_url(args))
        try:
            target = TargetPolicy.from_store(store, args.model, draws=args.draws)
        except LookupError as exc:
            raise CommandError(f"{exc} in {db_url(args)}") from None
        finally:
            store.close()
    else:
        target = TargetPolicy.fresh(model_config(args, feature_spec(args)), draws=args.draws)
    options = EvaluationOptions(progressive=args.progressive, folds=args.folds, clip=args.clip, seed=args.seed,
                                reward_model=args.reward_model,
                                draws=args.draws, strict=args.strict, quiet=args.quiet or args.json,
                                interval=None if args.interval == "default" else args.interval,
                                weight_bound=weight_bound)
    try:
        summary = evaluate_log(args.log, target, options)
    except FileNotFoundError as exc:
        raise CommandError(f"no such log: {exc.filename}") from None
    except (StrictModeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if args.plot:
        from banditloop.evaluation.plot import plot_estimates

        summary["plot"] = str(plot_estimates([summary], args.plot))
    if args.json:
        emit(summary, args)
    else:
        _print(summary)
    return 0


def _run_calibration(args: argparse.Namespace) -> int:
    from banditloop.commands.common import CommandError
    from banditloop.evaluation.calibration_log import calibration_report
    from banditloop.evaluation.policy import TargetPolicy
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.logs import StrictModeError

    if args.model is None or args.learner is not None:
        raise CommandError("--calibration needs --model NAME (a checkpointed model), not --learner")
    if args.progressive:
        raise CommandError("--calibration evaluates the checkpointed model as it is: not with --progressive")
    if args.bins < 1:
        raise CommandError("--bins must be >= 1")
    store = CheckpointStore(db_url(args))
    try:
        target = TargetPolicy.from_store(store, args.model)
    except LookupError as exc:
        raise CommandError(f"{exc} in {db_url(args)}") from None
    finally:
        store.close()
    try:
        summary = calibration_report(args.log, target, bins=args.bins, binning=args.binning, strict=args.strict,
                                     quiet=args.quiet or args.json)
    except FileNotFoundError as exc:
        raise CommandError(f"no such log: {exc.filename}") from None
    except (StrictModeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if args.plot:
        from banditloop.evaluation.plot import plot_reliability

        summary["plot"] = str(plot_reliability(summary, args.plot))
    if args.json:
        emit(summary, args)
    else:
        _print_calibration(summary)
    return 0


def _print_calibration(s: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(f"calibration of {s['model']} ({s['learner']}, {s['prediction']}) on {s['log']}: {s['impressions']} "
              f"impressions, {s['positives']} with a {s['reward']} reward\n")
    out.write(f"log loss {_fmt(s['log_loss'])}   AUC {_fmt(s['auc'])}   ECE {_fmt(s['ece'])} ({s['bins']} equal-"
              f"{s['binning']} bins)\n")
    out.write(f"predicted mean {_fmt(s['predicted_mean'])}   observed rate {_fmt(s['observed_rate'])}   "
              f"predicted / observed {_fmt(s['predicted_over_observed'])}\n")
    width = max([len("arm"), *(len(a) for a in s["per_arm"])])
    out.write(f"{'arm':<{width}} {'impressions':>11} {'predicted':>10} {'observed':>10} {'pred/obs':>9}\n")
    for arm, row in s["per_arm"].items():
        out.write(f"{arm:<{width}} {row['impressions']:>11} {_fmt(row['predicted_mean']):>10} "
                  f"{_fmt(row['observed_rate']):>10} {_fmt(row['predicted_over_observed']):>9}\n")
    out.write(f"{'bin':>3} {'count':>8} {'predicted':>10} {'observed':>10}\n")
    for i, row in enumerate(s["reliability"]):
        out.write(f"{i:>3} {row['count']:>8} {_fmt(row['predicted']):>10} {_fmt(row['observed']):>10}\n")
    if s["unknown_arm_impressions"]:
        out.write(f"note: {s['unknown_arm_impressions']} impressions of arms the model never learned "
                  "(predicted from its shared weights)\n")
    if "plot" in s:
        out.write(f"plot: {s['plot']}\n")
    out.flush()


def _weight_bound(text: str) -> float | str | None:
    from banditloop.commands.common import CommandError

    word = text.strip().lower()
    if word in ("logged", "none"):
        return None if word == "none" else "logged"
    try:
        bound = float(word)
    except ValueError:
        bound = math.nan
    if not bound > 1:  # also NaN
        raise CommandError(f"--weight-bound must be a number > 1, logged, inf or none, got {text!r}")
    return bound


def _fmt(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.5g}"


def _print(summary: dict[str, Any]) -> None:
    from banditloop.evaluation.run import ESTIMATORS

    out = sys.stdout
    out.write(f"policy {summary['policy']} ({summary['mode']}) on {summary['log']}: {summary['used']} of "
              f"{summary['impressions']} impressions used; reward = {summary['reward']}\n")
    out.write(f"{'estimator':<12} {'value':>10} {'95% CI':>23} {'kind':>6} {'ESS':>10} {'lift':>9}\n")
    for name in ("logging", *ESTIMATORS):
        e = summary[name]
        ci = f"[{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]"
        lift = e.get("lift")
        lift_s = "-" if lift is None else f"{100 * lift:+.1f}%"
        out.write(f"{name:<12} {_fmt(e['value']):>10} {ci:>23} {e['interval']:>6} {_fmt(e['ess']):>10} "
                  f"{lift_s:>9}\n")
    out.write(f"excluded: {summary['excluded']}; logged arm not playable by the target: "
              f"{summary['logged_arm_ineligible']}; uniformly random log: {summary['uniform_logging']}\n")
    if "note" in summary["replay"]:
        out.write(f"note: {summary['replay']['note']}\n")
    if "plot" in summary:
        out.write(f"plot: {summary['plot']}\n")
    out.flush()
