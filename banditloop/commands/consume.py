"""``banditloop consume``: learn from live Kafka topics as a member of a consumer group."""

from __future__ import annotations

import argparse
import logging

from banditloop.commands.common import (
    CommandError,
    add_db_option,
    add_feature_options,
    add_model_options,
    add_output_options,
    add_retention_option,
    db_url,
    emit,
    feature_spec,
    model_config,
    non_negative_float,
    positive_float,
    positive_int,
)

HELP = "learn from Kafka topics (consumer group; exactly-once checkpoints)"


def add_topic_options(parser: argparse.ArgumentParser) -> None:
    from banditloop.pipeline.topics import TopicNames

    defaults = TopicNames()
    group = parser.add_argument_group("topics")
    group.add_argument("--impressions-topic", default=defaults.impressions)
    group.add_argument("--clicks-topic", default=defaults.clicks)
    group.add_argument("--conversions-topic", default=defaults.conversions)
    group.add_argument("--dead-letter-topic", default=defaults.dead_letters)
    group.add_argument("--partitions", type=positive_int, default=None,
                       help="create missing topics with this many partitions (equal for the three)")


def topic_names(args: argparse.Namespace):
    from banditloop.pipeline.topics import TopicNames

    return TopicNames(impressions=args.impressions_topic, clicks=args.clicks_topic,
                      conversions=args.conversions_topic, dead_letters=args.dead_letter_topic)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "consume", help=HELP,
        description="Joins impressions with clicks and conversions in event time, learns, and checkpoints "
                    "parameters + join state + offsets in one database transaction. Several processes with "
                    "the same --group split the partitions; the served model is the merge of their shards. "
                    "Stops on SIGTERM/SIGINT (after a final checkpoint), --max-events or --idle-timeout. A restarted "
                    "worker continues the model from its checkpoints; a --model written by replay or simulate, or "
                    "with another learner or configuration, is refused.")
    p.add_argument("--bootstrap", required=True, metavar="HOST:PORT", help="Kafka bootstrap servers")
    p.add_argument("--group", required=True, help="consumer group id")
    add_model_options(p)
    add_feature_options(p)
    add_topic_options(p)
    p.add_argument("--checkpoint-interval", type=positive_float, default=5.0, metavar="SECONDS",
                   help="checkpoint this often (and at the end)")
    p.add_argument("--max-events", type=positive_int, default=None, help="stop after this many messages")
    p.add_argument("--idle-timeout", type=positive_float, default=None, metavar="SECONDS",
                   help="stop after this long without a message (after a crash, make it longer than the "
                        "6 s session timeout: partitions of a killed member arrive only after it)")
    p.add_argument("--input-idleness", type=non_negative_float, default=30.0, metavar="SECONDS",
                   help="a topic caught up and silent this long stops holding the event-time watermark back")
    p.add_argument("--log-interval", type=positive_float, default=10.0, metavar="SECONDS",
                   help="log lag, events/s, join hits/misses and dead letters this often")
    p.add_argument("--max-future-skew", type=positive_float, default=300.0, metavar="SECONDS",
                   help="dead-letter events dated more than this far ahead of this machine's clock (they "
                        "would drag the event-time watermark into the future)")
    p.add_argument("--checkpoint-budget", type=positive_float, default=120.0, metavar="SECONDS",
                   help="give the partitions back to the group when no checkpoint becomes durable for this long")
    p.add_argument("--kafka-client", choices=("auto", "confluent", "kafka-python"), default="auto",
                   help="Kafka client library: confluent (librdkafka, extra 'confluent': faster, see "
                        "docs/kafka-notes.md) or kafka-python (pure Python); auto (default) = confluent when installed")
    p.add_argument("--ready-file", default=None, metavar="PATH",
                   help="after every partition assignment write a JSON status here (pid, partitions, "
                        "restored shards), replaced atomically, for supervisors to poll")
    add_db_option(p)
    add_retention_option(p)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from banditloop.commands.protect import same_config
    from banditloop.pipeline.checkpoints import CheckpointStore
    from banditloop.pipeline.consumer import ConsumeOptions, ConsumerWorker
    from banditloop.pipeline.consumer_options import resolve_client
    from banditloop.pipeline.producer import EventProducer
    from banditloop.pipeline.topics import ensure_topics

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if args.kafka_client == "confluent":
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            raise CommandError("--kafka-client confluent needs confluent-kafka: "
                               "pip install 'banditloop[confluent]'") from None
    config = model_config(args, feature_spec(args))
    model = args.model or args.learner
    topics = topic_names(args)
    store = CheckpointStore(db_url(args), keep=args.keep)
    heads = store.heads(model)
    if any(head.source.get("kind") != "kafka" for head in heads):
        store.close()
        raise CommandError(f"model {model!r} holds checkpoints not written by consume; use another --model")
    if heads and not all(same_config(head.config, config) for head in heads):
        store.close()
        raise CommandError(f"model {model!r} was checkpointed with another learner or configuration (learner "
                           f"{heads[0].learner}); give the options it was started with, or another --model")
    if args.partitions:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        try:
            ensure_topics(args.bootstrap, topics, args.partitions)
        except BaseException:
            store.close()
            raise
        finally:
            logging.getLogger("kafka").setLevel(logging.WARNING)
    # kafka-python logs every refused connection at ERROR level: while connecting, an unreachable
    # broker is reported once, by the error boundary (banditloop.commands.errors), not line by line
    kafka_log = logging.getLogger("kafka")
    kafka_log.setLevel(logging.CRITICAL)
    try:
        producer = EventProducer(args.bootstrap, topics)
    except BaseException:
        store.close()
        raise
    finally:
        kafka_log.setLevel(logging.WARNING)
    worker = ConsumerWorker(config, ConsumeOptions(
        bootstrap=args.bootstrap, group=args.group, model=model, topics=topics,
        checkpoint_interval=args.checkpoint_interval, max_events=args.max_events,
        idle_timeout=args.idle_timeout, log_interval=args.log_interval, input_idleness=args.input_idleness,
        ready_file=args.ready_file, max_future_skew=args.max_future_skew,
        checkpoint_budget=args.checkpoint_budget, kafka_client=args.kafka_client), store,
        dead_letter=producer.send_dead_letter)
    worker.install_signal_handlers()
    # everything allocated so far (modules, the restored model) lives for the whole process: keep it
    # out of the cyclic collector's full passes, which otherwise cost about 1 µs per message
    import gc

    gc.freeze()
    try:
        summary = worker.run()
    finally:
        producer.close()
        store.close()
    summary["db"] = db_url(args)
    summary["kafka_client"] = resolve_client(args.kafka_client)
    emit(summary, args)
    return 0
