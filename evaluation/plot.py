"""PNG plot of off-policy estimates: each estimator's value and 95% interval, per policy, beside the
logging policy's own value (matplotlib, imported lazily, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from banditloop.evaluation.run import ESTIMATORS


def plot_estimates(summaries: Sequence[dict[str, Any]], path: str | Path,
                   estimators: Sequence[str] = ("replay", "ips", "snips", "dr", "switch_dr")) -> Path:
    """One group of error bars per policy (one bar per estimator), the logging policy as the first group.

    ``summaries`` are :func:`banditloop.evaluation.run.evaluate_log` results on the same log. Replay is
    left out (and the omission noted under the plot) when the log is not uniformly random: it is biased.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise ValueError(f"unknown estimators {sorted(unknown)}")
    if not summaries:
        raise ValueError("nothing to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * (len(summaries) + 1), 4.2))
    logging = summaries[0]["logging"]
    ax.errorbar([0], [logging["value"]], yerr=[[logging["value"] - logging["ci_low"]],
                                               [logging["ci_high"] - logging["value"]]],
                fmt="s", color="black", capsize=4, label="logging policy (on-policy mean)")
    ax.axhline(logging["value"], color="black", lw=0.6, ls=":")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.7 / max(len(estimators), 1)
    skipped_replay = False
    for g, summary in enumerate(summaries, start=1):
        for j, name in enumerate(estimators):
            if name == "replay" and not summary.get("uniform_logging", False):
                skipped_replay = True
                continue
            est = summary.get(name) or {}
            value, lo, hi = est.get("value"), est.get("ci_low"), est.get("ci_high")
            if value is None or lo is None or hi is None:
                continue
            x = g - 0.35 + width * (j + 0.5)
            ax.errorbar([x], [value], yerr=[[value - lo], [hi - value]], fmt="o", capsize=3,
                        color=colors[j % len(colors)], label=name if g == 1 else None)
    ax.set_xticks(range(len(summaries) + 1))
    ax.set_xticklabels(["logging", *(f"{s['policy']}\n({s['mode']})" for s in summaries)])
    ax.set_ylabel(f"estimated value (mean {summaries[0].get('reward', 'reward')} per impression)")
    ax.set_title(f"off-policy estimates, 95% intervals: {Path(summaries[0]['log']).name}")
    ax.legend(fontsize=8, loc="best")
    if skipped_replay:
        fig.text(0.01, 0.01, "replay omitted: the log is not uniformly random", fontsize=7, color="gray")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(summary: dict[str, Any], path: str | Path) -> Path:
    """Reliability diagram of a calibration report (:func:`banditloop.evaluation.calibration_log.calibration_report`):
    each bin's observed rate against its mean prediction, the diagonal (perfect calibration), and under it
    a histogram of the bins' sizes. The axes end just above the largest rate when it is below 0.2 (click rates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary.get("reliability") or []
    if not rows:
        raise ValueError("nothing to plot")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.2, 6.0), height_ratios=(3, 1), sharex=True)
    predicted = [r["predicted"] for r in rows]
    observed = [r["observed"] for r in rows]
    top = max(max(predicted), max(observed), 1e-6) * 1.1
    small = top < 0.22
    limit = top if small else 1.0
    ax.plot([0, limit], [0, limit], color="gray", lw=0.8, ls="--", label="perfectly calibrated")
    ax.plot(predicted, observed, "o-", label=f"{summary.get('model', 'model')} ({summary.get('prediction', 'p')})")
    ax.set_xlim(0, limit)
    ax.set_ylim(0, limit)
    ax.set_ylabel(f"observed rate ({summary.get('reward', 'reward')})")
    ece = summary.get("ece")
    ratio = summary.get("predicted_over_observed")
    ece_s = "-" if ece is None else f"{ece:.4f}"
    ratio_s = "-" if ratio is None else f"{ratio:.3f}"
    ax.set_title(f"reliability, {len(rows)} {summary.get('binning', '')} bins: ECE {ece_s}, "
                 f"predicted/observed {ratio_s}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    # each bin from its smallest to its largest prediction (equal-mass bins: equal heights, the width shows the spread)
    widths = [max(r["high"] - r["low"], limit / 200) for r in rows]
    hist.bar([r["low"] for r in rows], [r["count"] for r in rows], width=widths, align="edge", color="C0",
             alpha=0.6, edgecolor="white")
    hist.set_xlabel("mean predicted probability")
    hist.set_ylabel("impressions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
