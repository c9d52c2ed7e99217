"""The parts of a point whose generators and collectors joined from other hosts, merged into the
files a point folder always has, so that the analysis reads them as it reads any point:

* ``sent.parquet``: every generator's sent batches in sequence order, plus ``generator_host``;
* ``batches.parquet``: built from the sent batches and every record any collector read (as one
  collector builds it from its own: ``services.collector.batches``), plus ``collector_host`` (who
  read the copy kept) and ``generator_host``;
* ``lag.parquet``: the input's appended records as collector part 0 sampled them, minus the batches
  all collectors had seen finished by each sample (``collector_receive_ns``, each its host's clock);
* ``generator.json``: counts summed, the send report over the merged rows, the clock-skew bound that
  contains every generator host's own, and ``hosts`` (each one's part, counts and bound);
* ``collector.json``: counts from the merged table, reads and predictions summed, and ``hosts``.

:func:`hosts_section` is what a point summary says about who generated and collected what.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.analysis.sending import send_report
from services.collector.batches import DEAD, SCORED, build_batches_table

SKEW_DEFINITION = ("broker_clock - generator_clock lies in [lower_ms, upper_ms] for every generator host "
                   "(the hull of the hosts' own bounds: hosts[].clock_skew)")


def merge_sent(parts: list[tuple[dict, pa.Table]]) -> pa.Table:
    """``(generator report, its sent table)`` of every part -> one table in sequence order."""
    tables = [t.append_column("generator_host", pa.array([r["host"]] * t.num_rows, pa.string())) for r, t in parts]
    merged = pa.concat_tables(tables, promote_options="default")
    return merged.take(pc.sort_indices(merged, [("sequence", "ascending")]))


def combined_skew(bounds: list[dict | None]) -> dict | None:
    """The smallest interval that contains every host's bound (None when no host probed)."""
    known = [b for b in bounds if b]
    if not known:
        return None
    lower, upper = min(b["lower_ms"] for b in known), max(b["upper_ms"] for b in known)
    return {"lower_ms": lower, "upper_ms": upper, "probes": sum(b["probes"] for b in known),
            "min_round_trip_ms": min(b["min_round_trip_ms"] for b in known), "width_ms": upper - lower,
            "definition": SKEW_DEFINITION}


def merge_generator_reports(reports: list[dict], sent: pa.Table) -> dict:
    """One ``generator.json`` of the parts' reports and the merged sent table."""
    targets = [r.get("target_rate_bps") for r in reports]
    t0s = [r["t0_ns"] for r in reports if r.get("t0_ns") is not None]
    return {
        "produced": sum(r["produced"] for r in reports),
        **send_report(np.asarray(sent.column("intended_ns")), np.asarray(sent.column("created_ns")),
                      sum(targets) if all(t is not None for t in targets) else None),
        "delivery_failures": sum(r.get("delivery_failures", 0) for r in reports),
        "delivery_errors": [e for r in reports for e in r.get("delivery_errors") or []][:20],
        "processes": sum(r.get("processes", 0) for r in reports),
        "stuck_outstanding": sum(r.get("stuck_outstanding", 0) for r in reports),
        "t0_ns": min(t0s) if t0s else None,
        "clock_skew": combined_skew([r.get("clock_skew") for r in reports]),
        "hosts": [{"host": r["host"], "part": r["part"], "produced": r["produced"], "processes": r.get("processes"),
                   "achieved_rate_bps": r.get("achieved_rate_bps"), "clock_skew": r.get("clock_skew")}
                  for r in sorted(reports, key=lambda r: r["part"])],
    }


def merge_rows(parts: list[tuple[dict, pa.Table]]) -> list[dict]:
    """``(collector report, its rows.parquet)`` of every part -> the records read, each with
    ``collector_host``."""
    rows = []
    for report, table in parts:
        for row in table.to_pylist():
            row["collector_host"] = report["host"]
            rows.append(row)
    return rows


def merge_batches(sent: pa.Table, rows: list[dict]) -> pa.Table:
    """The point's per-batch table from every part; sent rows first, in ``sent`` order."""
    table = build_batches_table(sent, rows, {"collector_host": pa.string()})
    hosts = sent.column("generator_host").to_pylist() + [None] * (table.num_rows - sent.num_rows)
    return table.append_column("generator_host", pa.array(hosts, pa.string()))


def completion_times(rows: list[dict]) -> np.ndarray:
    """When each distinct batch (or record without an id) was first seen finished, sorted (ns)."""
    first: dict[str, int] = {}
    anonymous = []
    for r in rows:
        t = r.get("collector_receive_ns")
        if t is None:
            continue
        if r.get("batch_id"):
            first[r["batch_id"]] = min(t, first.get(r["batch_id"], t))
        else:
            anonymous.append(t)
    return np.sort(np.asarray(list(first.values()) + anonymous, dtype=np.int64))


def merge_lag(lag: pa.Table | None, rows: list[dict]) -> pa.Table:
    """Part 0's samples with the backlog recounted over every part's completions."""
    empty = np.zeros(0, dtype=np.int64)
    if lag is None or "appended" not in lag.column_names or lag.num_rows == 0:
        return pa.table({"t_ns": empty, "lag": empty, "committed_lag": empty, "appended": empty})
    t = np.asarray(lag.column("t_ns"), dtype=np.int64)
    appended = np.asarray(lag.column("appended"), dtype=np.int64)
    done = np.searchsorted(completion_times(rows), t, side="right")
    return pa.table({"t_ns": t, "lag": np.maximum(appended - done, 0),
                     "committed_lag": np.asarray(lag.column("committed_lag"), dtype=np.int64), "appended": appended})


def merge_predictions(reports: list[dict]) -> dict:
    """The prediction checks of every part summed; ``note`` says which parts checked nothing."""
    preds = [r.get("predictions") or {} for r in reports]
    checkers = [p for p in preds if "reference" in p]
    out = {"checked": sum(p.get("checked", 0) for p in preds), "wrong": sum(p.get("wrong", 0) for p in preds)}
    if checkers:
        skipped = sum((Counter(p.get("skipped") or {}) for p in checkers), Counter())
        out.update(atol=checkers[0]["atol"], rtol=checkers[0]["rtol"], reference=checkers[0]["reference"],
                   max_abs_error=max(p.get("max_abs_error", 0.0) for p in checkers),
                   skipped_over_budget=sum(p.get("skipped_over_budget", 0) for p in checkers), skipped=dict(skipped))
    notes = [f"{r['host']}: {p['note']}" for r, p in zip(reports, preds) if p.get("note")]
    if notes:
        out["note"] = "; ".join(notes)
    return out


def merge_collector_reports(reports: list[dict], table: pa.Table, lag: pa.Table) -> dict:
    """One ``collector.json`` of the parts' reports and the merged per-batch table."""
    status = table.column("status").to_pylist()
    anonymous = pc.and_(pc.invert(table.column("sent")), pc.equal(pc.fill_null(table.column("batch_id"), ""), ""))
    with_key = pc.and_(anonymous, pc.not_equal(pc.fill_null(table.column("echo_key"), ""), ""))
    return {
        "records_read": sum(r["records_read"] for r in reports),
        "undecodable": sum(r.get("undecodable", 0) for r in reports),
        "scored": status.count(SCORED),
        "dead_lettered": status.count(DEAD),
        "missing": status.count("missing"),
        "unmatched": int(pc.sum(with_key).as_py() or 0),
        "matched_by_echo": table.column("matched_by").to_pylist().count("echo"),
        "predictions": merge_predictions(reports),
        "lag_samples": lag.num_rows,
        "hosts": [{"host": r["host"], "part": r["part"], "records_read": r["records_read"], "scored": r["scored"],
                   "dead_lettered": r["dead_lettered"], "partitions": r.get("partitions"),
                   "clock_skew": r.get("clock_skew")} for r in sorted(reports, key=lambda r: r["part"])],
    }


def hosts_section(generator: dict, collector: dict) -> dict | None:
    """Who generated and collected what (a point summary's ``hosts``); None for a one-host point."""
    if "hosts" not in generator and "hosts" not in collector:
        return None
    gens = [{"host": h["host"], "part": h["part"], "produced": h["produced"], "clock_skew_ms": h.get("clock_skew")}
            for h in generator.get("hosts", [])]
    cols = [{"host": h["host"], "part": h["part"], "records_read": h["records_read"], "scored": h["scored"],
             "dead_lettered": h["dead_lettered"], "partitions": h.get("partitions"),
             "clock_skew_ms": h.get("clock_skew")} for h in collector.get("hosts", [])]
    return {"generators": gens, "collectors": cols}
