"""Trace context through Kafka headers (W3C traceparent/tracestate) and messaging-convention spans.

confluent-kafka headers are a list of ``(str, bytes)`` (``msg.headers()`` may also be ``None``, and a
value may be ``None``). The propagator is the process-global one, i.e. ``OTEL_PROPAGATORS``
(default: W3C tracecontext + baggage).

Generator (one span per batch, the producer side of the hop)::

    with producer_span(tracer, topic, key=batch_id, batch_id=batch_id) as (span, headers):
        producer.produce(topic, value, key=batch_id, headers=headers)

Worker (the consumer side; the output record's producer span is its child, so one trace runs
generator -> worker -> collector)::

    with consumer_span(tracer, msg, group=group_id) as span:
        ... decode ...
        span.set_attribute(BATCH_ID, batch_id)           # when known only after decoding
        with producer_span(tracer, out_topic, key=..., batch_id=batch_id, headers=out_headers) as (_, h):
            producer.produce(out_topic, out_value, headers=h)

Attribute names (OpenTelemetry messaging semantic conventions; the old ``messaging.operation`` is
set beside ``messaging.operation.type`` so older backends group spans too):

    messaging.system = "kafka"                messaging.destination.name = topic
    messaging.operation.type = send|receive|process, messaging.operation.name, messaging.operation
    messaging.kafka.message.key               messaging.destination.partition.id (string)
    messaging.kafka.offset                    messaging.consumer.group.name
    messaging.message.body.size               crayfish.batch_id (see observability.hops)

Span names follow the conventions: ``"send <topic>"`` (kind PRODUCER), ``"process <topic>"`` /
``"receive <topic>"`` (kind CONSUMER).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Link, SpanKind

__all__ = ["inject_headers", "extract_context", "producer_span", "consumer_span", "BATCH_ID",
           "MESSAGING_SYSTEM", "DESTINATION", "OPERATION", "OPERATION_TYPE", "OPERATION_NAME",
           "MESSAGE_KEY", "PARTITION", "OFFSET", "CONSUMER_GROUP", "BODY_SIZE"]

BATCH_ID = "crayfish.batch_id"
MESSAGING_SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION = "messaging.operation"            # deprecated name, kept for older backends
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
MESSAGE_KEY = "messaging.kafka.message.key"
PARTITION = "messaging.destination.partition.id"
OFFSET = "messaging.kafka.offset"
CONSUMER_GROUP = "messaging.consumer.group.name"
BODY_SIZE = "messaging.message.body.size"

Headers = list  # list[tuple[str, bytes | None]]


class _HeaderSetter(Setter):
    def set(self, carrier: list, key: str, value: str) -> None:
        carrier[:] = [(k, v) for k, v in carrier if k.lower() != key.lower()]
        carrier.append((key, value.encode("utf-8")))


class _HeaderGetter(Getter):
    """Works on the dict ``extract_context`` builds (lower-case key -> list of str)."""

    def get(self, carrier: dict, key: str):
        return carrier.get(key.lower())

    def keys(self, carrier: dict):
        return list(carrier.keys())


_SETTER = _HeaderSetter()
_GETTER = _HeaderGetter()


def inject_headers(headers: Headers | None = None, context: Context | None = None) -> Headers:
    """Write the (current, or given) trace context into a confluent-kafka headers list and return it.

    A new list is made when ``headers`` is None; an existing ``traceparent``/``tracestate`` is
    replaced. With no valid span in the context nothing is added."""
    if headers is None:
        headers = []
    propagate.inject(headers, context=context, setter=_SETTER)
    return headers


def _as_dict(headers: Iterable | None) -> dict:
    out: dict[str, list[str]] = {}
    if not headers:
        return out
    if isinstance(headers, dict):
        headers = headers.items()
    for k, v in headers:
        if v is None:
            continue
        if isinstance(v, (bytes, bytearray, memoryview)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                continue
        out.setdefault(str(k).lower(), []).append(v)
    return out


def extract_context(headers: Iterable | None, context: Context | None = None) -> Context:
    """The Context carried by a message's headers (list of (str, bytes), dict, or None).

    Without trace headers the returned context holds no span (so a span started in it is a root)."""
    return propagate.extract(_as_dict(headers), context=context if context is not None else Context(),
                             getter=_GETTER)


def _key_attr(key) -> str | None:
    if key is None:
        return None
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).decode("utf-8", errors="replace")
    return str(key)


def _base_attrs(topic: str, op_type: str, op_name: str, key=None, partition=None, offset=None,
                batch_id=None, extra: dict | None = None) -> dict:
    attrs = {MESSAGING_SYSTEM: "kafka", DESTINATION: topic, OPERATION_TYPE: op_type,
             OPERATION_NAME: op_name, OPERATION: "publish" if op_type == "send" else op_type}
    k = _key_attr(key)
    if k is not None:
        attrs[MESSAGE_KEY] = k
    if partition is not None and partition >= 0:
        attrs[PARTITION] = str(partition)
    if offset is not None and offset >= 0:
        attrs[OFFSET] = int(offset)
    if batch_id is not None:
        attrs[BATCH_ID] = str(batch_id)
    if extra:
        attrs.update(extra)
    return attrs


@contextmanager
def producer_span(tracer: trace.Tracer, topic: str, *, key=None, partition: int | None = None,
                  batch_id: str | None = None, headers: Headers | None = None,
                  attributes: dict | None = None, context: Context | None = None,
                  ) -> Iterator[tuple[trace.Span, Headers]]:
    """A PRODUCER span ``send <topic>`` (child of the current span, or of ``context``) and the
    headers list with that span's context injected: pass the headers to ``producer.produce``.

    Covers the ``produce()`` call only (delivery is asynchronous; the broker's append stamp measures
    the hop). ``headers`` (if given) is extended in place; partition/offset are usually unknown here.
    """
    attrs = _base_attrs(topic, "send", "send", key=key, partition=partition, batch_id=batch_id,
                        extra=attributes)
    with tracer.start_as_current_span(f"send {topic}", context=context, kind=SpanKind.PRODUCER,
                                      attributes=attrs) as span:
        hdrs = inject_headers(headers)
        yield span, hdrs


def message_context(msg) -> Context:
    """The producer's context carried by a confluent_kafka.Message."""
    return extract_context(msg.headers())


@contextmanager
def consumer_span(tracer: trace.Tracer, msg, *, group: str | None = None, batch_id: str | None = None,
                  operation: str = "process", parent: bool = True, attributes: dict | None = None,
                  ) -> Iterator[trace.Span]:
    """A CONSUMER span ``<operation> <topic>`` for one confluent_kafka.Message, made current.

    ``parent=True`` (default, one message processed on its own): the producer's span is the parent,
    so the trace continues across the hop (no link: it would repeat the parent). ``parent=False``
    (e.g. a span covering a batch of messages): a new trace whose link points at the producer span.
    ``msg`` needs topic(), partition(), offset(), key(), headers() (and value() for the body size).
    """
    carried = message_context(msg)
    producer_ctx = trace.get_current_span(carried).get_span_context()
    links = [Link(producer_ctx)] if (producer_ctx.is_valid and not parent) else None
    extra = dict(attributes or {})
    if group:
        extra[CONSUMER_GROUP] = group
    try:
        value = msg.value()
        if value is not None:
            extra[BODY_SIZE] = len(value)
    except Exception:  # noqa: BLE001 -- a duck-typed message without value()
        pass
    topic = msg.topic() or ""
    attrs = _base_attrs(topic, operation, operation, key=msg.key(), partition=msg.partition(),
                        offset=msg.offset(), batch_id=batch_id, extra=extra)
    ctx = carried if parent else Context()
    with tracer.start_as_current_span(f"{operation} {topic}", context=ctx, kind=SpanKind.CONSUMER,
                                      attributes=attrs, links=links) as span:
        yield span


def current_context() -> Context:
    """The current context (to hand to another thread, e.g. a delivery callback or a gRPC call)."""
    return otel_context.get_current()
