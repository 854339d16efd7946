"""Calibration metrics of predicted probabilities against binary outcomes (``evaluate --calibration``).

All functions take ``p`` (predicted probabilities) and ``y`` (outcomes, 0 or 1) of equal length:

* :func:`log_loss`: mean ``−(y log p + (1 − y) log(1 − p))``, ``p`` clipped to ``[1e-15, 1 − 1e-15]``;
* :func:`auc`: the probability that a random positive is ranked above a random negative, ties counting
  one half (Mann-Whitney U with average ranks); None without both classes;
* :func:`reliability` and :func:`expected_calibration_error`: the rows sorted by ``p`` and cut into
  ``bins`` bins, either of **equal mass** (``"mass"``, the default: as many rows per bin, up to one,
  ``numpy.array_split`` of the sorted rows; rows of equal ``p`` may straddle two bins) or of **equal
  width** on [0, 1] (``"width"``: bin ``min(⌊p·bins⌋, bins − 1)``; with click rates of a few per cent
  nearly every row falls in the first bin, so equal mass is the default). ECE = Σ over bins of
  (rows in the bin / all rows) × |mean p − mean y|;
* :func:`ratio`: Σ p ÷ Σ y, predicted ÷ observed (None when nothing was observed).

>>> import numpy as np
>>> p, y = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
>>> auc(p, y), round(log_loss(p, y), 4), ratio(p, y)
(0.75, 0.4723, 0.825)
"""

from __future__ import annotations

from typing import Any

import numpy as np

BINNINGS = ("mass", "width")
_EPS = 1e-15


def _arrays(p: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError("p and y must be 1-d arrays of the same length")
    return p, y


def log_loss(p: Any, y: Any) -> float | None:
    p, y = _arrays(p, y)
    if p.size == 0:
        return None
    q = np.clip(p, _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log1p(-q)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size)
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    ends = np.concatenate((starts[1:], [values.size]))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return ranks


def auc(p: Any, y: Any) -> float | None:
    p, y = _arrays(p, y)
    positive = y > 0.5
    n1 = int(positive.sum())
    n0 = p.size - n1
    if n1 == 0 or n0 == 0:
        return None
    ranks = _average_ranks(p)
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def ratio(p: Any, y: Any) -> float | None:
    p, y = _arrays(p, y)
    observed = float(y.sum())
    return float(p.sum()) / observed if observed > 0 else None


def _bin_rows(p: np.ndarray, bins: int, binning: str) -> list[np.ndarray]:
    if bins < 1:
        raise ValueError("bins must be >= 1")
    if binning == "mass":
        return [part for part in np.array_split(np.argsort(p, kind="mergesort"), bins) if part.size]
    if binning == "width":
        index = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(np.intp), bins - 1)
        return [rows for b in range(bins) if (rows := np.flatnonzero(index == b)).size]
    raise ValueError(f"binning must be one of {BINNINGS}, not {binning!r}")


def reliability(p: Any, y: Any, bins: int = 10, binning: str = "mass") -> list[dict[str, float]]:
    """One row per non-empty bin, in increasing ``p``: ``count``, mean ``predicted``, ``observed`` rate,
    and the bin's smallest and largest prediction (``low``, ``high``).

    >>> [r["count"] for r in reliability([0.05, 0.1, 0.6, 0.95], [0, 0, 1, 1], bins=2, binning="width")]
    [2, 2]
    """
    p, y = _arrays(p, y)
    out = []
    for rows in _bin_rows(p, bins, binning):
        out.append({"count": int(rows.size), "predicted": float(p[rows].mean()), "observed": float(y[rows].mean()),
                    "low": float(p[rows].min()), "high": float(p[rows].max())})
    return out


def expected_calibration_error(p: Any, y: Any, bins: int = 10, binning: str = "mass") -> float | None:
    """Σ over bins of the bin's share of rows × |mean predicted − observed rate| (None without rows).

    >>> round(expected_calibration_error([0.1, 0.3, 0.6, 0.8], [0, 1, 1, 1], bins=2), 4)
    0.3
    """
    p, y = _arrays(p, y)
    if p.size == 0:
        return None
    rows = reliability(p, y, bins, binning)
    return float(sum(r["count"] * abs(r["predicted"] - r["observed"]) for r in rows) / p.size)


def calibration_summary(p: Any, y: Any, arms: Any = None, bins: int = 10, binning: str = "mass") -> dict[str, Any]:
    """Every metric above at once, and per arm (``arms``: each row's arm) the impressions, mean predicted,
    observed rate and predicted ÷ observed."""
    p, y = _arrays(p, y)
    summary: dict[str, Any] = {
        "impressions": int(p.size), "positives": int((y > 0.5).sum()),
        "predicted_mean": float(p.mean()) if p.size else None, "observed_rate": float(y.mean()) if p.size else None,
        "predicted_over_observed": ratio(p, y), "log_loss": log_loss(p, y), "auc": auc(p, y),
        "ece": expected_calibration_error(p, y, bins, binning), "bins": bins, "binning": binning,
        "reliability": reliability(p, y, bins, binning),
    }
    if arms is not None:
        arms = np.asarray(arms)
        per_arm = {}
        for arm in sorted(set(arms.tolist()), key=str):
            rows = arms == arm
            per_arm[str(arm)] = {"impressions": int(rows.sum()), "predicted_mean": float(p[rows].mean()),
                                 "observed_rate": float(y[rows].mean()),
                                 "predicted_over_observed": ratio(p[rows], y[rows])}
        summary["per_arm"] = per_arm
    return summary
