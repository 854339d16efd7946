"""The HTTP scoring service (``banditloop serve``): Starlette on uvicorn around
:class:`banditloop.serving.scorer.Scorer`.

* :mod:`banditloop.serving.http.app` — the endpoints and the ASGI app (:func:`create_app`);
* :mod:`banditloop.serving.http.schemas` — request/response structs and input limits (msgspec);
* :mod:`banditloop.serving.http.slate` — the propensities logged for ranked slates;
* :mod:`banditloop.serving.http.metrics` — Prometheus metrics in the app's own registry;
* :mod:`banditloop.serving.http.publisher` — non-blocking hand-off of events to Kafka.

To score in-process, without HTTP, use :class:`banditloop.serving.scorer.Scorer` directly.
"""

from typing import Any

__all__ = ["Limits", "ScoringService", "create_app"]


def __getattr__(name: str) -> Any:
    # lazy, so that ``banditloop --help`` does not import Starlette
    if name in ("ScoringService", "create_app"):
        from banditloop.serving.http import app

        return getattr(app, name)
    if name == "Limits":
        from banditloop.serving.http.schemas import Limits

        return Limits
    raise AttributeError(name)
