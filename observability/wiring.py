"""What the services call: tracing that costs (almost) nothing for batches nobody sampled, and
little for those sampled.

- The generator decides per batch with the standard sampler (OTEL_TRACES_SAMPLER / _ARG; the runner
  defaults them to parentbased_traceidratio at the experiment's ``trace_sample``) and writes
  ``traceparent`` into the record's headers only when the batch is sampled.
- The worker looks for a sampled ``traceparent`` in headers it reads anyway; only then does it
  record: one consumer span (receive to send) with decode / score / encode children taken from the
  scoring operator's own stamps, and a producer span whose context travels on in the output
  record's headers. For an external call the score span is a CLIENT span whose context goes to the
  server in the gRPC metadata (``traceparent``); our Scoring server records its SERVER span with
  queue and inference children from its core's timing. The collector records a consumer span per
  sampled output record.
- Recording is a tuple append (observability.spanlog); a background thread exports over OTLP, or to
  span files under the run folder, which observability.hops joins with the broker stamps.
"""

from __future__ import annotations

import json
import os

from observability.hops import HOP
from observability.kafka_context import (BATCH_ID, DESTINATION, MESSAGING_SYSTEM, OFFSET, OPERATION,
                                         OPERATION_TYPE, PARTITION)
from observability.light import SPANS_DIR_ENV, TRACEPARENT, sampled_traceparent, worker_context  # noqa: F401
from observability.spanlog import (SpanLog, header_value, new_span_id, new_trace_id, parse_traceparent,
                                   root_sampler, sample_root, traceparent)
from observability.tracing import tracing_enabled

RPC_SYSTEM, RPC_SERVICE, RPC_METHOD = "rpc.system", "rpc.service", "rpc.method"


def worker_span_ids(base: int) -> tuple[int, int, int, int, int]:
    """The worker's five span ids of one batch from one random base: process, decode, score (the
    client span of an external call), encode, send. One random draw per batch, all distinct."""
    return base | 1, base | 2, base | 3, base | 4, base | 5


def client_traceparent(ctx: tuple[str, str, int]) -> str:
    """traceparent of the worker's score (client) span, for the call's gRPC metadata / HTTP header."""
    return f"00-{ctx[0]}-{ctx[2] | 3:016x}-01"


_HOP_JSON = {h: json.dumps({HOP: h}, separators=(",", ":")) for h in ("decode", "score", "encode")}
_PROCESS_ATTRS = ('{"%s":"kafka","%s":%%s,"%s":"process","%s":"process","%s":"%%d","%s":%%d,"%s":%%s}'
                  % (MESSAGING_SYSTEM, DESTINATION, OPERATION, OPERATION_TYPE, PARTITION, OFFSET, BATCH_ID))
_SEND_ATTRS = ('{"%s":"kafka","%s":%%s,"%s":"publish","%s":"send","%s":%%s}'
               % (MESSAGING_SYSTEM, DESTINATION, OPERATION, OPERATION_TYPE, BATCH_ID))


def _worker_spans(trace_id, parent, base, topic, partition, offset, timing, out_topic, client) -> list[tuple]:
    """The worker's five spans of one batch, built at flush time from the stamps recorded
    (trace and parent ids as hex strings, as they came in the traceparent header)."""
    batch_id, received, decode_ns, inference_ns, encode_ns, send = timing
    process, decode, score, encode, send_id = worker_span_ids(base)
    t1 = received + decode_ns
    t2 = t1 + inference_ns
    if client is None:
        score_span = (trace_id, score, process, "crayfish.score", "INTERNAL", t1, t2, _HOP_JSON["score"])
    else:
        score_span = (trace_id, score, process, "crayfish.score", "CLIENT", t1, t2,
                      {HOP: "score", RPC_SYSTEM: "http" if client in ("torchserve", "ray-serve") else "grpc",
                       "crayfish.client": client})
    bid = json.dumps(batch_id)
    return [
        (trace_id, process, parent, f"process {topic}", "CONSUMER", received, send,
         _PROCESS_ATTRS % (json.dumps(topic), partition, offset, bid)),
        (trace_id, decode, process, "crayfish.decode", "INTERNAL", received, t1, _HOP_JSON["decode"]),
        score_span,
        (trace_id, encode, process, "crayfish.encode", "INTERNAL", t2, t2 + encode_ns, _HOP_JSON["encode"]),
        (trace_id, send_id, process, f"send {out_topic}", "PRODUCER", send, send,
         _SEND_ATTRS % (json.dumps(out_topic), bid)),
    ]


_worker_spans.compact = "worker"
COMPACT_EXPANDERS = {"worker": _worker_spans}


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
                     _now(), {MESSAGING_SYSTEM: "kafka", DESTINATION: self.topic, OPERATION: "publish",
                              OPERATION_TYPE: "send", BATCH_ID: self.batch_id})


def _now() -> int:
    import time

    return time.time_ns()


class BatchTracing:
    """Per-batch spans of one service (see the module docstring). ``tracer`` is None when off."""

    def __init__(self, service: str):
        self.enabled = tracing_enabled() and (os.environ.get(SPANS_DIR_ENV) or
                                              os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or
                                              os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        self.log = SpanLog(service, os.environ.get(SPANS_DIR_ENV)) if self.enabled else None
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
        return SendSpan(self.log, trace_id, new_span_id(), _now(), topic, batch_id)

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
        the trace on. ``ctx``: observability.light.worker_context of the input headers (taken
        before an external call, whose metadata then carries :func:`client_traceparent`);
        ``timing``: OpResult.timing; ``client``: the external client kind, None when embedded.
        Recording is one tuple append: the spans are built when the log is flushed."""
        self.log.add_deferred(_worker_spans, ctx[0], ctx[1], ctx[2], topic, partition, offset, timing,
                              out_topic, client)
        tp = b"00-%s-%016x-01" % (ctx[0].encode(), ctx[2] | 5)
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
        parsed = parse_traceparent(header_value(headers))
        if parsed is None or not parsed[2]:
            return
        self.log.add(parsed[0], new_span_id(), parsed[1], f"receive {topic}", "CONSUMER", append_ms * 1_000_000,
                     _now(), {MESSAGING_SYSTEM: "kafka", DESTINATION: topic, OPERATION: "receive",
                              OPERATION_TYPE: "receive", BATCH_ID: batch_id})

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
