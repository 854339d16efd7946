"""PNG plots of demo runs (matplotlib, Agg backend: no display needed, safe in threads and CI)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from banditloop.demo.stats import DemoStats

#: seconds of the rolling window of the CTR curves
CTR_WINDOW = 5


def rolling_ratio(values: Sequence[float], counts: Sequence[float], window: int) -> Iterator[float]:
    """``sum(values) / sum(counts)`` over the last ``window`` buckets (NaN while the window is empty)."""
    acc_v = acc_n = 0.0
    for i, (v, c) in enumerate(zip(values, counts, strict=True)):
        acc_v += v
        acc_n += c
        if i >= window:
            acc_v -= values[i - window]
            acc_n -= counts[i - window]
        yield acc_v / acc_n if acc_n > 0 else math.nan


def plot_demo(stats: DemoStats, path: str | Path, *, title: str = "banditloop demo") -> Path:
    """Three panels over the seconds of the run, written to ``path`` (PNG):

    1. cumulative expected regret (oracle minus policy) of the served policy and of uniform random;
    2. CTR (expected click probability of the shown arm, rolling ``CTR_WINDOW`` s) of the served
       policy, the oracle and uniform random, with the served policy's realised click rate faintly
       behind and a tick on the time axis for each new model version served;
    3. the model version served and the checkpoint backlog (impressions served but not yet in a
       checkpoint; not the consumer's Kafka lag).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with stats.lock:
        buckets = list(stats.buckets)
        versions = list(stats.versions)
        monitor = list(stats.monitor)
    t = np.arange(len(buckets)) + 1.0  # end of each one-second bucket
    n = [b.n for b in buckets]
    served = [b.served for b in buckets]
    oracle = [b.oracle for b in buckets]
    random = [b.random for b in buckets]
    clicks = [float(b.clicks) for b in buckets]
    regret = np.cumsum(np.subtract(oracle, served))
    random_regret = np.cumsum(np.subtract(oracle, random))

    fig, (ax_regret, ax_ctr, ax_model) = plt.subplots(
        3, 1, figsize=(10, 10), sharex=True, gridspec_kw={"height_ratios": [3, 3, 2]})
    fig.suptitle(title, fontsize=12)

    ax_regret.plot(t, random_regret, color="tab:gray", linestyle=":", linewidth=2, label="uniform random")
    ax_regret.plot(t, regret, color="tab:blue", linewidth=2, label="served policy")
    ax_regret.set_ylabel("cumulative regret\n(expected clicks lost vs oracle)")
    ax_regret.legend(loc="upper left")
    ax_regret.grid(alpha=0.3)

    ax_ctr.plot(t, list(rolling_ratio(clicks, n, CTR_WINDOW)), color="tab:blue", alpha=0.25, linewidth=1,
                label="served, realised clicks")
    ax_ctr.plot(t, list(rolling_ratio(oracle, n, CTR_WINDOW)), color="tab:green", linestyle="--", linewidth=2,
                label="oracle")
    ax_ctr.plot(t, list(rolling_ratio(served, n, CTR_WINDOW)), color="tab:blue", linewidth=2, label="served policy")
    ax_ctr.plot(t, list(rolling_ratio(random, n, CTR_WINDOW)), color="tab:gray", linestyle=":", linewidth=2,
                label="uniform random")
    for when, _ in versions[1:]:
        ax_ctr.axvline(when, ymin=0.0, ymax=0.03, color="tab:orange", linewidth=1)
    ax_ctr.set_ylabel(f"CTR (expected, rolling {CTR_WINDOW} s)")
    ax_ctr.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax_ctr.set_ylim(bottom=0)
    ax_ctr.legend(loc="lower right", ncol=2)
    ax_ctr.grid(alpha=0.3)
    if len(versions) > 1:
        ax_ctr.text(0.01, 0.05, "ticks: new model version served", transform=ax_ctr.transAxes, fontsize=8,
                    color="tab:orange")

    if versions:
        vt = [when for when, _ in versions] + [float(len(buckets))]
        vv = [v for _, v in versions] + [versions[-1][1]]
        ax_model.step(vt, vv, where="post", color="tab:orange", linewidth=2, label="model version served")
    ax_model.set_ylabel("model version", color="tab:orange")
    ax_model.set_xlabel("seconds since the first request")
    ax_model.grid(alpha=0.3)
    if monitor:
        ax_backlog = ax_model.twinx()
        ax_backlog.plot([m.t for m in monitor], [m.backlog for m in monitor], color="tab:purple", linewidth=1.5,
                        label="checkpoint backlog")
        ax_backlog.set_ylabel("checkpoint backlog\n(impressions not yet checkpointed)", color="tab:purple")
        ax_backlog.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
