"""The parts of a point from several hosts merged into one point's files (services.runner.hosts_merge),
each on a constructed case with a hand-derived answer: sent batches in sequence order with their
host, one row per batch however many collectors read it, the backlog over every collector's
completions, counts summed, the skew bound that contains every host's own."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from services.analysis.sending import send_report
from services.collector.batches import rows_table
from services.runner.hosts_merge import (
    combined_skew,
    completion_times,
    hosts_section,
    merge_batches,
    merge_collector_reports,
    merge_generator_reports,
    merge_lag,
    merge_predictions,
    merge_rows,
    merge_sent,
)

MS = 1_000_000
T0 = 1_700_000_000_000 * MS


def sent_part(seqs, host="h"):
    return ({"host": host}, pa.table({"batch_id": [f"r-{q}" for q in seqs], "sequence": seqs,
                                      "intended_ns": [T0 + q * 10 * MS for q in seqs],
                                      "created_ns": [T0 + q * 10 * MS + MS for q in seqs]}))


def scored(q, out_ms, received_ns=None):
    return {"batch_id": f"r-{q}", "status": "scored", "reason": "", "sequence": q,
            "output_append_ms": T0 // MS + out_ms, "collector_receive_ns": received_ns}


def bound(lo, hi, probes=10, rtt=2.0):
    return {"lower_ms": lo, "upper_ms": hi, "probes": probes, "min_round_trip_ms": rtt, "width_ms": hi - lo}


def test_sent_batches_of_every_generator_in_sequence_order_with_their_host():
    sent = merge_sent([sent_part([1, 4], "b"), sent_part([0, 3], "a"), sent_part([2], "c")])
    d = sent.to_pydict()
    assert d["sequence"] == [0, 1, 2, 3, 4]
    assert d["generator_host"] == ["a", "b", "c", "a", "b"]
    assert d["batch_id"][4] == "r-4" and d["created_ns"][4] == T0 + 41 * MS


def test_the_combined_skew_bound_contains_every_hosts_bound():
    b = combined_skew([bound(-2.0, 1.0, rtt=3.0), None, bound(-1.0, 4.0, probes=5, rtt=1.5)])
    assert (b["lower_ms"], b["upper_ms"], b["width_ms"]) == (-2.0, 4.0, 6.0)
    assert b["probes"] == 15 and b["min_round_trip_ms"] == 1.5
    assert combined_skew([None, None]) is None


def test_generator_reports_sum_and_the_send_report_is_over_the_merged_rows():
    parts = [sent_part([0, 2]), sent_part([1, 3])]
    sent = merge_sent(parts)
    reports = [{"host": "a", "part": 0, "produced": 2, "processes": 1, "target_rate_bps": 50.0, "t0_ns": T0,
                "delivery_failures": 1, "delivery_errors": ["x"], "clock_skew": bound(-1.0, 1.0)},
               {"host": "b", "part": 1, "produced": 2, "processes": 2, "target_rate_bps": 50.0, "t0_ns": T0,
                "delivery_failures": 0, "delivery_errors": [], "clock_skew": bound(-3.0, 0.5)}]
    g = merge_generator_reports(reports, sent)
    assert g["produced"] == 4 and g["processes"] == 3 and g["delivery_failures"] == 1 and g["t0_ns"] == T0
    want = send_report(np.asarray(sent.column("intended_ns")), np.asarray(sent.column("created_ns")), 100.0)
    assert g["achieved_rate_bps"] == want["achieved_rate_bps"] == 100.0 and g["lateness_ms"] == want["lateness_ms"]
    assert g["target_rate_bps"] == 100.0 and g["achieved_over_target"] == 1.0
    assert (g["clock_skew"]["lower_ms"], g["clock_skew"]["upper_ms"]) == (-3.0, 1.0)
    assert [(h["host"], h["part"], h["produced"]) for h in g["hosts"]] == [("a", 0, 2), ("b", 1, 2)]


def test_one_row_per_batch_however_many_collectors_read_it():
    """r-0 read by both collectors (a redelivered copy): kept once, the earlier copy and its
    collector; r-2 read by none: missing, no collector; a record nobody sent: sent false."""
    sent = merge_sent([sent_part([0, 2], "g0"), sent_part([1], "g1")])
    rows = merge_rows([({"host": "c0"}, rows_table([scored(0, 40), scored(1, 20)])),
                       ({"host": "c1"}, rows_table([scored(0, 30), scored(9, 50)]))])
    d = merge_batches(sent, rows).to_pydict()
    assert d["batch_id"] == ["r-0", "r-1", "r-2", "r-9"]
    assert d["status"] == ["scored", "scored", "missing", "scored"] and d["sent"] == [True, True, True, False]
    assert d["duplicates"] == [1, 0, 0, 0] and d["output_append_ms"][0] == T0 // MS + 30
    assert d["collector_host"] == ["c1", "c0", None, "c1"]
    assert d["generator_host"] == ["g0", "g1", "g0", None]


def test_the_backlog_counts_every_collectors_completions():
    """Part 0 sampled 3, 5, 5 records appended at t = 10, 20, 30; completions (first copy of each
    batch, any collector) at 5, 12, 15 (r-1 again at 25: no second completion), 28."""
    rows = merge_rows([({"host": "c0"}, rows_table([scored(0, 1, 5), scored(1, 1, 12), scored(1, 1, 25)])),
                       ({"host": "c1"}, rows_table([scored(2, 1, 15), scored(3, 1, 28)]))])
    assert completion_times(rows).tolist() == [5, 12, 15, 28]
    lag = pa.table({"t_ns": [10, 20, 30], "lag": [99, 99, 99], "committed_lag": [-1, -1, -1], "appended": [3, 5, 5]})
    merged = merge_lag(lag, rows).to_pydict()
    assert merged["lag"] == [2, 2, 1] and merged["t_ns"] == [10, 20, 30] and merged["appended"] == [3, 5, 5]
    assert merge_lag(None, rows).num_rows == 0


def test_predictions_sum_and_say_which_hosts_checked_nothing():
    checker = {"checked": 3, "wrong": 1, "atol": 1e-4, "rtol": 0.0, "reference": "numpy", "max_abs_error": 0.5,
               "skipped_over_budget": 1, "skipped": {"why": 2}}
    p = merge_predictions([{"host": "c0", "predictions": checker},
                           {"host": "c1", "predictions": {**checker, "checked": 2, "wrong": 0, "max_abs_error": 0.1}},
                           {"host": "c2", "predictions": {"checked": 0, "wrong": 0, "note": "no model here"}}])
    assert (p["checked"], p["wrong"], p["max_abs_error"], p["skipped_over_budget"]) == (5, 1, 0.5, 2)
    assert p["skipped"] == {"why": 4} and p["note"] == "c2: no model here"


def test_collector_report_counts_the_merged_table_and_sums_the_reads():
    sent = merge_sent([sent_part([0, 1, 2])])
    reports = [{"host": "c0", "part": 0, "records_read": 2, "undecodable": 0, "scored": 1, "dead_lettered": 0},
               {"host": "c1", "part": 1, "records_read": 1, "undecodable": 1, "scored": 1, "dead_lettered": 0}]
    rows = merge_rows([(reports[0], rows_table([scored(0, 10), scored(0, 12)])),
                       (reports[1], rows_table([scored(1, 11)]))])
    table = merge_batches(sent, rows)
    c = merge_collector_reports(reports, table, merge_lag(None, rows))
    assert (c["records_read"], c["undecodable"], c["scored"], c["missing"], c["unmatched"]) == (3, 1, 2, 1, 0)
    assert [h["host"] for h in c["hosts"]] == ["c0", "c1"]
    section = hosts_section({"hosts": [{"host": "g", "part": 0, "produced": 3}]}, c)
    assert section["generators"] == [{"host": "g", "part": 0, "produced": 3, "clock_skew_ms": None}]
    assert [(h["host"], h["scored"]) for h in section["collectors"]] == [("c0", 1), ("c1", 1)]
    assert hosts_section({"produced": 3}, {"scored": 3}) is None
