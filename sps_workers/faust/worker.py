"""The Faust app, its scoring agent, and the mp worker processes (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile

import faust

from crayfish.kafka_client import SECURITY_PROPERTIES, KafkaClient, KafkaClientError
from sps_workers.faust.options import FaustOptions
from sps_workers.runtime import EngineInstance, mark_ready, read_settings, run_processes
from sps_workers.settings import WorkerSettings

log = logging.getLogger("crayfish.worker.faust")

LOG_APPEND_TIME = 1  # Kafka record timestamp type
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # = crayfish.kafka.MAX_MESSAGE_BYTES (ResNet50 batches are MBs)


# What faust-streaming / aiokafka take (KafkaClient.check refuses other mechanisms already).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def broker_credentials(client: KafkaClient):
    """Faust's ``broker_credentials`` for the cluster's client properties (resolved here, in this
    process): faust.SASLCredentials (with an SSL context for SASL_SSL), faust.SSLCredentials for SSL
    and mutual TLS, None for PLAINTEXT. Raises KafkaClientError naming the property."""
    client.check()
    sec = client.security()
    if sec.sasl:
        if sec.mechanism not in SASL_MECHANISMS:
            raise KafkaClientError(f"sasl.mechanisms: {sec.mechanism!r} is not supported by the faust engine; "
                                   f"supported: {', '.join(SASL_MECHANISMS)}")
        return faust.SASLCredentials(username=sec.username, password=sec.password, mechanism=sec.mechanism,
                                     ssl_context=sec.ssl_context())
    if sec.tls:
        return faust.SSLCredentials(sec.ssl_context())
    return None


def ignored_properties(client: KafkaClient) -> list[str]:
    """Client properties that have no Faust setting (named in a warning at start)."""
    return sorted(set(client.resolved()) - SECURITY_PROPERTIES)


def build_app(settings: WorkerSettings, options: FaustOptions, index: int, datadir: str, failures: list):
    """The app; a failed delivery is appended to ``failures`` and stops the worker (event not acked).
    Its consumer and its producer (outputs and dead letters alike) connect with the cluster's
    client properties (``broker_credentials``)."""
    brokers = [f"kafka://{hp.strip()}" for hp in settings.bootstrap.split(",") if hp.strip()]
    app = faust.App(
        settings.consumer_group,                 # app id = Kafka consumer group
        broker=brokers,
        autodiscover=False,
        datadir=datadir,
        store="memory://",
        topic_allow_declare=False,               # the runner owns the topics
        topic_disable_leader=True,               # no <app>-__assignor-__leader topic
        web_enabled=options.web_port is not None,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=options.web_port or 6066,
        broker_client_id=f"{settings.worker_id}-{index}",
        broker_credentials=broker_credentials(settings.kafka_client),
        broker_max_poll_records=settings.max_poll_records,
        broker_commit_interval=options.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=MAX_MESSAGE_BYTES,
        consumer_max_fetch_size=MAX_MESSAGE_BYTES,
        stream_buffer_maxsize=settings.max_poll_records,
        # Stop/rebalance without scoring what is still buffered: it is unacked, the next owner
        # re-reads it (at-least-once), and a stop stays bounded even for slow models.
        stream_wait_empty=False,
    )
    source = app.topic(settings.input_topic, key_serializer="raw", value_serializer="raw",
                       allow_empty=True)   # a null value is dead-lettered, not skipped
    offload = options.concurrency > 1
    warned = {"ts": False}

    @app.on_partitions_assigned.connect
    async def _assigned(_sender, *_args, **_kwargs):
        mark_ready(settings)

    @app.agent(source, name="score", concurrency=options.concurrency)
    async def score(stream):
        stream.enable_acks = False    # ack by hand, only after the output is delivered
        actor = stream.concurrency_index or 0
        inst = EngineInstance(settings, engine="faust",
                              index=index if options.concurrency == 1 else f"{index}.{actor}")
        loop = asyncio.get_running_loop()
        producer = app.producer
        pending = None
        try:
            async for event in stream.events():
                msg = event.message
                if msg.timestamp_type != LOG_APPEND_TIME and not warned["ts"]:
                    warned["ts"] = True
                    log.warning("input records carry CreateTime stamps, not LogAppendTime (topic config)")
                append_ms = round(msg.timestamp * 1000) if msg.timestamp is not None else 0
                args = (msg.value, msg.headers, append_ms, msg.topic, msg.partition, msg.offset)
                if offload:
                    pending = loop.run_in_executor(None, inst.handle, *args)
                    out = await pending
                    pending = None
                else:
                    out = inst.handle(*args)   # blocking CPU work on the loop: the Faust way
                try:
                    await producer.send_and_wait(out.topic, msg.key, out.value, None, None, out.headers)
                except Exception as exc:  # noqa: BLE001 - delivery failed: stop without acking it
                    failures.append(f"delivery to {out.topic} failed for {msg.topic}[{msg.partition}]@"
                                    f"{msg.offset}: {exc!r}")
                    log.error("%s", failures[-1])
                    os.kill(os.getpid(), signal.SIGTERM)   # Faust's own clean stop; exit code below
                    break
                await stream.ack(event)
        finally:
            if pending is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(pending), 30)
                except BaseException:  # noqa: BLE001 - stopping anyway
                    pass
            inst.close()

    return app


def run_instance(settings: WorkerSettings, options: FaustOptions, index: int) -> None:
    """One Faust worker process: runs until SIGTERM/SIGINT (Faust's own handlers), then stops."""
    level = os.environ.get("CRAYFISH_LOG_LEVEL", "WARNING")
    datadir = tempfile.mkdtemp(prefix=f"crayfish-faust-{index}-")
    failures: list[str] = []
    try:
        app = build_app(settings, options, index, datadir, failures)
        worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False)
        worker.spinner = None               # no terminal spinner in a log file
        worker.execute_from_commandline()   # always ends in SystemExit (1 on a crash)
    except SystemExit as exc:
        if failures:
            sys.exit(f"faust worker {index}: {failures[0]}")
        raise exc
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    settings, options = read_settings(argv, "python -m sps_workers.faust", "Faust scoring worker (faust-streaming).",
                                      FaustOptions)
    try:   # once here: a property that cannot work is one line, before any process starts
        broker_credentials(settings.kafka_client)
        ignored = ignored_properties(settings.kafka_client)
    except KafkaClientError as exc:
        print(f"faust worker: bad config: kafka_client: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    if ignored:
        print(f"faust worker: warning: kafka_client properties without a Faust setting, ignored: "
              f"{', '.join(ignored)}", file=sys.stderr, flush=True)
    if settings.parallelism == 1:
        run_instance(settings, options, 0)
        return
    n = settings.parallelism
    run_processes(run_instance, [(settings, options, i) for i in range(n)],
                  [f"{settings.worker_id}-{i}" for i in range(n)], "faust worker processes")
