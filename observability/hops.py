"""Per-hop latency breakdown of a run from its span files and its batches.parquet.

The contract the integration must follow (attribute and span names):

- Every span that belongs to one batch carries ``crayfish.batch_id`` (str, the DataBatch.batch_id),
  or has an ancestor span (same trace, any of the run's span files) that carries it. The worker's
  consumer span (``process <topic>``) carries it, so the decode/score/encode spans inside it need
  not repeat it.
- The worker's step spans carry ``crayfish.hop`` = ``decode`` | ``score`` | ``encode`` (the span
  name is ``crayfish.<hop>``; observability.compact builds them). ``score`` is the scorer call
  (for external serving: the client call, server time inside it).
- A batch "has spans" when at least one span maps to it. Its hops (ms):

      produce = input_append_ms - created_ns/1e6                  (broker stamp, 1 ms resolution)
      wait    = worker_receive_ns/1e6 - input_append_ms           (broker stamp)
      decode, score, encode = sum of that batch's crayfish.hop spans' durations, when it has any;
                              else decode_ns / inference_ns / encode_ns of batches.parquet
      publish = output_append_ms - worker_send_ns/1e6             (broker stamp)
      e2e     = output_append_ms - created_ns/1e6                 (the paper's latency)

  A stamp that is absent (null or 0: a pipeline of someone else's writes outputs without our worker
  stamps or ScoringFacts) makes every hop that needs it absent for that batch: left out of that
  hop's statistics, never computed from 0. A hop absent from every traced batch is left out of
  ``hops_ms`` and named in ``absent``; e2e needs only created_ns and output_append_ms.

  residual = e2e - (sum of the six hops): the worker's own time outside decode/score/encode plus
  the stamps' truncation; over the batches that have all seven values (``complete_batches``). The check: |mean residual| <= 5 % of mean e2e (mean of sums = sum of
  means; per batch the 1 ms broker stamps make sub-ms e2e values too coarse for a 5 % test, so the
  share of batches that pass one by one is reported beside it).
- Only ``status == "scored"`` rows count. The bottleneck is the hop with the largest p50 (ties:
  the larger mean).
- ``score_parts_ms`` (external serving; inside ``score``): ``server_queue`` and ``inference`` from
  the server's spans (our Scoring server records them under the worker's client span, whose context
  travels in the gRPC metadata) or else from the times the server reported (ScoringFacts), and
  ``client`` = score - both: serialization, transport and gRPC handling on both sides.
- ``transit_ms`` (outside the sum, informative): consumer span start - end of the producer span
  of the batch's input record, sub-ms from the spans themselves (same host clock assumed).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from observability.compact import expand_compact
from observability.names import BATCH_ID, HOP, SPANS_DIRNAME

__all__ = ["hop_breakdown", "read_spans", "BATCH_ID", "HOP", "HOPS", "WORKER_HOPS", "SUM_TOLERANCE"]

WORKER_HOPS = ("decode", "score", "encode")
# Inside ``score`` for external serving: what the server reports (server spans, else ScoringFacts).
SERVER_PARTS = ("server_queue", "inference")
HOPS = ("produce", "wait", "decode", "score", "encode", "publish")
SUM_TOLERANCE = 0.05
_COLUMN_OF = {"decode": "decode_ns", "score": "inference_ns", "encode": "encode_ns"}
_SERVER_COLUMN_OF = {"server_queue": "server_queue_ns", "inference": "server_inference_ns"}
_COLUMNS = ("batch_id", "status", "created_ns", "input_append_ms", "worker_receive_ns", "worker_send_ns",
            "output_append_ms", "decode_ns", "inference_ns", "encode_ns", "server_queue_ns", "server_inference_ns")


# ---- reading the span files -----------------------------------------------------------------------

def read_spans(run_dir: Path | str) -> list[dict]:
    """All span records under ``run_dir`` (every ``spans/*.jsonl`` at any depth). Torn last lines
    (a process killed mid-write) are skipped. Compact lines (one per flush for the worker's five
    spans of each batch, observability.compact) are expanded into their span records."""
    out = []
    for f in sorted(Path(run_dir).rglob("*.jsonl")):
        if f.parent.name != SPANS_DIRNAME:
            continue
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "compact" in rec:
                    out.extend(expand_compact(rec))
                else:
                    out.append(rec)
    return out


def _batch_of_spans(spans: list[dict]) -> dict[int, str]:
    """index of span -> batch_id: its own crayfish.batch_id, else the nearest ancestor's."""
    by_id = {(s.get("trace_id"), s.get("span_id")): i for i, s in enumerate(spans)}
    memo: dict[int, str | None] = {}

    def find(i: int, depth: int = 0) -> str | None:
        if i in memo:
            return memo[i]
        s = spans[i]
        bid = (s.get("attributes") or {}).get(BATCH_ID)
        if bid is None and s.get("parent_id") and depth < 64:
            j = by_id.get((s.get("trace_id"), s.get("parent_id")))
            bid = find(j, depth + 1) if j is not None else None
        memo[i] = None if bid is None else str(bid)
        return memo[i]

    return {i: b for i in range(len(spans)) if (b := find(i)) is not None}


@dataclass
class _SpanTimes:
    """What the spans say per batch id."""

    step_ns: dict[str, dict[str, int]]   # batch -> hop (worker hops, server parts) -> summed duration
    consumer_start: dict[str, int]       # batch -> earliest start of its consumer span
    producer_end: dict[str, int]         # batch -> earliest end of a producer span (the input record's)
    batches: set[str]                    # batches with at least one span


def _span_times(spans: list[dict]) -> _SpanTimes:
    owner = _batch_of_spans(spans)
    step_ns: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    consumer_start: dict[str, int] = {}
    producer_end: dict[str, int] = {}
    for i, bid in owner.items():
        s = spans[i]
        start, end = s.get("start_ns"), s.get("end_ns")
        if start is None or end is None:
            continue
        attrs = s.get("attributes") or {}
        hop = attrs.get(HOP)
        if hop in WORKER_HOPS or hop in SERVER_PARTS:
            step_ns[bid][hop] += int(end) - int(start)
        kind = s.get("kind")
        if kind == "CONSUMER" and attrs.get(BATCH_ID) is not None:
            consumer_start[bid] = min(consumer_start.get(bid, int(start)), int(start))
        elif kind == "PRODUCER":  # the earliest send of the batch = the generator's input record
            producer_end[bid] = min(producer_end.get(bid, int(end)), int(end))
    return _SpanTimes(step_ns, consumer_start, producer_end, set(owner.values()))


# ---- one row per traced batch ---------------------------------------------------------------------

@dataclass
class _Rows:
    """The per-batch values (ms) of the traced, scored batches, and where each came from. A value a
    batch lacks (an absent stamp) is None in ``per_batch`` and left out of ``hops``."""

    hops: dict[str, list[float]] = field(default_factory=lambda: {h: [] for h in (*HOPS, "e2e")})
    per_batch: list[dict[str, float | None]] = field(default_factory=list)
    source: dict[str, dict[str, int]] = field(
        default_factory=lambda: {h: {"spans": 0, "columns": 0} for h in WORKER_HOPS})
    transit: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(
        default_factory=lambda: {"client": [], "server_queue": [], "inference": []})
    part_source: dict[str, int] = field(default_factory=lambda: {"spans": 0, "columns": 0})
    seen: set[str] = field(default_factory=set)
    scored: int = 0


def _rows(table: pa.Table, times: _SpanTimes) -> _Rows:
    cols = {c: table.column(c).to_pylist() for c in _COLUMNS if c in table.column_names}
    n = table.num_rows
    status = cols.get("status", ["scored"] * n)
    acc = _Rows()
    for r in range(n):
        if status[r] != "scored":
            continue
        acc.scored += 1
        bid = str(cols["batch_id"][r])
        if bid not in times.batches or bid in acc.seen:
            continue
        acc.seen.add(bid)
        _add_batch(acc, cols, r, bid, times)
    return acc


def _stamp(cols: dict[str, list], name: str, r: int, unit: int = 1) -> int | None:
    """A stamp in ns, or None when it is absent: no column, null, or 0 (the protobuf default a
    pipeline that writes no such stamp leaves; e.g. crayfish-json outputs without our headers)."""
    v = cols.get(name)
    if v is None or not v[r]:
        return None
    return int(v[r]) * unit


def _diff_ms(end: int | None, start: int | None) -> float | None:
    # differences in integer ns first: epoch ns do not fit a float64 exactly
    return None if end is None or start is None else (end - start) / 1e6


def _add_batch(acc: _Rows, cols: dict[str, list], r: int, bid: str, times: _SpanTimes) -> None:
    created = _stamp(cols, "created_ns", r)
    inp = _stamp(cols, "input_append_ms", r, 1_000_000)
    recv = _stamp(cols, "worker_receive_ns", r)
    send = _stamp(cols, "worker_send_ns", r)
    out = _stamp(cols, "output_append_ms", r, 1_000_000)
    steps = times.step_ns.get(bid, {})
    row: dict[str, float | None] = {"produce": _diff_ms(inp, created), "wait": _diff_ms(recv, inp)}
    for h in WORKER_HOPS:
        if h in steps:
            row[h] = steps[h] / 1e6
            acc.source[h]["spans"] += 1
        else:
            timer = _stamp(cols, _COLUMN_OF[h], r)
            row[h] = None if timer is None else timer / 1e6
            acc.source[h]["columns"] += timer is not None
    row["publish"] = _diff_ms(out, send)
    row["e2e"] = _diff_ms(out, created)
    server = {}
    for part, column in _SERVER_COLUMN_OF.items():
        if part in steps:
            server[part] = steps[part] / 1e6
        elif cols.get(column) is not None and cols[column][r]:
            server[part] = cols[column][r] / 1e6
    if server and row["score"] is not None:
        acc.part_source["spans" if any(p in steps for p in SERVER_PARTS) else "columns"] += 1
        acc.parts["server_queue"].append(server.get("server_queue", 0.0))
        acc.parts["inference"].append(server.get("inference", 0.0))
        acc.parts["client"].append(row["score"] - acc.parts["server_queue"][-1] - acc.parts["inference"][-1])
    for h, v in row.items():
        if v is not None:
            acc.hops[h].append(v)
    acc.per_batch.append(row)
    if bid in times.consumer_start and bid in times.producer_end:
        acc.transit.append((times.consumer_start[bid] - times.producer_end[bid]) / 1e6)


# ---- the summary ----------------------------------------------------------------------------------

def _pcts(v) -> dict:
    if len(v) == 0:
        return {}
    return {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
            "mean": float(np.mean(v)), "count": int(len(v))}


def _sum_check(per_batch: list[dict[str, float | None]]) -> dict:
    """Do the six hops add up to e2e? (the mean residual within SUM_TOLERANCE of the mean e2e), over
    the batches that have all seven values; ``{"complete_batches": 0}`` (no verdict) when none has."""
    complete = [b for b in per_batch if all(b[h] is not None for h in (*HOPS, "e2e"))]
    if not complete:
        return {"complete_batches": 0}
    arr = {h: np.asarray([b[h] for b in complete], dtype=np.float64) for h in (*HOPS, "e2e")}
    hop_sum = sum(arr[h] for h in HOPS)
    residual = arr["e2e"] - hop_sum
    e2e_mean = float(arr["e2e"].mean())
    res_mean = float(residual.mean())
    per_batch_ok = np.abs(residual) <= SUM_TOLERANCE * np.abs(arr["e2e"])
    return {
        "e2e_mean_ms": e2e_mean, "hops_sum_mean_ms": float(hop_sum.mean()),
        "residual_mean_ms": res_mean, "residual_p50_ms": float(np.percentile(residual, 50)),
        "residual_p99_ms": float(np.percentile(residual, 99)),
        "residual_frac": (res_mean / e2e_mean) if e2e_mean else None,
        "tolerance": SUM_TOLERANCE, "ok": bool(abs(res_mean) <= SUM_TOLERANCE * abs(e2e_mean)),
        "batches_within_tolerance": float(per_batch_ok.mean()), "complete_batches": len(complete),
    }


def hop_breakdown(run_dir: Path | str, batches: Path | str | None = None) -> dict:
    """Per-hop p50/p99/mean (ms) over the scored batches of ``run_dir`` that have spans.

    ``batches`` defaults to ``run_dir/batches.parquet``; span files are ``run_dir/**/spans/*.jsonl``.
    Returns ``{"batches", "batches_scored", "spans", "hops_ms": {hop: {p50, p99, mean, count}, ...,
    "e2e": ...}, "absent": [hops without any value], "source": {decode|score|encode: {"spans": n,
    "columns": n}}, "sum_check": {...}, "bottleneck": name, "bottleneck_ms": p50, "transit_ms": {...}}``;
    with no matching batch, ``batches`` is 0 and hops_ms is empty. The bottleneck is among the
    hops present.
    """
    run_dir = Path(run_dir)
    table = pq.read_table(batches if batches is not None else run_dir / "batches.parquet")
    spans = read_spans(run_dir)
    acc = _rows(table, _span_times(spans))
    result = {"batches": len(acc.seen), "batches_scored": acc.scored, "spans": len(spans)}
    if not acc.seen:
        return {**result, "hops_ms": {}, "absent": [], "source": acc.source, "sum_check": {}, "bottleneck": None,
                "bottleneck_ms": None, "transit_ms": {}, "score_parts_ms": {}}

    arr = {h: np.asarray(v, dtype=np.float64) for h, v in acc.hops.items()}
    # a hop no traced batch has a value for is absent: left out of hops_ms, named in "absent"
    hops_ms = {h: _pcts(arr[h]) for h in (*HOPS, "e2e") if len(arr[h])}
    absent = [h for h in (*HOPS, "e2e") if h not in hops_ms]
    measured = [h for h in HOPS if h in hops_ms]
    bottleneck = max(measured, key=lambda h: (hops_ms[h]["p50"], hops_ms[h]["mean"])) if measured else None
    # score = client (serialization, transport, client/server gRPC handling) + server queue + inference
    score_parts = ({p: _pcts(np.asarray(v, dtype=np.float64)) for p, v in acc.parts.items()}
                   | {"source": acc.part_source} if acc.parts["client"] else {})
    return {**result, "hops_ms": hops_ms, "absent": absent, "source": acc.source,
            "sum_check": _sum_check(acc.per_batch), "bottleneck": bottleneck,
            "bottleneck_ms": hops_ms[bottleneck]["p50"] if bottleneck else None,
            "transit_ms": _pcts(np.asarray(acc.transit, dtype=np.float64)), "score_parts_ms": score_parts}
