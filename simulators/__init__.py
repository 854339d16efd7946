"""Simulated worlds with known ground truth: closed-loop runs, event logs and regret.

See :mod:`simulators.world` for the model and :mod:`simulators.logs` for event logs.
"""

from simulators.config import WorldConfig
from simulators.world import Outcome, Request, World

__all__ = ["World", "WorldConfig", "Request", "Outcome"]
