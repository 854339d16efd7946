"""Simulated worlds with known ground truth: closed-loop runs, event logs and regret.

See :mod:`banditloop.simulators.world` for the model and :mod:`banditloop.simulators.logs` for event logs.
"""

from banditloop.simulators.config import WorldConfig
from banditloop.simulators.world import Outcome, Request, World

__all__ = ["World", "WorldConfig", "Request", "Outcome"]
