"""``banditloop serve``: the scoring service over HTTP (Starlette on uvicorn).

One process, one event loop, and scoring in a small thread pool beside it (``--scoring-threads``) so
that an expensive request cannot stall connection handling; on a small machine more worker processes
would mostly compete for the same cores. Run several instances behind a load balancer to scale out;
each polls the checkpoint database on its own. Limits, timeouts and authentication: docs/serving.md.
"""

from __future__ import annotations

import argparse
import logging
import signal

from banditloop.commands.common import CommandError, add_db_option, db_url

HELP = "serve a model over HTTP: POST /score, POST /feedback, GET /healthz, GET /metrics"


def register(subparsers: argparse._SubParsersAction) -> None:
    from banditloop.commands.consume import add_topic_options
    from banditloop.serving.http.schemas import Limits

    limits = Limits()
    p = subparsers.add_parser(
        "serve", help=HELP,
        description="Scores candidates with the newest checkpoint of --model (the merge of its shards), picks up "
                    "new versions within --reload-interval, and refuses corrupt or incompatible ones while the "
                    "old version keeps serving. With --bootstrap every shown arm is published as an impression "
                    "event (with its propensity and policy version) so that the learners close the loop, and "
                    "POST /feedback publishes clicks and conversions. Stops gracefully on SIGTERM/SIGINT.")
    p.add_argument("--model", required=True, help="model name in the checkpoint database")
    p.add_argument("--cold-start", action="store_true",
                   help="while the model has no checkpoint, choose uniformly at random (version 0, propensity "
                        "1/K; logged as impressions, so that the learners can start) instead of answering 503")
    p.add_argument("--wait-for-model", action="store_true",
                   help="start although --model has no checkpoint yet, answering 503 until its first one (without "
                        "this or --cold-start, a model that does not exist is an error: a typo, or the wrong --db)")
    add_db_option(p)
    p.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000, help="listen port (0: any free port)")
    p.add_argument("--bootstrap", default=None, metavar="HOST:PORT",
                   help="Kafka bootstrap servers: publish impressions and feedback (default: publish nothing)")
    add_topic_options(p)
    p.add_argument("--reload-interval", type=float, default=1.0, metavar="SECONDS",
                   help="poll the database for a new model version this often (0: never reload)")
    group = p.add_argument_group("limits (larger requests are refused with 413/422)")
    group.add_argument("--max-candidates", type=int, default=limits.max_candidates)
    group.add_argument("--max-features", type=int, default=limits.max_features,
                       help="features in the context and in each arm's features")
    group.add_argument("--max-k", type=int, default=limits.max_k, help="largest slate")
    group.add_argument("--max-body-bytes", type=int, default=limits.max_body_bytes)
    group.add_argument("--max-new-arms", type=int, default=1000,
                       help="arms first seen in requests kept before the model is reset to its checkpoint")
    p.add_argument("--rank-by", choices=["model", "expected-value"], default="model",
                   help="how requests that do not say (their rank_by) are ranked: the model's own choice, or the "
                        "argmax of pCTR x pCVR x value (esmm; pCTR x value for click models) with the model's "
                        "epsilon-greedy exploration")
    p.add_argument("--feedback-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long POST /feedback waits for Kafka's acknowledgement")
    p.add_argument("--access-log", action="store_true", help="log every request (costs latency)")
    p.add_argument("--http", choices=["auto", "h11", "httptools"], default="auto",
                   help="uvicorn's HTTP parser (auto: httptools when installed, else h11)")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="event loop (auto: uvloop when installed, else asyncio)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_hardening_options(p)
    p.set_defaults(func=run)


def add_hardening_options(p: argparse.ArgumentParser) -> None:
    """Resource limits, slow-client timeouts and authentication (docs/serving.md, "Hardening")."""
    from banditloop.core.events import DEFAULT_MAX_FUTURE_SKEW
    from banditloop.core.features import DEFAULT_CACHE_BYTES
    from banditloop.serving.http.connections import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEADER_BYTES

    group = p.add_argument_group("resource limits and slow clients")
    group.add_argument("--max-new-arms-per-request", type=int, default=None,
                       help="never-seen arms one request may bring (more: 422; default and at most --max-new-arms)")
    group.add_argument("--max-new-arms-per-second", type=float, default=100.0,
                       help="never-seen arms taken per second on average (more: 429 with Retry-After); 0: no limit")
    group.add_argument("--feature-cache-bytes", type=int, default=DEFAULT_CACHE_BYTES,
                       help="memory budget of each featurizer's hashing cache (LRU)")
    group.add_argument("--scoring-threads", type=int, default=1,
                       help="threads that score requests, off the event loop (0: score on the event loop)")
    group.add_argument("--max-pending", type=int, default=256,
                       help="requests waiting for a scoring thread before new ones get 503")
    group.add_argument("--max-connections", type=int, default=None,
                       help="open connections; a new one beyond takes the place of the oldest connection still "
                            "waiting for its headers, or is answered 503 (default: 1000, or the open-file limit "
                            "minus 128 when lower)")
    group.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT, metavar="SECONDS",
                       help="a request's line and headers must arrive within this time, or the connection is closed")
    group.add_argument("--body-timeout", type=float, default=10.0, metavar="SECONDS",
                       help="a request body must arrive within this time (else 408)")
    group.add_argument("--keep-alive-timeout", type=int, default=5, metavar="SECONDS",
                       help="idle keep-alive connections are closed after this time")
    group.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES,
                       help="request line and headers larger than this close the connection")
    group.add_argument("--max-future-skew", type=float, default=DEFAULT_MAX_FUTURE_SKEW, metavar="SECONDS",
                       help="POST /feedback refuses events dated more than this ahead of the server's clock (422)")
    group = p.add_argument_group("authentication (off unless a token is configured)")
    group.add_argument("--api-token-file", default=None, metavar="FILE",
                       help="bearer tokens, one per line, for POST /score and POST /feedback (also: the token "
                            "in $BANDITLOOP_API_TOKEN); never pass a token itself on the command line")
    group.add_argument("--auth-all", action="store_true",
                       help="require the token for GET /healthz and GET /metrics too (default: open)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from banditloop.commands.consume import topic_names
    from banditloop.serving.http import Limits, ScoringService, create_app
    from banditloop.serving.http.connections import (
        ConnectionStats,
        default_max_connections,
        guarded_protocol,
        protocol_class,
    )
    from banditloop.serving.http.metrics import ServiceMetrics
    from banditloop.serving.http.publisher import EventPublisher
    from banditloop.serving.http.security import BearerAuth
    from banditloop.serving.scorer import Scorer

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        limits = Limits(max_body_bytes=args.max_body_bytes, max_candidates=args.max_candidates,
                        max_features=args.max_features, max_k=args.max_k, body_timeout=args.body_timeout)
        auth = BearerAuth.configured(args.api_token_file)
        stats = ConnectionStats()
        max_connections = args.max_connections or default_max_connections()
        protocol = guarded_protocol(protocol_class(args.http), max_connections=max_connections,
                                    header_timeout=args.header_timeout, max_header_bytes=args.max_header_bytes,
                                    stats=stats)
        if args.keep_alive_timeout < 1 or args.scoring_threads < 0 or args.max_pending < 1:
            raise ValueError("--keep-alive-timeout and --max-pending must be >= 1, --scoring-threads >= 0")
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if auth is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("banditloop.serve").warning(
            "serving on %s without authentication: anyone who reaches it can score and send clicks "
            "(set $BANDITLOOP_API_TOKEN or --api-token-file)", args.host)
    if args.reload_interval < 0:
        raise CommandError("--reload-interval must be >= 0")
    if not (args.cold_start or args.wait_for_model):
        _check_model_exists(db_url(args), args.model)
    metrics = ServiceMetrics()
    publisher = None
    if args.bootstrap:
        try:
            topics = topic_names(args)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        publisher = EventPublisher.for_kafka(args.bootstrap, metrics, topics, args.partitions)
    cold_start = None
    if args.cold_start:
        from banditloop.pipeline.model import ModelConfig

        cold_start = ModelConfig(learner="random")
    try:
        scorer = Scorer(db_url(args), args.model, max_new_arms=args.max_new_arms, cold_start=cold_start,
                        max_new_arms_per_request=args.max_new_arms_per_request,
                        max_new_arms_per_second=args.max_new_arms_per_second or None,
                        feature_cache_bytes=args.feature_cache_bytes)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    service = ScoringService(scorer, publisher=publisher, limits=limits, metrics=metrics,
                             reload_interval=args.reload_interval or None, feedback_timeout=args.feedback_timeout,
                             auth=auth, auth_all=args.auth_all, scoring_threads=args.scoring_threads,
                             max_pending=args.max_pending, max_future_skew=args.max_future_skew,
                             rank_by=args.rank_by.replace("-", "_"))
    metrics.watch_connections(stats)
    config = uvicorn.Config(create_app(service), host=args.host, port=args.port, log_config=None,
                            log_level=args.log_level, access_log=args.access_log, lifespan="on",
                            timeout_graceful_shutdown=5, server_header=False, http=protocol, loop=args.loop,
                            timeout_keep_alive=args.keep_alive_timeout,
                            h11_max_incomplete_event_size=args.max_header_bytes)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with our own
    # handler in place that is a normal return (exit status 0) instead of death by signal.
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _frame: stopped.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind or the start-up failed
        if not server.started:
            raise CommandError(f"could not serve on {args.host}:{args.port} (see the log above)") from None
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        scorer.close()
        if publisher is not None:
            publisher.close()
    if not server.started:
        raise CommandError(f"could not serve on {args.host}:{args.port} (see the log above)")
    return 0


def _check_model_exists(db: str, model: str) -> None:
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.database import masked_url

    store = CheckpointStore(db)
    try:
        if store.latest_version(model) is not None:
            return
        names = store.model_names()
    finally:
        store.close()
    known = f"models there: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}" if names else "it has none"
    raise CommandError(f"no model {model!r} in {masked_url(db)} ({known}); check --model and --db, or pass "
                       "--wait-for-model (or --cold-start) to start before its first checkpoint")
