"""The collector's per-batch table (``batches.parquet``): one row per batch, first copy wins.

Pure: built from the generator's ``sent.parquet`` and the rows the collector read from the output
and dead-letter topics, so that the accounting can be proven on constructed inputs."""

from __future__ import annotations

import pyarrow as pa

SCORED, DEAD = "scored", "dead_lettered"

COLUMNS = {
    "batch_id": pa.string(), "sequence": pa.int64(), "status": pa.string(), "reason": pa.string(),
    "detail": pa.string(), "sent": pa.bool_(), "duplicates": pa.int64(), "order": pa.int64(),
    "intended_ns": pa.int64(), "created_ns": pa.int64(), "input_append_ms": pa.int64(),
    "worker_receive_ns": pa.int64(), "worker_send_ns": pa.int64(), "output_append_ms": pa.int64(),
    "decode_ns": pa.int64(), "inference_ns": pa.int64(), "encode_ns": pa.int64(),
    "server_inference_ns": pa.int64(), "server_queue_ns": pa.int64(), "backend": pa.string(),
    "worker_id": pa.string(), "engine": pa.string(), "server": pa.string(), "topic": pa.string(),
    "partition": pa.int64(), "offset": pa.int64(), "correct": pa.bool_(),
}


def first_copies(rows: list[dict]) -> tuple[dict[str, dict], dict[str, int], list[dict]]:
    """Group the records read by batch id -> ``(copy kept per batch, extra copies per batch, records
    without a batch id)``. A scored copy beats a dead letter (the batch was scored in the end); among
    copies of that status the earliest output append is kept (its latency counts, once) and the
    others are duplicates (at-least-once redelivery)."""
    copies: dict[str, list[dict]] = {}
    anonymous: list[dict] = []
    for r in rows:
        if r.get("batch_id"):
            copies.setdefault(r["batch_id"], []).append(r)
        else:
            anonymous.append(r)
    kept: dict[str, dict] = {}
    extra: dict[str, int] = {}
    for bid, found in copies.items():
        pool = [r for r in found if r["status"] == SCORED] or found
        kept[bid] = min(pool, key=lambda r: r["output_append_ms"])
        extra[bid] = len(pool) - 1
    return kept, extra, anonymous


def build_batches_table(sent: pa.Table | None, rows: list[dict]) -> pa.Table:
    """One row per batch: every sent batch (``scored``, ``dead_lettered`` or ``missing``, with
    ``sent`` true), then the batches read that the generator did not send and the records without a
    batch id (undecodable), with ``sent`` false. See :func:`first_copies` for duplicates."""
    kept, extra, anonymous = first_copies(rows)
    out: list[dict] = []
    sent_ids: set[str] = set()
    if sent is not None:
        cols = sent.to_pydict()
        for bid, seq, intended, created in zip(cols["batch_id"], cols["sequence"], cols["intended_ns"],
                                                cols["created_ns"]):
            sent_ids.add(bid)
            row = {**kept.get(bid, {"status": "missing"}), "batch_id": bid, "sequence": seq,
                   "intended_ns": intended, "created_ns": created, "sent": True, "duplicates": extra.get(bid, 0)}
            out.append(row)
    out += [{**r, "sent": False, "duplicates": extra[bid]} for bid, r in kept.items() if bid not in sent_ids]
    out += [{**r, "sent": False, "duplicates": 0} for r in anonymous]
    return pa.table({name: pa.array([row.get(name) for row in out], type=kind) for name, kind in COLUMNS.items()})
