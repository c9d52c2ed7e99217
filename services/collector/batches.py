"""The collector's per-batch table (``batches.parquet``): one row per batch, first copy wins.

Pure: built from the generator's ``sent.parquet`` and the rows the collector read from the output
and dead-letter topics, so that the accounting can be proven on constructed inputs.

How an output finds its batch
-----------------------------
1. By the ids it carries: in the record value (protobuf) or in the Kafka headers (crayfish-json
   written by our workers). ``matched_by`` = ``"ids"``.
2. Else by its echo key (crayfish-json through a pipeline that drops the headers:
   ``crayfish.codec_json``, "Matching an output that lost its headers"): the generator wrote each
   batch's key into ``sent.parquet`` (``echo_key``); :class:`EchoMatcher` gives an id-less output the
   first sent batch of its key that nothing has claimed yet, in ``sent.parquet`` order (sequence), and
   the outputs in the order they were read. Several batches share a key only when they were built in
   the same millisecond from the same data; they are then told apart by that order alone. An output
   whose key's batches are all claimed is a redelivered copy: a duplicate of the key's first batch.
   ``matched_by`` = ``"echo"``.
3. An output with a key that no sent batch has is ``unmatched`` (``sent`` false, counted apart:
   ``services.analysis.accounting``); never dropped.
"""

from __future__ import annotations

from collections import deque

import pyarrow as pa

SCORED, DEAD = "scored", "dead_lettered"
MATCHED_BY_IDS, MATCHED_BY_ECHO = "ids", "echo"

COLUMNS = {
    "batch_id": pa.string(), "sequence": pa.int64(), "status": pa.string(), "reason": pa.string(),
    "detail": pa.string(), "sent": pa.bool_(), "duplicates": pa.int64(), "order": pa.int64(),
    "intended_ns": pa.int64(), "created_ns": pa.int64(), "input_append_ms": pa.int64(),
    "worker_receive_ns": pa.int64(), "worker_send_ns": pa.int64(), "output_append_ms": pa.int64(),
    "decode_ns": pa.int64(), "inference_ns": pa.int64(), "encode_ns": pa.int64(),
    "server_inference_ns": pa.int64(), "server_queue_ns": pa.int64(), "backend": pa.string(),
    "worker_id": pa.string(), "engine": pa.string(), "server": pa.string(), "topic": pa.string(),
    "partition": pa.int64(), "offset": pa.int64(), "correct": pa.bool_(),
    # the collector's wall clock when it polled the record (µs-resolution e2e: docs/results.md)
    "collector_receive_ns": pa.int64(),
    # how the row found its batch ("ids", "echo", "" for none) and the output's echo key, if any
    "matched_by": pa.string(), "echo_key": pa.string(),
}


class EchoMatcher:
    """Assigns outputs without ids to sent batches by their echo key (module docstring, step 2).

    Built from ``sent.parquet`` (a table, or its columns as a dict); without an ``echo_key`` column
    nothing matches. :meth:`claim` takes a batch out of the pool (an output carried its ids);
    :meth:`assign` gives an output its batch."""

    def __init__(self, sent: pa.Table | dict | None):
        cols = sent.to_pydict() if isinstance(sent, pa.Table) else dict(sent or {})
        keys = cols.get("echo_key") or []
        self._free: dict[str, deque[tuple[str, int]]] = {}
        self._first: dict[str, tuple[str, int]] = {}
        for key, bid, seq in zip(keys, cols.get("batch_id", []), cols.get("sequence", [])):
            if key:
                self._free.setdefault(key, deque()).append((bid, seq))
                self._first.setdefault(key, (bid, seq))
        self._claimed: set[str] = set()

    def claim(self, batch_id: str) -> None:
        """``batch_id`` found its output by ids: no id-less output is given to it."""
        self._claimed.add(batch_id)

    def assign(self, key: str | None) -> tuple[str, int] | None:
        """``(batch_id, sequence)`` for an output with echo key ``key``: the first unclaimed sent batch
        of that key (now claimed), else the key's first batch (a duplicate copy); None when no sent
        batch has the key."""
        if not key or key not in self._first:
            return None
        free = self._free[key]
        while free:
            bid, seq = free.popleft()   # taken out of the pool: never given twice
            if bid not in self._claimed:
                return bid, seq
        return self._first[key]


def resolve_echo(row: dict, matcher: EchoMatcher) -> bool:
    """Fill ``batch_id`` / ``sequence`` / ``matched_by`` of an id-less output row from ``matcher``;
    False (row unchanged) when its key matches no sent batch."""
    found = matcher.assign(row.get("echo_key"))
    if found is None:
        return False
    row["batch_id"], row["sequence"] = found
    row["matched_by"] = MATCHED_BY_ECHO
    return True


def match_echoes(sent: pa.Table | None, rows: list[dict]) -> list[dict]:
    """``rows`` with every id-less output that has an echo key resolved against ``sent`` (copies of
    the rows it changes; the others as they are). Rows with a batch id claim theirs first."""
    if sent is None or "echo_key" not in sent.column_names:
        return rows
    matcher = EchoMatcher(sent)
    for r in rows:
        if r.get("batch_id"):
            matcher.claim(r["batch_id"])
    out = []
    for r in rows:
        if not r.get("batch_id") and r.get("echo_key"):
            r = dict(r)
            resolve_echo(r, matcher)
        out.append(r)
    return out


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


def build_batches_table(sent: pa.Table | None, rows: list[dict],
                        extra_columns: dict[str, pa.DataType] | None = None) -> pa.Table:
    """One row per batch: every sent batch (``scored``, ``dead_lettered`` or ``missing``, with
    ``sent`` true), then the batches read that the generator did not send and the records without a
    batch id (undecodable, or id-less outputs whose echo key matched nothing), with ``sent`` false.
    Id-less outputs are matched first (:func:`match_echoes`); see :func:`first_copies` for duplicates.
    ``extra_columns``: more columns, taken from the kept rows (e.g. which collector read them)."""
    kept, extra, anonymous = first_copies(match_echoes(sent, rows))
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
    columns = {**COLUMNS, **(extra_columns or {})}
    return pa.table({name: pa.array([row.get(name) for row in out], type=kind) for name, kind in columns.items()})


def rows_table(rows: list[dict]) -> pa.Table:
    """The records as read (every copy, ``sent`` and ``duplicates`` empty): what a joined collector
    hands the runner, which builds the run's table from every part (``rows_table(...).to_pylist()``
    gives the rows back)."""
    return pa.table({name: pa.array([row.get(name) for row in rows], type=kind) for name, kind in COLUMNS.items()})
