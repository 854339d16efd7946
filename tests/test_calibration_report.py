"""``evaluate --calibration``: the metrics by hand (log loss, AUC with ties, ECE on tiny arrays), the
report on a simulated log and its checkpoint, and its command-line mistakes (one line, exit 2)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from banditloop.cli import main
from banditloop.evaluation.calibration import (
    auc,
    calibration_summary,
    expected_calibration_error,
    log_loss,
    ratio,
    reliability,
)
from tests.test_cli_errors import assert_one_line_error, banditloop


# -- the metrics, by hand ------------------------------------------------------------------------------
def test_log_loss_by_hand():
    p, y = [0.8, 0.3, 0.5], [1, 0, 1]
    assert log_loss(p, y) == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.5)) / 3)
    assert log_loss([0.0, 1.0], [0, 1]) == pytest.approx(0.0, abs=1e-12)  # clipped, finite
    assert math.isfinite(log_loss([0.0], [1]))
    assert log_loss([], []) is None


def test_auc_with_ties_counts_half():
    # positives at 0.5 and 0.9, negatives at 0.5 and 0.1: pairs (0.5+, 0.5-) tie = 1/2, (0.5+, 0.1-) = 1,
    # (0.9+, 0.5-) = 1, (0.9+, 0.1-) = 1: AUC = 3.5 / 4
    assert auc([0.5, 0.9, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auc([0.3, 0.3, 0.3], [1, 0, 1]) == pytest.approx(0.5)  # all tied
    assert auc([0.2, 0.4], [0, 1]) == 1.0 and auc([0.2, 0.4], [1, 0]) == 0.0
    assert auc([0.2, 0.4], [1, 1]) is None


def test_ece_equal_mass_and_equal_width_by_hand():
    p = np.array([0.05, 0.15, 0.25, 0.7, 0.9, 0.95])
    y = np.array([0, 0, 1, 1, 1, 0])
    # equal mass, 2 bins: {0.05, 0.15, 0.25} mean 0.15 observed 1/3; {0.7, 0.9, 0.95} mean 0.85 observed 2/3
    expected = 0.5 * abs(0.15 - 1 / 3) + 0.5 * abs(0.85 - 2 / 3)
    assert expected_calibration_error(p, y, bins=2, binning="mass") == pytest.approx(expected)
    # equal width, 10 bins: 0.05 | 0.15 | 0.25 | 0.7 | 0.9, 0.95 (the last bin holds 0.9 and 0.95)
    rows = reliability(p, y, bins=10, binning="width")
    assert [r["count"] for r in rows] == [1, 1, 1, 1, 2]
    width = (0.05 + 0.15 + abs(0.25 - 1) + abs(0.7 - 1) + 2 * abs(0.925 - 0.5)) / 6
    assert expected_calibration_error(p, y, bins=10, binning="width") == pytest.approx(width)
    assert reliability([1.0], [1], bins=10, binning="width")[0]["count"] == 1  # p = 1 in the last bin
    with pytest.raises(ValueError):
        reliability(p, y, binning="quantile")


def test_summary_per_arm_ratio():
    s = calibration_summary([0.2, 0.4, 0.1, 0.1], [1, 0, 0, 0], arms=["a", "a", "b", "b"], bins=2)
    assert s["predicted_over_observed"] == pytest.approx(0.8 / 1)
    assert s["per_arm"]["a"]["predicted_over_observed"] == pytest.approx(0.6)
    assert s["per_arm"]["b"]["predicted_over_observed"] is None  # nothing observed
    assert ratio([0.5], [0]) is None


# -- the report on a simulated log -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    db, log = f"sqlite:///{d / 'm.db'}", str(d / "events.jsonl")
    common = ["--arms", "3", "--dim", "2", "--steps", "3000",
              "--click-delay", "5", "--db", db, "--quiet", "--json", "--out"]
    assert main(["simulate", "--policy", "ctr-ftrl", "--model", "ftrl", *common, log]) == 0
    assert main(["simulate", "--policy", "linucb", "--model", "lin", *common, str(d / "lin.jsonl")]) == 0
    return d, db, log


def test_report_json_table_and_plot(simulated, capsys):
    d, db, log = simulated
    capsys.readouterr()
    plot = d / "reliability.png"
    assert main(["evaluate", log, "--calibration", "--model", "ftrl", "--db", db, "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "calibration" and out["prediction"] == "ctr" and out["impressions"] == 3000
    assert out["binning"] == "mass" and len(out["reliability"]) == 10
    assert 0.5 < out["auc"] < 1 and out["log_loss"] > 0 and out["ece"] < 0.05
    assert 0.8 < out["predicted_over_observed"] < 1.25
    assert sum(a["impressions"] for a in out["per_arm"].values()) == 3000
    assert plot.stat().st_size > 1000
    assert main(["evaluate", log, "--calibration", "--model", "ftrl", "--db", db, "--quiet", "--binning",
                 "width", "--bins", "5"]) == 0
    text = capsys.readouterr().out
    assert "log loss" in text and "AUC" in text and "equal-width" in text and "pred/obs" in text


def test_cli_mistakes_are_one_line(simulated):
    d, db, log = simulated
    assert_one_line_error(banditloop("evaluate", log, "--calibration", "--model", "lin", "--db", db, cwd=d),
                          "predicts no probability")
    assert_one_line_error(banditloop("evaluate", log, "--calibration", "--learner", "ctr-ftrl", "--db", db, cwd=d),
                          "--calibration needs --model")
    assert_one_line_error(banditloop("evaluate", log, "--model", "ftrl", "--bins", "5", "--db", db, cwd=d),
                          "go with --calibration")
