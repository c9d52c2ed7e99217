"""Compact span-file lines: one line per flush for the spans a service records per batch.

The worker records five spans per sampled batch. Instead of five JSON lines, its span log writes
one line per flush holding the stamps of all those batches::

    {"compact": "worker", "service": "kafka-worker", "vs": [[<arguments of one expander call>], ...]}

and :func:`expand_compact` (what observability.hops.read_spans calls) rebuilds the span records from
the stamps with the same expander that built the spans for OTLP, so both carry identical spans.

Adding a compact kind: write an expander ``f(*stamps) -> list of span tuples`` (the tuple layout is
in observability.spanlog), give it ``f.compact = "<kind>"``, register it in ``COMPACT_EXPANDERS``,
and record with ``SpanLog.add_deferred(f, *stamps)``. Its stamps must be JSON-serialisable, and the
expander must stay able to read lines written by earlier versions (span files outlive the code).
"""

from __future__ import annotations

import json

from observability.context import worker_span_ids
from observability.names import (BATCH_ID, DESTINATION, HOP, MESSAGING_SYSTEM, OFFSET, OPERATION, OPERATION_TYPE,
                                 PARTITION, RPC_SYSTEM)
from observability.spanlog import hex_id

_HOP_JSON = {h: json.dumps({HOP: h}, separators=(",", ":")) for h in ("decode", "score", "encode")}
_PROCESS_ATTRS = ('{"%s":"kafka","%s":%%s,"%s":"process","%s":"process","%s":"%%d","%s":%%d,"%s":%%s}'
                  % (MESSAGING_SYSTEM, DESTINATION, OPERATION, OPERATION_TYPE, PARTITION, OFFSET, BATCH_ID))
_SEND_ATTRS = ('{"%s":"kafka","%s":%%s,"%s":"publish","%s":"send","%s":%%s}'
               % (MESSAGING_SYSTEM, DESTINATION, OPERATION, OPERATION_TYPE, BATCH_ID))
# External clients that speak HTTP; every other client is gRPC.
_HTTP_CLIENTS = ("torchserve", "ray-serve")


def worker_spans(trace_id, parent, base, topic, partition, offset, timing, out_topic, client) -> list[tuple]:
    """The worker's five spans of one batch, built at flush time from the stamps recorded (trace
    and parent ids as hex strings, as they came in the traceparent header; ``timing`` the scoring
    operator's (batch_id, received_ns, decode_ns, inference_ns, encode_ns, send_ns); ``client`` the
    external client kind, None when scoring is embedded)."""
    batch_id, received, decode_ns, inference_ns, encode_ns, send = timing
    process, decode, score, encode, send_id = worker_span_ids(base)
    t1 = received + decode_ns
    t2 = t1 + inference_ns
    if client is None:
        score_span = (trace_id, score, process, "crayfish.score", "INTERNAL", t1, t2, _HOP_JSON["score"])
    else:
        score_span = (trace_id, score, process, "crayfish.score", "CLIENT", t1, t2,
                      {HOP: "score", RPC_SYSTEM: "http" if client in _HTTP_CLIENTS else "grpc",
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


worker_spans.compact = "worker"
COMPACT_EXPANDERS = {"worker": worker_spans}


def expand_compact(record: dict) -> list[dict]:
    """The span records of one compact line (each as a plain span-file line reads)."""
    fn = COMPACT_EXPANDERS[record["compact"]]
    out = []
    spans = [span for v in record["vs"] for span in fn(*v)]
    for trace_id, span_id, parent_id, name, kind, start, end, attrs in spans:
        out.append({"trace_id": hex_id(trace_id, 32), "span_id": hex_id(span_id, 16),
                    "parent_id": hex_id(parent_id, 16) if parent_id else None, "name": name, "kind": kind,
                    "start_ns": int(start), "end_ns": int(end), "status": "UNSET",
                    "attributes": json.loads(attrs) if isinstance(attrs, str) else (attrs or {}),
                    "links": [], "service": record.get("service", "")})
    return out
