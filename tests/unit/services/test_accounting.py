"""Where every batch ended, from the records the collector read to the point's numbers: the
collector's batch table (first copy wins, duplicates counted apart), the accounting, the per-hop
stamps and the mean ± sd over repetitions — each on a constructed case with a hand-derived answer."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from services.analysis import (
    PointRules,
    Warmup,
    account,
    accounting_reasons,
    aggregate_repetitions,
    combine_repetitions,
    stamp_hops,
    summarize_point,
)
from services.collector.batches import COLUMNS, EchoMatcher, build_batches_table, first_copies, match_echoes, resolve_echo

MS = 1_000_000
T0 = 1_700_000_000_000 * MS


def sent_table(n):
    return pa.table({"batch_id": [f"r-{i}" for i in range(n)], "sequence": list(range(n)),
                     "intended_ns": [T0 + i * 10 * MS for i in range(n)],
                     "created_ns": [T0 + i * 10 * MS + MS for i in range(n)]})


def scored(i, out_ms_after_t0, **extra):
    """A ScoredBatch record as the collector reads it (its own copy of the stamps: the sent ones win)."""
    return {"batch_id": f"r-{i}", "status": "scored", "reason": "", "sequence": 999, "intended_ns": 1,
            "created_ns": 1, "output_append_ms": T0 // MS + out_ms_after_t0, "server": "", **extra}


def dead(i, out_ms_after_t0, reason="bad_shape"):
    return {"batch_id": f"r-{i}", "status": "dead_lettered", "reason": reason,
            "output_append_ms": T0 // MS + out_ms_after_t0}


def test_every_sent_batch_gets_one_row_and_its_sent_stamps():
    t = build_batches_table(sent_table(3), [scored(0, 6), scored(2, 27)])
    d = t.to_pydict()
    assert t.schema.names == list(COLUMNS)
    assert d["batch_id"] == ["r-0", "r-1", "r-2"] and d["status"] == ["scored", "missing", "scored"]
    assert d["sent"] == [True, True, True] and d["duplicates"] == [0, 0, 0]
    assert d["sequence"] == [0, 1, 2] and d["created_ns"][2] == T0 + 21 * MS and d["intended_ns"][2] == T0 + 20 * MS
    assert d["output_append_ms"] == [T0 // MS + 6, None, T0 // MS + 27]


def test_duplicates_keep_the_earliest_output_and_are_counted_apart():
    rows = [scored(0, 50), scored(0, 12), scored(0, 30), scored(1, 20)]
    t = build_batches_table(sent_table(2), rows)
    d = t.to_pydict()
    assert d["output_append_ms"] == [T0 // MS + 12, T0 // MS + 20] and d["duplicates"] == [2, 0]
    p = summarize_point(t, PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, warmup=Warmup(0)))
    assert p["accounting"]["duplicates"] == 2 and p["latency_ms"]["count"] == 2
    assert p["latency_ms"]["max"] == 11.0   # r-0: 12 − 1 ms, its first copy; r-1: 20 − 11 = 9 ms


def test_a_batch_scored_after_a_dead_letter_counts_as_scored_once():
    first, extra, anonymous = first_copies([dead(0, 5), scored(0, 9), dead(1, 3), dead(1, 4), dead(2, 8),
                                            scored(2, 2), {"batch_id": "", "status": "undecodable",
                                                           "output_append_ms": 1}])
    assert first["r-0"]["status"] == "scored" and extra["r-0"] == 0
    assert first["r-1"]["status"] == "dead_lettered" and first["r-1"]["output_append_ms"] == T0 // MS + 3
    assert extra["r-1"] == 1   # the second dead letter is a redelivered copy
    assert first["r-2"]["status"] == "scored" and extra["r-2"] == 0
    assert len(anonymous) == 1


def test_records_the_generator_did_not_send_are_kept_as_not_sent():
    rows = [scored(0, 5), scored(7, 9), scored(7, 10), {"batch_id": "", "status": "undecodable",
                                                        "reason": "not protobuf", "output_append_ms": T0 // MS}]
    t = build_batches_table(sent_table(1), rows)
    d = t.to_pydict()
    assert d["batch_id"] == ["r-0", "r-7", ""] and d["sent"] == [True, False, False]
    assert d["duplicates"] == [0, 1, 0] and d["status"] == ["scored", "scored", "undecodable"]
    acc = account(t)
    assert acc == {"sent": 1, "scored": 1, "dead_lettered": 0, "missing": 0, "duplicates": 0, "not_sent": 2, "unmatched": 0,
                   "checked": 0, "wrong": 0}
    nothing_sent = build_batches_table(None, rows)
    assert nothing_sent.column("sent").to_pylist() == [False, False, False]


def test_account_and_its_reasons():
    t = build_batches_table(sent_table(6), [scored(0, 5), scored(0, 6), dead(1, 7), dead(2, 7), scored(3, 8)])
    acc = account(t, {"checked": 5, "wrong": 2, "tolerance": 1e-4})
    assert acc == {"sent": 6, "scored": 2, "dead_lettered": 2, "missing": 2, "duplicates": 1, "not_sent": 0, "unmatched": 0,
                   "checked": 5, "wrong": 2}
    assert accounting_reasons(acc) == ["2 batch(es) missing", "2 batch(es) dead-lettered",
                                       "2 of 5 checked predictions differ from the reference model"]
    assert accounting_reasons({**acc, "missing": 0, "dead_lettered": 0, "wrong": 0}) == []


def test_stamp_hops_are_the_stamp_differences():
    # one batch: created 0, input append 2 ms, worker receive 3.5 ms, decode 0.1, score 1.2, encode 0.2,
    # worker send 5.25 ms, output append 7 ms
    base = {"sent": True, "status": "scored", "created_ns": T0, "input_append_ms": T0 // MS + 2,
            "worker_receive_ns": T0 + 3_500_000, "decode_ns": 100_000, "inference_ns": 1_200_000,
            "encode_ns": 200_000, "worker_send_ns": T0 + 5_250_000, "output_append_ms": T0 // MS + 7}
    other = {**base, "input_append_ms": T0 // MS + 4, "output_append_ms": T0 // MS + 9}
    ignored = {**base, "status": "dead_lettered", "input_append_ms": T0 // MS + 900}
    not_sent = {**base, "sent": False, "input_append_ms": T0 // MS + 900}
    hops = stamp_hops(pa.Table.from_pylist([base, other, ignored, not_sent]))
    assert hops["produce"] == {"p50": 3.0, "mean": 3.0}
    assert hops["wait"] == {"p50": 0.5, "mean": 0.5}          # 1.5 and −0.5 ms
    assert hops["decode"]["p50"] == 0.1 and hops["score"]["p50"] == 1.2 and hops["encode"]["p50"] == 0.2
    assert hops["publish"] == {"p50": 2.75, "mean": 2.75}     # 1.75 and 3.75 ms
    assert hops["e2e"] == {"p50": 8.0, "mean": 8.0}
    assert stamp_hops(pa.Table.from_pylist([ignored])) == {}


def test_repetitions_mean_and_sample_sd():
    pts = [{"params": {"rate": 10}, "throughput_bps": v, "latency_ms": {"p99": 2 * v, "mean": float("nan")},
            "measured": {"start_ns": 7, "count": 3}, "valid": True, "reasons": [], "timeline": {"counts": [1]}}
           for v in (1.0, 2.0, 6.0)]
    agg = aggregate_repetitions(pts)
    assert agg["throughput_bps"] == {"mean": 3.0, "sd": pytest.approx(math.sqrt(7.0)), "n": 3}
    assert agg["latency_ms"]["p99"] == {"mean": 6.0, "sd": pytest.approx(2 * math.sqrt(7.0)), "n": 3}
    assert agg["latency_ms"]["mean"]["n"] == 0 and math.isnan(agg["latency_ms"]["mean"]["mean"])
    assert "start_ns" not in agg["measured"] and "timeline" not in agg and agg["params"] == {"rate": 10}
    one = aggregate_repetitions(pts[:1])
    assert one["throughput_bps"]["mean"] == 1.0 and math.isnan(one["throughput_bps"]["sd"])
    none = aggregate_repetitions([{"params": {}, "x": None, "ok": True, "s": "a", "l": [1]}])
    assert set(none) == {"params", "x"} and none["x"]["n"] == 0   # bools, strings, lists are not statistics


def test_combine_repetitions_is_valid_and_sustainable_only_when_every_repetition_is():
    a = {"params": {"rate": 5}, "throughput_bps": 4.0, "valid": True, "reasons": [], "search_ok": True,
         "sustainable": {"ok": True, "reasons": []}, "recovery_s": [1.0]}
    b = {**a, "throughput_bps": 6.0, "valid": False, "reasons": ["kept records 3 < minimum 50"],
         "search_ok": False, "sustainable": {"ok": False, "reasons": ["output rate low"]}, "recovery_s": [None]}
    point = combine_repetitions([a, b])
    assert point["throughput_bps"] == 5.0 and point["sd"]["throughput_bps"] == pytest.approx(math.sqrt(2.0))
    assert point["repetitions"] == 2 and point["per_repetition"] == [a, b]
    assert not point["valid"] and point["reasons"] == ["kept records 3 < minimum 50"]
    assert point["search_ok"] is False and point["sustainable"] == {"ok": False, "reasons": ["output rate low"]}
    assert point["recovery_s"] == [[1.0], [None]]
    assert combine_repetitions([a, a])["valid"] and combine_repetitions([a, a])["search_ok"]
    assert combine_repetitions([a]) == {**a, "repetitions": 1}


def test_generator_report_shows_a_stall_in_lateness_not_in_the_achieved_rate():
    # 300 slots at 100/s; the sender stalls 500 ms before batch 150, then sends the backlog 0.1 ms
    # apart until it is back on schedule (batch 200 at 2.0 s is on time again)
    from services.analysis import send_report

    intended = [T0 + i * 10 * MS for i in range(300)]
    created = list(intended)
    for i in range(150, 300):
        created[i] = max(intended[i], T0 + 2000 * MS + (i - 150) * 100_000)
    r = send_report(intended, created, 100.0)
    assert r["sent"] == 300 and r["target_rate_bps"] == 100.0
    assert r["achieved_rate_bps"] == pytest.approx(100.0, rel=1e-12)   # first and last on time
    assert r["achieved_over_target"] == pytest.approx(1.0, rel=1e-12)
    assert r["lateness_ms"]["max"] == 500.0 and r["lateness_ms"]["p50"] == 0.0
    assert r["lateness_ms"]["count"] == 300
    # a stall before the last batch stretches the span: 299 intervals over 2.99 s + 1 s
    created[-1] += 1000 * MS
    assert send_report(intended, created, 100.0)["achieved_rate_bps"] == pytest.approx(299 / 3.99, rel=1e-12)
    closed = send_report(created, created, None)
    assert "achieved_over_target" not in closed and closed["lateness_ms"]["max"] == 0.0
    assert send_report([T0], [T0], 5.0)["achieved_rate_bps"] is None


def test_batch_table_types_are_fixed_whatever_the_values():
    t = build_batches_table(sent_table(2), [])   # every column but the sent ones all-null
    assert t.schema.types == list(COLUMNS.values())


def test_large_lateness_and_an_unknown_achieved_rate():
    from services.analysis import send_report

    r = send_report([T0, T0 + 10 * MS], [T0 + 10_000 * MS, T0 + 10 * MS], 100.0)
    assert r["lateness_ms"]["max"] == 10_000.0
    assert send_report([T0], [T0], 5.0)["achieved_over_target"] == 0.0   # one batch: no rate, none achieved


def test_repetitions_edge_cases():
    assert aggregate_repetitions([]) == {"params": {}}
    # a statistic one repetition lacks counts as missing there
    agg = aggregate_repetitions([{"params": {}, "a": 1.0, "b": 4.0}, {"params": {}, "a": 3.0}])
    assert agg["a"] == {"mean": 2.0, "sd": pytest.approx(math.sqrt(2.0)), "n": 2}
    assert agg["b"]["mean"] == 4.0 and agg["b"]["n"] == 1 and math.isnan(agg["b"]["sd"])
    # params come from the first repetition
    a = {"params": {"rate": 1}, "valid": True, "reasons": []}
    assert combine_repetitions([a, {**a, "params": {"rate": 2}}])["params"] == {"rate": 1}


# ---- outputs without ids (crayfish-json through a pipeline that drops the headers) -------------------

def echo_sent(keys):
    """sent.parquet of a crayfish-json run: batch r-i has echo key keys[i]."""
    n = len(keys)
    return sent_table(n).append_column("echo_key", pa.array(keys, type=pa.string()))


def idless(key, out_ms_after_t0, order=0):
    """An output that lost its headers: no batch id, no stamps but its echo (creationTimestamp ms)."""
    return {"batch_id": "", "status": "scored", "reason": "", "sequence": 0, "created_ns": 5 * MS,
            "intended_ns": 0, "output_append_ms": T0 // MS + out_ms_after_t0, "echo_key": key,
            "matched_by": "", "order": order}


def test_outputs_without_ids_are_matched_by_their_echo_key():
    t = build_batches_table(echo_sent(["k0", "k1", "k2"]), [idless("k2", 40), idless("k0", 20)])
    d = t.to_pydict()
    assert d["batch_id"] == ["r-0", "r-1", "r-2"] and d["status"] == ["scored", "missing", "scored"]
    assert d["matched_by"] == ["echo", None, "echo"] and d["sent"] == [True, True, True]
    # the sent stamps win over the echoed ms: latency r-0 = 20 − 1 ms, r-2 = 40 − 21 ms
    assert d["created_ns"] == [T0 + MS, T0 + 11 * MS, T0 + 21 * MS] and d["sequence"] == [0, 1, 2]
    assert account(t) == {"sent": 3, "scored": 2, "dead_lettered": 0, "missing": 1, "duplicates": 0,
                          "not_sent": 0, "unmatched": 0, "checked": 0, "wrong": 0}
    p = summarize_point(t, PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, warmup=Warmup(0)))
    assert p["latency_ms"]["count"] == 2 and p["latency_ms"]["max"] == 19.0 and p["latency_ms"]["p50"] == 19.0


def test_outputs_of_one_key_go_to_its_batches_in_order_and_extra_copies_are_duplicates():
    # r-1, r-2, r-3 share a key (same ms, same data); r-0 has its own
    sent = echo_sent(["a", "b", "b", "b"])
    rows = [idless("b", 30, 0), idless("b", 10, 1), idless("a", 50, 2), idless("b", 70, 3), idless("b", 90, 4),
            idless("b", 95, 5)]
    t = build_batches_table(sent, rows)
    d = t.to_pydict()
    # read order: the first "b" output goes to r-1, the second to r-2, the third to r-3; the two
    # more are copies of the key's first batch r-1 (whose earliest output, 30, is kept)
    assert d["output_append_ms"] == [T0 // MS + 50, T0 // MS + 30, T0 // MS + 10, T0 // MS + 70]
    assert d["duplicates"] == [0, 2, 0, 0] and d["status"] == ["scored"] * 4
    assert account(t)["duplicates"] == 2 and account(t)["unmatched"] == 0


def test_an_output_whose_key_matches_nothing_is_counted_unmatched_not_dropped():
    t = build_batches_table(echo_sent(["a", "b"]), [idless("a", 5), idless("zz", 6), idless("b", 7),
                                                    {"batch_id": "", "status": "undecodable", "reason": "x",
                                                     "output_append_ms": T0 // MS}])
    d = t.to_pydict()
    assert d["status"] == ["scored", "scored", "scored", "undecodable"]
    assert d["sent"] == [True, True, False, False] and d["echo_key"] == ["a", "b", "zz", None]
    acc = account(t)
    assert (acc["scored"], acc["missing"], acc["not_sent"], acc["unmatched"]) == (2, 0, 2, 1)
    assert accounting_reasons(acc) == ["1 output(s) without ids matched no sent batch"]
    assert accounting_reasons({**acc, "unmatched": 0}) == []


def test_outputs_with_ids_claim_their_batches_before_the_echo_is_matched():
    # r-0 and r-1 share key "b"; r-0's output kept its ids, so the id-less one is r-1's, although
    # the id-less output was read first
    t = build_batches_table(echo_sent(["b", "b"]), [idless("b", 9, 0), {**scored(0, 4), "matched_by": "ids"}])
    d = t.to_pydict()
    assert d["output_append_ms"] == [T0 // MS + 4, T0 // MS + 9] and d["matched_by"] == ["ids", "echo"]
    assert d["duplicates"] == [0, 0]


def test_an_output_already_matched_by_its_echo_keeps_its_batch():
    # the collector matched the first output to r-0 while it ran (batch id filled in, echo key kept);
    # building the table must not match it again: the second output is r-1's
    first = {**idless("b", 9, 0), "batch_id": "r-0", "sequence": 0, "matched_by": "echo", "offset": 11}
    t = build_batches_table(echo_sent(["b", "b"]), [first, {**idless("b", 12, 1), "offset": 12}])
    d = t.to_pydict()
    assert d["batch_id"] == ["r-0", "r-1"] and d["offset"] == [11, 12] and d["duplicates"] == [0, 0]


def test_latency_at_the_collector_is_in_milliseconds():
    t = pa.table({"sent": [True], "status": ["scored"], "duplicates": [0], "created_ns": [T0], "intended_ns": [T0],
                  "output_append_ms": [T0 // MS + 1235], "collector_receive_ns": [T0 + 1_234_567_800]})
    p = summarize_point(t, PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, warmup=Warmup(0)))
    assert p["latency_receive_ms"]["p50"] == pytest.approx(1234.5678, abs=2e-4)


def test_no_echo_key_in_sent_means_no_matching():
    rows = [idless("a", 5)]
    t = build_batches_table(sent_table(1), rows)
    assert t.column("status").to_pylist() == ["missing", "scored"] and account(t)["unmatched"] == 1
    assert match_echoes(None, rows) is rows and match_echoes(sent_table(1), rows) is rows
    assert rows[0]["batch_id"] == ""   # the caller's rows are not changed


def test_echo_matcher_claims_assigns_and_repeats_the_first_batch():
    m = EchoMatcher({"batch_id": ["x-0", "x-1", "x-2", "x-3"], "sequence": [0, 1, 2, 3],
                     "echo_key": ["k", "k", None, "k"]})
    m.claim("x-1")
    assert m.assign("k") == ("x-0", 0) and m.assign("k") == ("x-3", 3)
    assert m.assign("k") == ("x-0", 0)        # all claimed: a copy of the key's first batch
    assert m.assign("nope") is None and m.assign(None) is None and m.assign("") is None
    assert EchoMatcher(None).assign("k") is None
    row = {"batch_id": "", "echo_key": "q"}
    assert not resolve_echo(row, m) and row == {"batch_id": "", "echo_key": "q"}
    m2 = EchoMatcher(pa.table({"batch_id": ["y-0"], "sequence": [7], "echo_key": ["q"]}))
    assert resolve_echo(row, m2) and row == {"batch_id": "y-0", "echo_key": "q", "sequence": 7, "matched_by": "echo"}


# ---- absent stamps: hops that need them are absent, never differences from 0 -------------------------

def test_stamp_hops_with_absent_stamps_are_absent_and_e2e_stays():
    # an id-less crayfish-json output: no input append, no worker stamps or timers (0), but created
    # (from sent.parquet), output append 7 ms after it and the collector's receive 7.25 ms after it
    base = {"sent": True, "status": "scored", "created_ns": T0, "input_append_ms": 0, "worker_receive_ns": 0,
            "decode_ns": 0, "inference_ns": 0, "encode_ns": 0, "worker_send_ns": 0,
            "output_append_ms": T0 // MS + 7, "collector_receive_ns": T0 + 7_250_000}
    hops = stamp_hops(pa.Table.from_pylist([base, {**base, "output_append_ms": T0 // MS + 9,
                                                   "collector_receive_ns": T0 + 9_750_000}]))
    for hop in ("produce", "wait", "decode", "score", "encode", "publish"):
        assert hops[hop] == {"p50": None, "mean": None}, hop
    assert hops["e2e"] == {"p50": 8.0, "mean": 8.0} and hops["e2e_receive"] == {"p50": 8.5, "mean": 8.5}
    # nulls are absent too; one batch with a stamp gives the hop over that batch alone
    mixed = pa.Table.from_pylist([{**base, "input_append_ms": None, "collector_receive_ns": None},
                                  {**base, "input_append_ms": T0 // MS + 2, "worker_receive_ns": T0 + 3 * MS,
                                   "decode_ns": 100_000}])
    h = stamp_hops(mixed)
    assert h["produce"] == {"p50": 2.0, "mean": 2.0} and h["wait"] == {"p50": 1.0, "mean": 1.0}
    assert h["decode"] == {"p50": 0.1, "mean": 0.1} and h["score"]["p50"] is None
    assert h["e2e_receive"] == {"p50": 7.25, "mean": 7.25} and h["publish"]["mean"] is None
    # a table from before the collector's clock: e2e_receive absent, the rest as before
    old = pa.Table.from_pylist([{k: v for k, v in base.items() if k != "collector_receive_ns"}])
    assert stamp_hops(old)["e2e_receive"] == {"p50": None, "mean": None} and stamp_hops(old)["e2e"]["p50"] == 7.0


def test_latency_at_the_collector_is_receive_minus_created_over_kept_rows():
    n = 4
    t = pa.table({"sent": [True] * n, "status": ["scored"] * n, "duplicates": [0] * n,
                  "created_ns": [T0 + i * 10 * MS for i in range(n)], "intended_ns": [T0 + i * 10 * MS for i in range(n)],
                  "output_append_ms": [T0 // MS + i * 10 + 1 for i in range(n)],
                  # 0.3, 0.5, absent, 0.9 ms after creation
                  "collector_receive_ns": [T0 + 300_000, T0 + 10 * MS + 500_000, 0, T0 + 30 * MS + 900_000]})
    p = summarize_point(t, PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, warmup=Warmup(0)))
    r = p["latency_receive_ms"]
    assert r["count"] == 3 and r["max"] == 0.9 and r["mean"] == pytest.approx(0.5667, abs=1e-4)
    assert r["p50"] == 0.5 and p["latency_ms"]["p50"] == 1.0
    # warm-up rows are not kept: the first quarter (one row, the 0.3 ms one) leaves 0.5 and 0.9
    w = summarize_point(t, PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, warmup=Warmup(0.25)))
    assert w["latency_receive_ms"]["count"] == 2 and w["latency_receive_ms"]["p50"] == 0.5
    assert math.isnan(summarize_point(t.drop(["collector_receive_ns"]), PointRules(
        min_duration_s=0, min_count=0, rate_tolerance=0.02))["latency_receive_ms"]["p50"])
