"""Prometheus metrics of the scoring service, in a registry of its own.

A private :class:`~prometheus_client.CollectorRegistry` (not the process-global default) keeps two
apps in one process (tests) apart and keeps library metrics out of ``/metrics`` unless wanted.
Model figures (version, age, reloads, refused reloads) are read from the :class:`Scorer` at scrape
time by a custom collector, so they are never stale and the request path does not maintain them.

Series:

* ``banditloop_http_requests_total{endpoint,status}`` and
  ``banditloop_http_request_duration_seconds{endpoint}`` (histogram), for every request, recorded by
  :class:`MetricsMiddleware` (``endpoint`` is the route path, or ``other`` for unknown paths, so
  that scanners cannot blow up the label cardinality);
* ``banditloop_model_version``, ``banditloop_model_age_seconds`` (now minus the served checkpoint's
  creation time), ``banditloop_model_loaded``, ``banditloop_model_reloads_total``,
  ``banditloop_model_refused_reloads_total``;
* ``banditloop_events_published_total{type}``, ``banditloop_publish_errors_total{reason}``,
  ``banditloop_publish_queue_size``;
* ``banditloop_new_arms_refused_total``, ``banditloop_arm_table_resets_total``,
  ``banditloop_feature_cache_bytes`` (the scorer's bounded resources) and
  ``banditloop_connections_closed_total{reason}`` (``too_many``, ``evicted_half_open``,
  ``header_timeout``, ``oversized_headers``);
* calibration: ``banditloop_served_predicted_probability_sum`` and ``..._count`` (counters) and
  ``banditloop_served_predicted_probability_mean`` (gauge, since start): the model's predicted
  probability of its own reward (click, or conversion for ``esmm``/``dfm``: what ``simulate`` calls
  ``calibration``) for the arm chosen first, over every answered ``/score`` of a model that predicts
  one (``ctr-lr``, ``ctr-ftrl``, ``vw-ctr``, ``dfm``, ``esmm``). It is the *predicted* side only: the
  scorer does not see every outcome, so compare ``rate(..._sum[1h]) / rate(..._count[1h])`` with the
  clicks (or conversions) per served impression counted downstream (the learners' counters,
  ``banditloop models``) over the same period; their ratio is the calibration on what was served.
  Checkpoints carry no calibration figure, so none is exported from them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from banditloop.serving.http.connections import ConnectionStats
    from banditloop.serving.scorer import Scorer

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
ENDPOINTS = ("/score", "/feedback", "/healthz", "/metrics")
PUBLISH_ERROR_REASONS = ("queue_full", "send", "kafka", "oversized", "closed")


class ServiceMetrics:
    """Every metric of one app instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("banditloop_http_requests", "HTTP requests by endpoint and status code",
                                ("endpoint", "status"), registry=self.registry)
        self.latency = Histogram("banditloop_http_request_duration_seconds",
                                 "Time from receiving a request to sending its last body byte",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.published = Counter("banditloop_events_published", "Events acknowledged by Kafka, by type",
                                 ("type",), registry=self.registry)
        self.publish_errors = Counter("banditloop_publish_errors", "Events that were not published, by reason",
                                      ("reason",), registry=self.registry)
        for reason in PUBLISH_ERROR_REASONS:
            self.publish_errors.labels(reason)
        for kind in ("impression", "click", "conversion"):
            self.published.labels(kind)
        self._latency_children = {e: self.latency.labels(e) for e in (*ENDPOINTS, "other")}
        self._request_children: dict[tuple[str, int], Any] = {}
        self.predicted_sum = Counter("banditloop_served_predicted_probability_sum",
                                     "Sum of the model's predicted probability of its reward for the served "
                                     "choices (models that predict one)", registry=self.registry)
        self.predicted_count = Counter("banditloop_served_predicted_probability_count",
                                       "Served choices with a predicted probability of the reward",
                                       registry=self.registry)
        self._predicted = [0.0, 0]
        self._predicted_lock = threading.Lock()
        mean = Gauge("banditloop_served_predicted_probability_mean",
                     "Mean predicted probability of the reward of the served choices since start (NaN before "
                     "any); compare with the observed rate downstream", registry=self.registry)
        mean.set_function(self._predicted_mean)

    def observe_prediction(self, p: float | None) -> None:
        """One served choice's predicted probability of the reward (None: the model predicts none)."""
        if p is None or not 0.0 <= p <= 1.0:
            return
        with self._predicted_lock:
            self._predicted[0] += p
            self._predicted[1] += 1
        self.predicted_sum.inc(p)
        self.predicted_count.inc()

    def _predicted_mean(self) -> float:
        total, n = self._predicted
        return total / n if n else float("nan")

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        child = self._request_children.get((endpoint, status))
        if child is None:
            child = self._request_children[(endpoint, status)] = self.requests.labels(endpoint, str(status))
        child.inc()
        self._latency_children[endpoint].observe(seconds)

    def watch_connections(self, stats: ConnectionStats) -> None:
        """Expose the connection limits' counts (:mod:`banditloop.serving.http.connections`)."""
        self.registry.register(_ConnectionCollector(stats))

    def watch(self, scorer: Scorer, queue_size: Callable[[], int] | None = None) -> None:
        """Expose the scorer's model figures and (when publishing) the length of the publisher's
        queue, ``queue_size()``, at scrape time."""
        self.registry.register(_ModelCollector(scorer))
        if queue_size is not None:
            gauge = Gauge("banditloop_publish_queue_size", "Events waiting to be handed to the Kafka producer",
                          registry=self.registry)
            gauge.set_function(queue_size)


class _ModelCollector(Collector):
    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: nothing to describe up front

    def collect(self) -> Iterable[Metric]:
        scorer = self.scorer
        served = scorer.current
        labels = ["model"]
        loaded = GaugeMetricFamily("banditloop_model_loaded", "1 when a model version is being served", labels=labels)
        loaded.add_metric([scorer.model], 0.0 if served is None else 1.0)
        yield loaded
        version = GaugeMetricFamily("banditloop_model_version", "Checkpoint version being served", labels=labels)
        age = GaugeMetricFamily("banditloop_model_age_seconds",
                                "Seconds since the served checkpoint was written", labels=labels)
        if served is not None:
            version.add_metric([scorer.model], float(served.version))
            if served.created_at is not None:
                age.add_metric([scorer.model], max(0.0, time.time() - served.created_at.timestamp()))
        yield version
        yield age
        reloads = CounterMetricFamily("banditloop_model_reloads", "Model versions loaded and swapped in",
                                      labels=labels)
        reloads.add_metric([scorer.model], float(scorer.reloads))
        yield reloads
        refused = CounterMetricFamily("banditloop_model_refused_reloads",
                                      "Checkpoint versions refused (corrupt, non-finite or incompatible)",
                                      labels=labels)
        refused.add_metric([scorer.model], float(scorer.refused))
        yield refused
        new_arms = CounterMetricFamily("banditloop_new_arms_refused",
                                       "Requests refused for bringing too many never-seen arms (per request "
                                       "or per second)", labels=labels)
        new_arms.add_metric([scorer.model], float(scorer.new_arms_refused))
        yield new_arms
        resets = CounterMetricFamily("banditloop_arm_table_resets",
                                     "Times the served learner was reset to its checkpointed arms after "
                                     "requests added --max-new-arms never-seen ones", labels=labels)
        resets.add_metric([scorer.model], float(scorer.arm_resets))
        yield resets
        cache = GaugeMetricFamily("banditloop_feature_cache_bytes",
                                  "Estimated bytes held by the featurizers' hashing caches", labels=labels)
        if served is not None:
            vec = served.vectorizer
            used = sum(f.cache_info()["bytes"] for f in (vec.context, vec.shared) if f is not None)
            cache.add_metric([scorer.model], float(used))
        yield cache


class _ConnectionCollector(Collector):
    def __init__(self, stats: ConnectionStats) -> None:
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        closed = CounterMetricFamily("banditloop_connections_closed",
                                     "Connections closed by the server's limits, by reason", labels=["reason"])
        closed.add_metric(["too_many"], float(self.stats.refused))
        closed.add_metric(["evicted_half_open"], float(self.stats.evicted))
        closed.add_metric(["header_timeout"], float(self.stats.header_timeouts))
        closed.add_metric(["oversized_headers"], float(self.stats.oversized_headers))
        yield closed


class MetricsMiddleware:
    """Pure ASGI middleware (cheaper than Starlette's ``BaseHTTPMiddleware``): counts every HTTP
    request by endpoint and final status and observes its duration."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.known = frozenset(ENDPOINTS)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in self.known else "other"
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe(endpoint, status, time.perf_counter() - start)
