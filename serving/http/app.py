"""The Starlette application of the scoring service (``banditloop serve``).

Endpoints (JSON in and out; errors are ``{"error": "..."}`` with a 4xx/5xx status):

* ``POST /score`` — body :class:`~banditloop.serving.http.schemas.ScoreRequest`; answers
  :class:`~banditloop.serving.http.schemas.ScoreResponse`: the chosen arm, the slate (``k`` arms with
  position, propensity and impression id each), every eligible candidate's score, the model name,
  version and ``policy`` (``"model:version"``), and the chosen arm's ``pctr``, ``pcvr`` and
  ``expected_value`` when the model predicts them (absent otherwise; ``values`` and ``rank_by`` in the
  request: :mod:`banditloop.serving.values`). With a publisher, one impression event per shown arm
  goes to the impressions topic (queued, never waited for).
* ``POST /feedback`` — one click or conversion event (the event model of :mod:`banditloop.core.events`),
  published to its topic; 202 once Kafka acknowledged it, 503 without ``--bootstrap`` or when Kafka
  does not acknowledge in time.
* ``GET /healthz`` — 200 with the served model's info (``status`` ``ok``, or ``cold start`` while an
  untrained model is served as version 0), 503 while no model is loaded.
* ``GET /metrics`` — Prometheus text (see :mod:`banditloop.serving.http.metrics`).

Scoring runs on the event loop only when it is known to be cheap: a body of at most
:data:`INLINE_MAX_BYTES` with at most :data:`INLINE_MAX_CANDIDATES` candidates, all known to the
model, and the model not busy with another request (``Scorer.choose(blocking=False)``) — a fraction
of a millisecond, and the thread hop would add about 0.2 ms to it. Everything else (large requests,
never-seen arms, a busy model) is decoded, scored and encoded in a small thread pool
(``scoring_threads``, default 1; at most ``max_pending`` requests waiting for it, then 503), so that
the event loop keeps accepting connections, reading bodies and answering ``/healthz`` and
``/metrics`` whatever one request costs. ``scoring_threads=0`` scores everything on the event loop. Hot reloads happen
in the scorer's own thread and swap one reference (see :mod:`banditloop.serving.scorer`), so every
request is answered by exactly one model version.

Before anything is read: with :class:`~banditloop.serving.http.security.BearerAuth`, ``POST`` endpoints
need the bearer token (401); ``POST`` bodies must be declared ``Content-Type: application/json``
(415); a body must arrive within ``Limits.body_timeout`` seconds (408) and fit ``max_body_bytes`` (413).
Feedback dated more than ``max_future_skew`` seconds ahead of this clock is refused (422), so that no
click from the future can drag the learners' event-time watermark forward.

The same scoring is available in-process without HTTP: ``banditloop.serving.scorer.Scorer`` (``reload()``,
``start_auto_reload()``, ``choose()``); this module only adds validation, logging and transport.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from banditloop.core.events import DEFAULT_MAX_FUTURE_SKEW, Impression, InvalidEvent, check_not_future, decode_event
from banditloop.serving.guards import NewArmsRefused
from banditloop.serving.http.metrics import MetricsMiddleware, ServiceMetrics
from banditloop.serving.http.publisher import EventPublisher
from banditloop.serving.http.schemas import (
    FeedbackResponse,
    Limits,
    RequestError,
    ScoreRequest,
    ScoreResponse,
    SlateItem,
    decode_score_request,
    encoder,
)
from banditloop.serving.http.security import BearerAuth
from banditloop.serving.http.slate import loggable, slate_propensities
from banditloop.serving.scorer import Scorer, WouldBlock
from banditloop.serving.served import NoModel, ScoreResult
from banditloop.serving.values import RANK_BY, Predictions

log = logging.getLogger("banditloop.serve")

JSON = "application/json"
#: requests scored on the event loop when the model is free: bodies and candidate lists this small
#: (and no never-seen arm) cost a fraction of a millisecond
INLINE_MAX_BYTES = 16 * 1024
INLINE_MAX_CANDIDATES = 256


def json_response(body: Any, status: int = 200) -> Response:
    return Response(encoder.encode(body), status_code=status, media_type=JSON)


#: statuses answered before the request body was read (or while it was being read): the connection
#: is closed after them, so that the rest of an unread body cannot keep it open
_CLOSE_AFTER = frozenset({400, 401, 408, 413, 415})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = json_response({"error": message}, status)
    if headers:
        response.headers.update(headers)
    if status in _CLOSE_AFTER:
        response.headers["connection"] = "close"
    return response


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The body, refusing more than ``limit`` bytes (413) before reading it when the length is
    declared, and as soon as the limit is passed when it is streamed (chunked); a body that has not
    arrived in full within ``timeout`` seconds is refused with 408."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, "invalid Content-Length header") from None
        if size > limit:
            raise RequestError(413, f"body of {size} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise RequestError(413, f"body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"request body not received within {timeout:g} s") from None
    return b"".join(chunks)


def _is_json(content_type: str | None) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == JSON


class ScoringService:
    """The endpoints' logic, around one :class:`Scorer` and an optional :class:`EventPublisher`."""

    def __init__(self, scorer: Scorer, *, publisher: EventPublisher | None = None, limits: Limits | None = None,
                 metrics: ServiceMetrics | None = None, reload_interval: float | None = 1.0,
                 feedback_timeout: float = 10.0, auth: BearerAuth | None = None, auth_all: bool = False,
                 scoring_threads: int = 1, max_pending: int = 256,
                 max_future_skew: float = DEFAULT_MAX_FUTURE_SKEW, clock: Callable[[], float] = time.time,
                 rank_by: str = "model") -> None:
        """``auth``: bearer tokens for ``POST /score`` and ``POST /feedback`` (None: open); with
        ``auth_all`` for ``GET /healthz`` and ``GET /metrics`` too. ``scoring_threads``: threads that
        score (0: on the event loop); ``max_pending``: requests waiting for one before 503.
        ``max_future_skew``: seconds a feedback event's time may be ahead of ``clock()``. ``rank_by``:
        the ranking of requests that do not name one (:mod:`banditloop.serving.values`)."""
        if rank_by not in RANK_BY:
            raise ValueError(f"rank_by must be one of {RANK_BY}")
        self.rank_by = rank_by
        if scoring_threads < 0 or max_pending < 1:
            raise ValueError("scoring_threads must be >= 0 and max_pending >= 1")
        if not max_future_skew >= 0:
            raise ValueError("max_future_skew must be >= 0")
        self.scorer = scorer
        self.publisher = publisher
        self.limits = limits or Limits()
        self.metrics = metrics or ServiceMetrics()
        self.reload_interval = reload_interval
        self.feedback_timeout = feedback_timeout
        self.auth = auth
        self.auth_all = auth_all
        self.max_pending = max_pending
        self.max_future_skew = max_future_skew
        self.clock = clock
        self._pending = 0
        self._executor = None if scoring_threads == 0 else concurrent.futures.ThreadPoolExecutor(
            scoring_threads, thread_name_prefix="score")
        self.metrics.watch(scorer, None if publisher is None else publisher.queue_size)

    # -- lifecycle ------------------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(self.scorer.reload)
        except Exception:  # the database may be down at start-up: serve 503 and keep polling
            log.exception("initial load of model %r failed", self.scorer.model)
        if self.scorer.version is None:
            log.warning("model %r has no usable checkpoint yet; /score answers 503 until one appears",
                        self.scorer.model)
        if self.reload_interval:
            self.scorer.start_auto_reload(self.reload_interval)
        if self.publisher is not None:
            self.publisher.start()
        try:
            yield
        finally:
            self.scorer.close()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
            if self.publisher is not None:
                await asyncio.to_thread(self.publisher.close)

    # -- admission ------------------------------------------------------------------------------
    def _refuse(self, request: Request, *, body: bool) -> Response | None:
        """401 without a valid token where one is needed; 415 for a body that is not declared JSON."""
        if self.auth is not None and (body or self.auth_all) and not self.auth.allows(
                request.headers.get("authorization")):
            return error_response(401, "missing or invalid bearer token (Authorization: Bearer <token>)",
                                  {"www-authenticate": 'Bearer realm="banditloop"'})
        if body and not _is_json(request.headers.get("content-type")):
            return error_response(415, "Content-Type must be application/json")
        return None

    # -- endpoints ------------------------------------------------------------------------------
    async def score(self, request: Request) -> Response:
        refused = self._refuse(request, body=True)
        if refused is not None:
            return refused
        try:
            body = await read_body(request, self.limits.max_body_bytes, self.limits.body_timeout)
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        if self._executor is None:
            return self._score_now(body)
        if len(body) <= INLINE_MAX_BYTES:
            answered = self._score(body, inline=True)
            if answered is not None:
                return answered
        if self._pending >= self.max_pending:
            return error_response(503, f"overloaded: {self._pending} requests are waiting to be scored",
                                  {"retry-after": "1"})
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._score_now, body)
        finally:
            self._pending -= 1

    def _score_now(self, body: bytes) -> Response:
        answered = self._score(body)
        assert answered is not None  # only inline scoring declines
        return answered

    def _score(self, body: bytes, inline: bool = False) -> Response | None:
        """Decode, choose and answer one ``/score`` body (in a scoring thread, or on the loop). With
        ``inline``, None (nothing done) unless the request can be answered at once and cheaply."""
        try:
            req = decode_score_request(body, self.limits)
            if inline and len(req.candidates) > INLINE_MAX_CANDIDATES:
                return None
            result = self.scorer.choose(req.context, req.candidates, req.arm_features, req.k, blocking=not inline,
                                        values=req.values, rank_by=req.rank_by or self.rank_by)
        except WouldBlock:
            return None
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        except NoModel as exc:
            return error_response(503, str(exc))
        except NewArmsRefused as exc:
            if exc.rate_limited:
                return error_response(429, str(exc), {"retry-after": str(max(1, math.ceil(exc.retry_after)))})
            return error_response(422, str(exc))
        except ValueError as exc:  # e.g. every candidate retired
            return error_response(422, str(exc))
        propensities = slate_propensities(result)
        policy = f"{result.model}:{result.version}"
        slate = [SlateItem(arm=arm, position=i, propensity=p, impression_id=uuid.uuid4().hex)
                 for i, (arm, p) in enumerate(zip(result.ranking, propensities, strict=True))]
        if self.publisher is not None:
            self._publish_impressions(req, result, slate, policy)
        first = slate[0]
        predicted = result.predictions or Predictions()
        self.metrics.observe_prediction(predicted.p_reward)
        return json_response(ScoreResponse(
            impression_id=first.impression_id, arm=first.arm, propensity=first.propensity, model=result.model,
            version=result.version, policy=policy, slate=slate, scores=_finite(result.scores),
            request_id=req.request_id, pctr=_number(predicted.pctr), pcvr=_number(predicted.pcvr),
            expected_value=_number(predicted.expected_value)))

    def _publish_impressions(self, req: ScoreRequest, result: ScoreResult, slate: list[SlateItem],
                             policy: str) -> None:
        now = time.time()
        candidates = list(result.scores)  # the eligible candidates, as strings
        for item in slate:
            self.publisher.publish(Impression(  # type: ignore[union-attr]
                event_id=f"{item.impression_id}:i", ts=now, impression_id=item.impression_id, arm=item.arm,
                context=req.context, user_id=req.user_id, candidates=candidates, arm_features=req.arm_features,
                position=item.position, propensity=loggable(item.propensity), policy=policy))

    async def feedback(self, request: Request) -> Response:
        refused = self._refuse(request, body=True)
        if refused is not None:
            return refused
        try:
            body = await read_body(request, self.limits.max_body_bytes, self.limits.body_timeout)
        except RequestError as exc:
            return error_response(exc.status, exc.message)
        try:
            event = decode_event(body)
            if not isinstance(event, Impression):
                check_not_future(event, self.clock(), self.max_future_skew)
        except InvalidEvent as exc:
            status = 400 if exc.reason.startswith("not JSON") else 422
            return error_response(status, f"invalid event: {exc.reason}")
        if isinstance(event, Impression):
            return error_response(422, "POST /feedback takes click and conversion events; "
                                       "impressions are logged by POST /score")
        if self.publisher is None:
            return error_response(503, "feedback publishing is disabled: the service was started without "
                                       "--bootstrap; send clicks and conversions to Kafka directly")
        future = self.publisher.publish(event, ack=True)
        assert future is not None
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), self.feedback_timeout)
        except TimeoutError:
            return error_response(503, f"Kafka did not acknowledge the event within {self.feedback_timeout:g}s")
        except Exception as exc:
            return error_response(503, f"event not published: {exc}")
        tag = event.__struct_config__.tag
        return json_response(FeedbackResponse(accepted=True, type=str(tag), event_id=event.event_id,
                                              impression_id=event.impression_id), 202)

    async def healthz(self, request: Request) -> Response:
        refused = self._refuse(request, body=False)
        if refused is not None:
            return refused
        info = self.scorer.info()
        info["kafka"] = None if self.publisher is None else self.publisher.connected.is_set()
        if info.get("version") is None:
            return json_response({"status": "no model", **info}, 503)
        # version 0: an untrained model served until the first checkpoint (serve --cold-start)
        return json_response({"status": "cold start" if info["version"] == 0 else "ok", **info})

    async def metrics_endpoint(self, request: Request) -> Response:
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        refused = self._refuse(request, body=False)
        if refused is not None:
            return refused
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _number(value: float | None) -> float | None:
    """A prediction for JSON: absent when the model has none (or, never expected, a non-finite one)."""
    return value if value is not None and math.isfinite(value) else None


def _finite(scores: dict[str, float]) -> dict[str, float | None]:
    """Scores for JSON: a non-finite score (not expected, but never a 500) becomes null."""
    if all(math.isfinite(v) for v in scores.values()):
        return dict(scores)
    return {k: (v if math.isfinite(v) else None) for k, v in scores.items()}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


def create_app(service: ScoringService) -> Any:
    """The ASGI app: the Starlette routes wrapped in the metrics middleware."""
    app = Starlette(
        routes=[
            Route("/score", service.score, methods=["POST"]),
            Route("/feedback", service.feedback, methods=["POST"]),
            Route("/healthz", service.healthz, methods=["GET"]),
            Route("/metrics", service.metrics_endpoint, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=service.lifespan,
    )
    app.state.service = service
    return MetricsMiddleware(app, service.metrics)

