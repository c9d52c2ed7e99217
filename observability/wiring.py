"""What the services call: tracing that costs (almost) nothing for batches nobody sampled, and
little for those sampled. Services get it from observability.light.batch_tracing.

- The generator decides per batch with the standard sampler (OTEL_TRACES_SAMPLER / _ARG; the runner
  defaults them to parentbased_traceidratio at the experiment's ``trace_sample``) and writes
  ``traceparent`` into the record's headers only when the batch is sampled.
- The worker looks for a sampled ``traceparent`` in headers it reads anyway; only then does it
  record: one consumer span (receive to send) with decode / score / encode children taken from the
  scoring operator's own stamps, and a producer span whose context travels on in the output
  record's headers. For an external call the score span is a CLIENT span whose context goes to the
  server in the gRPC metadata (``traceparent``, observability.context.client_traceparent); our
  Scoring server records its SERVER span with queue and inference children from its core's timing.
  The collector records a consumer span per sampled output record.
- Recording is a tuple append (observability.spanlog); a background thread exports over OTLP, or to
  span files under the run folder, which observability.hops joins with the broker stamps.

What the environment decides (standard variables only): ``OTEL_SDK_DISABLED=true`` turns tracing
off; without ``CRAYFISH_SPANS_DIR`` (set by the runner) and without an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``..._TRACES_ENDPOINT``) it is off too; ``OTEL_TRACES_EXPORTER=none``
records nothing anywhere; ``OTEL_SERVICE_NAME`` overrides the service name.

Adding a traced step to a service: record its span with ``self.log.add(...)`` from stamps the
service takes anyway, in a ``record_*`` method here, so the service itself never builds spans.
"""

from __future__ import annotations

import os
import time

from crayfish.headers import header_value
from observability.compact import worker_spans
from observability.context import send_traceparent
from observability.names import (BATCH_ID, DESTINATION, HOP, MESSAGING_SYSTEM, OPERATION, OPERATION_TYPE,
                                 RPC_METHOD, RPC_SERVICE, RPC_SYSTEM, SPANS_DIR_ENV, TRACEPARENT)
from observability.otel import OtlpSink, otlp_endpoint, root_sampler, sample_root, service_name
from observability.spanlog import SpanLog, new_span_id, new_trace_id, parse_traceparent, traceparent


def tracing_enabled() -> bool:
    """False when OTEL_SDK_DISABLED=true."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"


class SendSpan:
    """The generator's producer span of one sampled batch (ended after the produce call)."""

    __slots__ = ("log", "trace_id", "span_id", "start", "topic", "batch_id")

    def __init__(self, log, trace_id, span_id, start, topic, batch_id):
        self.log, self.trace_id, self.span_id = log, trace_id, span_id
        self.start, self.topic, self.batch_id = start, topic, batch_id

    def is_recording(self) -> bool:
        return True

    def end(self) -> None:
        self.log.add(self.trace_id, self.span_id, None, f"send {self.topic}", "PRODUCER", self.start,
                     time.time_ns(), {MESSAGING_SYSTEM: "kafka", DESTINATION: self.topic, OPERATION: "publish",
                                      OPERATION_TYPE: "send", BATCH_ID: self.batch_id})


def _span_log(service: str) -> SpanLog | None:
    """The span log the environment asks for (see the module docstring), None when tracing is off."""
    spans_dir = os.environ.get(SPANS_DIR_ENV)
    endpoint = otlp_endpoint()
    if not tracing_enabled() or not (spans_dir or endpoint):
        return None
    name = service_name(service)
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return SpanLog(name, None)
    # A run folder gets span files even when spans also go over OTLP (the run's hop breakdown reads
    # them); a service outside a run (the native stack) exports over OTLP only.
    return SpanLog(name, spans_dir, OtlpSink(name) if endpoint else None)


class BatchTracing:
    """Per-batch spans of one service (see the module docstring). ``tracer`` is None when off."""

    def __init__(self, service: str):
        self.log = _span_log(service)
        self.enabled = self.log is not None
        self.tracer = self.log
        self._sampler = root_sampler() if self.enabled else None

    # -- generator ------------------------------------------------------------------------------
    def start_send(self, topic: str, batch_id: str):
        """A producer span for one batch, or None when tracing is off or the sampler says no."""
        if self.log is None:
            return None
        trace_id = new_trace_id()
        if not sample_root(self._sampler, trace_id, f"send {topic}"):
            return None
        return SendSpan(self.log, trace_id, new_span_id(), time.time_ns(), topic, batch_id)

    @staticmethod
    def headers_for(span, headers: list) -> list:
        """``headers`` plus the span's traceparent when the span is sampled."""
        if span is None:
            return headers
        return list(headers or []) + [(TRACEPARENT, traceparent(span.trace_id, span.span_id).encode())]

    # -- worker ---------------------------------------------------------------------------------
    def record_worker(self, ctx: tuple[str, str, int], topic: str, partition: int, offset: int, timing,
                      out_topic: str, out_headers: list, client: str | None = None) -> list:
        """Record the worker's spans of one sampled batch and return the output headers carrying
        the trace on. ``ctx``: observability.context.worker_context of the input headers (taken
        before an external call, whose metadata then carries its client_traceparent);
        ``timing``: OpResult.timing; ``client``: the external client kind, None when embedded.
        Recording is one tuple append: the spans are built when the log is flushed."""
        self.log.add_deferred(worker_spans, ctx[0], ctx[1], ctx[2], topic, partition, offset, timing,
                              out_topic, client)
        tp = send_traceparent(ctx)
        return [*out_headers, (TRACEPARENT, tp)] if out_headers else [(TRACEPARENT, tp)]

    # -- scoring server -------------------------------------------------------------------------
    def record_server(self, tp, method: str, start_ns: int, queue_ns: int, inference_ns: int, end_ns: int,
                      model: str) -> None:
        """The server span of one traced call (parent: the worker's client span from the gRPC
        metadata) with its queue and inference children, from the server core's own timing."""
        parsed = parse_traceparent(tp)
        if parsed is None or not parsed[2]:
            return
        trace_id, parent, _ = parsed
        sid = new_span_id()
        service, _, name = method.rpartition("/")
        self.log.add(trace_id, sid, parent, method.lstrip("/"), "SERVER", start_ns, end_ns,
                     {RPC_SYSTEM: "grpc", RPC_SERVICE: service.lstrip("/"), RPC_METHOD: name,
                      "crayfish.model": model})
        t = start_ns
        self.log.add(trace_id, new_span_id(), sid, "crayfish.server_queue", "INTERNAL", t, t + queue_ns,
                     {HOP: "server_queue"})
        t += queue_ns
        self.log.add(trace_id, new_span_id(), sid, "crayfish.inference", "INTERNAL", t, t + inference_ns,
                     {HOP: "inference"})

    # -- collector ------------------------------------------------------------------------------
    def record_receive(self, headers, topic: str, append_ms: int, batch_id: str) -> None:
        """The collector's consumer span of a sampled output record: from its broker append to now."""
        parsed = parse_traceparent(header_value(headers, TRACEPARENT))
        if parsed is None or not parsed[2]:
            return
        self.log.add(parsed[0], new_span_id(), parsed[1], f"receive {topic}", "CONSUMER", append_ms * 1_000_000,
                     time.time_ns(), {MESSAGING_SYSTEM: "kafka", DESTINATION: topic, OPERATION: "receive",
                                      OPERATION_TYPE: "receive", BATCH_ID: batch_id})

    # -- all ------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write out the spans recorded so far, now: for processes that may end without exit hooks
        (Spark ends its idle Python workers with a signal), at the end of each unit of work."""
        if self.log is not None:
            self.log.flush()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
