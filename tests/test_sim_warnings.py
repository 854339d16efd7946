"""Short simulated runs say what they cannot show (``pipeline/sim_warnings.py``), windows that cover the
world's delays (``simulators/conversions.covering_windows``), and ``dfm``/``esmm`` times relative to the
join's window (``operators/event_times.window_defaults``, filled in by ``ModelConfig.new_learner``)."""

import json
import math

import numpy as np
import pytest

from banditloop.cli import main
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.join import JoinConfig
from banditloop.pipeline.model import ModelConfig
from banditloop.pipeline.sim_warnings import feedback_warnings
from banditloop.simulators.config import WorldConfig
from banditloop.simulators.conversions import (
    COVERAGE,
    conversion_delays,
    covering_windows,
    delay_quantile,
    delay_survival,
)


@pytest.mark.parametrize(("distribution", "shape"), [("exponential", 1.0), ("lognormal", 1.5), ("weibull", 0.6)])
def test_delay_quantile_leaves_the_tail_it_names(distribution, shape):
    q = delay_quantile(distribution, 86400.0, shape, COVERAGE)
    assert float(delay_survival(distribution, 86400.0, shape, q)) == pytest.approx(1.0 - COVERAGE, rel=1e-6)


def test_covering_windows_cover_the_drawn_delays():
    world = WorldConfig(click_delay_mean=30.0, conversion_delay_mean=3600.0, conversion_delay="lognormal",
                        conversion_delay_shape=1.0)
    click, conversion = covering_windows(world)
    assert click == pytest.approx(-30.0 * math.log(1.0 - COVERAGE))
    rng = np.random.default_rng(0)
    clicks = rng.exponential(30.0, 200_000)
    total = clicks + conversion_delays("lognormal", 3600.0, 1.0, rng.exponential(1.0, 200_000))
    assert np.mean(clicks > click) == pytest.approx(1.0 - COVERAGE, abs=3e-4)
    assert np.mean(total > conversion) <= 2.0 * (1.0 - COVERAGE)  # a sum beyond it has a term beyond its own


@pytest.mark.parametrize("learner", ["dfm", "esmm"])
def test_event_time_models_take_their_times_from_the_window(learner):
    default = ModelConfig(learner, reward=RewardSpec("conversion")).new_learner()
    assert (default.tick, default.delay_prior, default.window) == (21600.0, 86400.0, 604800.0)  # as before
    clicks = ModelConfig(learner, reward=RewardSpec("click"), join=JoinConfig(click_window=3600.0)).new_learner()
    assert (clicks.tick, clicks.delay_prior, clicks.window) == (3600.0 / 28, 3600.0 / 7, 3600.0)
    day = ModelConfig(learner, {"tick": 600.0}, reward=RewardSpec("conversion"),
                      join=JoinConfig(conversion_window=86400.0)).new_learner()
    assert (day.tick, day.delay_prior, day.window) == (600.0, 86400.0 / 7, 86400.0)  # a given value wins
    assert ModelConfig(learner, reward=RewardSpec("conversion")).to_dict()["learner_params"] == {}  # not stored


def _warnings(learner, steps, params=None, reward="click", **join):
    config = ModelConfig(learner, params or {}, reward=RewardSpec(reward), join=JoinConfig(**join))
    return feedback_warnings(config.new_learner(), config, WorldConfig(rate=10.0), steps)


def test_warnings_name_what_a_short_run_cannot_learn():
    (close,) = _warnings("ts", 10_000)  # 1000 s of event time, a 1-hour click window
    assert "no click window closes" in close and "--click-window 208" in close
    assert _warnings("ts", 10_000, click_window=208.0) == []
    (late,) = _warnings("ts", 40_000)  # 4000 s: windows close inside the run, an hour late
    assert late.startswith("the click windows (3600 s) are 90 % of the run") and "--click-window 208" in late
    assert _warnings("ts", 400_000) == []  # a 1-hour window is under a tenth of the run
    assert _warnings("ts", 40_000, click_window=400.0) == []  # under twice the 208 s that cover the delays
    assert _warnings("linucb", 10_000) == []  # learns its zeros at the impression
    (long,) = _warnings("ts", 10_000, reward="conversion")  # 7 days: no window that covers fits in the run
    assert "no conversion window closes" in long and "more --steps" in long
    (tick,) = _warnings("dfm", 100_000, reward="conversion")  # a 6-hour tick, 10,000 s of event time
    assert "no tick falls inside the run (tick 21600 s" in tick and "tick=SECONDS below 10000" in tick
    assert _warnings("dfm", 100_000, {"tick": 600.0}, reward="conversion") == []
    assert _warnings("dfm", 10_000, click_window=208.0) == []  # 208 / 28 s ticks


def test_simulate_reports_its_warnings(tmp_path, capsys):
    assert main(["simulate", "--policy", "ts", "--steps", "300", "--json", "--no-checkpoint"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert len(out["warnings"]) == 1 and "no click window closes during the run" in out["warnings"][0]
    assert captured.err.count("banditloop simulate: warning: no click window closes") == 1
    assert main(["simulate", "--policy", "ts", "--steps", "300", "--click-window", "20", "--json",
                 "--no-checkpoint"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == []


def test_simulate_reports_the_clicks_its_window_refused(tmp_path, capsys):
    """Clicks later than ``--click-window`` are not lost from the report: the summary counts them as
    ``unmatched`` (the join dead-letters them with the reason), as replay's does."""
    summaries = {}
    for window in ("5", "3600"):
        log = tmp_path / f"run-{window}.jsonl"
        assert main(["simulate", "--policy", "esmm", "--reward", "conversion", "--steps", "400", "--click-window",
                     window, "--no-checkpoint", "--json", "--quiet", "--out", str(log)]) == 0
        summary = json.loads(capsys.readouterr().out)
        clicks_logged = sum(json.loads(line)["type"] == "click" for line in log.read_text().splitlines())
        assert summary["clicks"] + summary["unmatched"] == clicks_logged
        summaries[window] = summary
    assert summaries["5"]["unmatched"] > 0 and summaries["3600"]["unmatched"] == 0
    assert summaries["5"]["late"] == summaries["3600"]["late"] == 0
