"""``banditloop demo``: the whole loop, live, on loopback (see :mod:`banditloop.demo.run`).

Parts, bottom up (each imports only the ones above it in this list):

* :mod:`~banditloop.demo.options`: what a run is asked to do (:class:`DemoOptions`, the demo world);
* :mod:`~banditloop.demo.stats`: what the users saw, per second (:class:`DemoStats`);
* :mod:`~banditloop.demo.http_client`, :mod:`~banditloop.demo.processes`: HTTP keep-alive client;
  child processes in their own process groups, signals;
* :mod:`~banditloop.demo.config`: the consumer's ``ModelConfig``, its command line, the bootstrap
  checkpoint;
* :mod:`~banditloop.demo.users`, :mod:`~banditloop.demo.monitor`, :mod:`~banditloop.demo.view`,
  :mod:`~banditloop.demo.plot`, :mod:`~banditloop.demo.summary`, :mod:`~banditloop.demo.readiness`:
  simulated users; the checkpoints; the live view; the PNG; the summary; waiting for the children;
* :mod:`~banditloop.demo.run`: one run (:func:`run_demo`).
"""

from __future__ import annotations

from banditloop.demo.options import DEMO_WORLD, DemoError, DemoOptions
from banditloop.demo.run import DemoRun, run_demo
from banditloop.demo.stats import DemoStats

__all__ = ["DEMO_WORLD", "DemoError", "DemoOptions", "DemoRun", "DemoStats", "run_demo"]
