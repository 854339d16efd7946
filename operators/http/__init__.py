"""The HTTP scoring service (``banditloop serve``): Starlette on uvicorn around :class:`operators.scorer.Scorer`.

* :mod:`operators.http.app` — the endpoints and the ASGI app (:func:`create_app`);
* :mod:`operators.http.schemas` — request/response structs and input limits (msgspec);
* :mod:`operators.http.slate` — the propensities logged for ranked slates;
* :mod:`operators.http.metrics` — Prometheus metrics in the app's own registry;
* :mod:`operators.http.publisher` — non-blocking hand-off of events to Kafka.

To score in-process, without HTTP, use :class:`operators.scorer.Scorer` directly.
"""

from typing import Any

__all__ = ["Limits", "ScoringService", "create_app"]


def __getattr__(name: str) -> Any:
    # lazy, so that ``banditloop --help`` does not import Starlette
    if name in ("ScoringService", "create_app"):
        from operators.http import app

        return getattr(app, name)
    if name == "Limits":
        from operators.http.schemas import Limits

        return Limits
    raise AttributeError(name)
