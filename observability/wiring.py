"""What the services call: tracing that costs (almost) nothing for batches nobody sampled.

- The generator starts a producer span per batch with the SDK's sampler (standard
  OTEL_TRACES_SAMPLER / _ARG; the runner defaults them to parentbased_traceidratio at the
  experiment's ``trace_sample``), and writes ``traceparent`` into the record's headers only when
  that span is sampled.
- The worker looks for a sampled ``traceparent`` in headers it reads anyway; only then does it touch
  the SDK: one consumer span (from receive to send) with decode / score / encode children recorded
  afterwards from the scoring operator's own stamps, and a producer span whose context travels on
  in the output record's headers. Unsampled batches cost one header scan.

Spans go where observability.tracing sends them (OTLP, or span files under the run folder) and
observability.hops joins them with the broker stamps.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from observability.hops import HOP
from observability.kafka_context import (BATCH_ID, DESTINATION, MESSAGING_SYSTEM, OFFSET, OPERATION,
                                         OPERATION_TYPE, PARTITION, extract_context, inject_headers)
from observability.tracing import setup_tracing, shutdown_tracing, tracing_enabled

from observability.light import SPANS_DIR_ENV, TRACEPARENT, sampled_traceparent  # noqa: F401


class BatchTracing:
    def __init__(self, service: str):
        self.enabled = tracing_enabled() and (os.environ.get(SPANS_DIR_ENV) or
                                              os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or
                                              os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        self.tracer = setup_tracing(service, os.environ.get(SPANS_DIR_ENV)) if self.enabled else None

    # -- generator ------------------------------------------------------------------------------
    def start_send(self, topic: str, batch_id: str):
        """A producer span for one batch (None when tracing is off)."""
        if self.tracer is None:
            return None
        return self.tracer.start_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes={
            MESSAGING_SYSTEM: "kafka", DESTINATION: topic, OPERATION: "publish", OPERATION_TYPE: "send",
            BATCH_ID: batch_id})

    @staticmethod
    def headers_for(span, headers: list) -> list:
        """``headers`` plus the span's traceparent when the span is sampled."""
        if span is None or not span.is_recording():
            return headers
        return inject_headers(list(headers or []), trace.set_span_in_context(span))

    # -- worker ---------------------------------------------------------------------------------
    def record_worker(self, headers, topic: str, partition: int, offset: int, timing, out_topic: str,
                      out_headers: list) -> list:
        """Record the worker's spans of one sampled batch (after the fact, from its stamps) and
        return the output headers carrying the trace on. ``timing``: OpResult.timing."""
        batch_id, received, decode_ns, inference_ns, encode_ns, send = timing
        ctx = extract_context(headers)
        span = self.tracer.start_span(f"process {topic}", context=ctx, kind=SpanKind.CONSUMER, start_time=received,
                                      attributes={MESSAGING_SYSTEM: "kafka", DESTINATION: topic,
                                                  OPERATION: "process", OPERATION_TYPE: "process",
                                                  PARTITION: str(partition), OFFSET: offset, BATCH_ID: batch_id})
        parent = trace.set_span_in_context(span)
        t = received
        for hop, dur in (("decode", decode_ns), ("score", inference_ns), ("encode", encode_ns)):
            child = self.tracer.start_span(f"crayfish.{hop}", context=parent, start_time=t,
                                           attributes={HOP: hop, BATCH_ID: batch_id})
            child.end(end_time=t + dur)
            t += dur
        send_span = self.tracer.start_span(f"send {out_topic}", context=parent, kind=SpanKind.PRODUCER,
                                           start_time=send, attributes={
                                               MESSAGING_SYSTEM: "kafka", DESTINATION: out_topic,
                                               OPERATION: "publish", OPERATION_TYPE: "send", BATCH_ID: batch_id})
        out = inject_headers(list(out_headers or []), trace.set_span_in_context(send_span))
        send_span.end()
        span.end(end_time=send)
        return out

    def close(self) -> None:
        if self.tracer is not None:
            shutdown_tracing()
