"""What a demo run is asked to do: its options, the demo world and the demo's learner defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The demo world: ~6 % CTR under uniform random, ~22 % for the oracle, so that learning is visible
#: within a minute at ~150 requests/s (tuned on 2 cores: LinUCB with alpha 0.3 reaches ~90 % of the
#: oracle's advantage over random within ~20 s with one model reload per second). Clicks come ~2 s
#: after the impression, conversions ~10 s after the click (exponential delays, wall-clock seconds).
DEMO_WORLD: dict[str, Any] = {
    "base_ctr": 0.03,
    "bias_spread": 0.6,
    "theta_scale": 1.2,
    "click_delay_mean": 2.0,
    "conversion_delay_mean": 10.0,
}
#: hyper-parameters used unless ``DemoOptions.params`` sets them: with CTRs of a few percent, a
#: larger exploration bonus spends most of a one-minute run exploring
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "linucb": {"alpha": 0.3}, "hybrid-linucb": {"alpha": 0.3}, "diag-linucb": {"alpha": 0.3},
}
#: dimension of the shared (context × arm) features of learners that take them (as ``consume``'s
#: ``--shared-dim`` default)
SHARED_DIM = 64


class DemoError(RuntimeError):
    """A component failed to start or died during the run (the message names it and its log)."""


@dataclass
class DemoOptions:
    learner: str = "linucb"
    #: learner hyper-parameters (values as JSON decodes them), over :data:`DEFAULT_PARAMS`
    params: dict[str, Any] = field(default_factory=dict)
    arms: int = 10
    dim: int = 8
    seconds: float | None = 60.0
    requests: int | None = None
    rate: float = 150.0
    db: str = "sqlite:///banditloop.db"
    out: Path = Path("out")
    checkpoint_interval: float = 1.0
    reload_interval: float = 1.0
    partitions: int = 2
    seed: int = 7
    model: str | None = None
    world: dict[str, Any] = field(default_factory=dict)
    #: simulated users talking to the scorer at once
    workers: int = 8
    #: after the load stops: how long feedback still due is delivered
    drain_seconds: float = 3.0
    #: after the drain: how long to wait for the consumer to checkpoint everything sent
    catch_up_seconds: float = 15.0
    startup_timeout: float = 90.0
    #: the live view on the stream: redrawn in place on a terminal, else a line every five seconds
    view: bool = True
