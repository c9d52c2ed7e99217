"""Every definition of docs/results.md on a constructed case with a hand-derived exact answer.

Pure functions only (no broker, no clock): the inputs are tables of stamps built here, and each
expected number is worked out in the comment beside it, not by calling the code under test.
`make mutate` runs this file (with tests/unit/services/test_accounting.py and tests/unit/crayfish/test_clock.py) against mutants
of services/analysis, the collector's batch table and the clock bound.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from services.analysis import (
    LATENCY_KEYS,
    PointResult,
    PointRules,
    Warmup,
    check_validity,
    input_rate,
    is_sustainable,
    lag_trend,
    latency_ms,
    latency_stats,
    output_rate_bps,
    point_result_from_summary,
    search_sustainable,
    split_warmup,
    summarize_point,
    throughput_bps,
    timeline,
    warmup_mask,
)
from services.analysis.columns import as_table, column, take

MS = 1_000_000
T0 = 1_700_000_000_000 * MS  # ns; a whole millisecond, so broker stamps below are exact
LOOSE = PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02)


def run_table(n=400, rate=100.0, latency=5, send_delay=0, **cols):
    """``n`` sent batches at ``rate``/s (slots exact in ns), each created ``send_delay`` ms after its
    slot and appended to the output ``latency`` ms after its creation (whole ms: no truncation)."""
    step = round(1e9 / rate)
    intended = T0 + np.arange(n, dtype=np.int64) * step
    created = intended + send_delay * MS
    data = {"batch_id": [f"b-{i}" for i in range(n)], "sent": np.ones(n, dtype=bool),
            "status": ["scored"] * n, "duplicates": np.zeros(n, dtype=np.int64),
            "intended_ns": intended, "created_ns": created,
            "output_append_ms": created // MS + np.broadcast_to(np.asarray(latency, dtype=np.int64), n)}
    data.update(cols)
    return pa.table(data)


def with_column(table, name, values):
    i = table.column_names.index(name)
    return table.set_column(i, name, pa.array(values, type=table.schema.field(name).type))


# ------------------------------------------------------------------ latency and its statistics


def test_latency_is_output_append_minus_created_in_exact_integer_ns():
    # 1 700 000 000 123 ms − (1 700 000 000 100 ms + 1 ns) = 22.999 999 ms; float64 ms would lose the ns
    assert latency_ms(np.array([1_700_000_000_123]), np.array([T0 + 100 * MS + 1]))[0] == 22.999999


def test_latency_stats_uniform_1_to_1000():
    s = latency_stats(np.arange(1, 1001, dtype=float))
    assert s["count"] == 1000 and s["mean"] == 500.5 and s["max"] == 1000.0
    # 3 significant digits: the top of the value's bucket. A bucket of [2^k, 2^(k+1)) µs is 2^(k−10) µs
    # wide: 500 000 µs lies in [2^18, 2^19), buckets of 256 µs -> 499 968 + 255 = 500 223 µs; the others
    # lie in [2^19, 2^20), buckets of 512 µs (900 095, 950 271, 990 207, 999 423 µs)
    assert (s["p50"], s["p90"], s["p95"], s["p99"], s["p999"]) == (500.223, 900.095, 950.271, 990.207, 999.423)


def test_latency_stats_microseconds_rounding_clamping_and_empty():
    s = latency_stats([0.0014, 0.0026, 0.003])          # -> 1, 3, 3 µs
    assert (s["p50"], s["max"], s["mean"], s["count"]) == (0.003, 0.003, 0.007 / 3, 3)
    s = latency_stats([-2.0, 4.0, float("nan"), float("inf")])  # NaN/inf ignored; -2 ms clamped to 0 for percentiles
    assert s["count"] == 2 and s["p50"] == 0.0 and s["mean"] == 1.0 and s["max"] == 4.0
    empty = latency_stats([])
    assert empty["count"] == 0 and all(math.isnan(empty[k]) for k in LATENCY_KEYS)


def test_no_percentile_exceeds_the_maximum():
    s = latency_stats([162.714, 1.0, 1.0])   # the bucket of 162.714 ms tops out at 162.815
    assert s["p999"] == s["max"] == 162.714


def test_latency_from_schedule_uses_the_slot_and_send_delay_is_the_gap():
    # slots 10 ms apart; each batch created 7 ms after its slot, output 5 ms after creation
    p = summarize_point(run_table(send_delay=7, latency=5), LOOSE, params={"rate": 100})
    assert p["params"] == {"rate": 100} and summarize_point(run_table(n=8), LOOSE)["params"] == {}
    assert p["latency_ms"]["p50"] == p["latency_ms"]["max"] == 5.0
    assert p["latency_from_schedule_ms"]["p50"] == p["latency_from_schedule_ms"]["max"] == 12.0
    assert p["send_delay_ms"]["p50"] == p["send_delay_ms"]["max"] == 7.0
    assert p["latency_from_schedule_ms"]["count"] == p["send_delay_ms"]["count"] == 300   # the kept rows


def test_latency_from_schedule_leaves_out_rows_without_a_slot():
    t = run_table(n=8, send_delay=2)
    t = with_column(t, "intended_ns", [0, 0, 0, 0] + column(t, "intended_ns")[0][4:].tolist())
    p = summarize_point(t, PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, warmup=Warmup(0)))
    assert p["latency_ms"]["count"] == 8 and p["latency_from_schedule_ms"]["count"] == 4
    assert p["latency_from_schedule_ms"]["mean"] == 7.0 and p["send_delay_ms"]["mean"] == 2.0


def test_closed_loop_latency_from_schedule_equals_latency():
    t = run_table(n=40, latency=3)
    t = with_column(t, "intended_ns", column(t, "created_ns")[0])
    p = summarize_point(t, LOOSE)
    assert p["latency_from_schedule_ms"] == p["latency_ms"] and p["send_delay_ms"]["max"] == 0.0


# ------------------------------------------------------------------ warm-up


def test_warmup_fraction_is_the_first_quarter_in_output_order():
    # outputs in reverse creation order: the warm-up is the last-created quarter
    t = run_table(n=100, latency=np.arange(100)[::-1] * 20)
    warm = warmup_mask(t, Warmup(0.25))
    assert warm.sum() == 25 and np.flatnonzero(warm).tolist() == list(range(75, 100))
    measured, warmup = split_warmup(t, Warmup(0.25))
    assert measured.num_rows == 75 and warmup.column("batch_id").to_pylist() == [f"b-{i}" for i in range(75, 100)]


def test_warmup_ties_keep_row_order_and_rows_without_output_come_last():
    t = pa.table({"created_ns": [5, 4, 3, 2, 1, 0, 9, 8], "output_append_ms": [7, 7, 7, None, 1, 7, None, 9]})
    # order by output: row4 (1), rows 0,1,2,5 (7, in row order), row7 (9), rows 3,6 (none)
    assert np.flatnonzero(warmup_mask(t, Warmup(0.5))).tolist() == [0, 1, 2, 4]
    assert np.flatnonzero(warmup_mask(t, Warmup(0.75))).tolist() == [0, 1, 2, 4, 5, 7]
    assert not warmup_mask(t, Warmup(0.0)).any() and not warmup_mask(t, Warmup(None)).any()
    assert warmup_mask(t, Warmup(0.124)).sum() == 0 and warmup_mask(t, Warmup(0.125)).sum() == 1   # floor(n·f)


def test_warmup_window_is_seconds_from_the_first_creation():
    t = run_table(n=100)   # created every 10 ms
    warm = warmup_mask(t, Warmup(fraction=0.9, window_s=0.2))   # the window wins over the fraction
    assert np.flatnonzero(warm).tolist() == list(range(20))   # the batch at exactly +200 ms is measured
    t = with_column(t, "created_ns", [None] * 10 + column(t, "created_ns")[0][10:].tolist())
    assert np.flatnonzero(warmup_mask(t, Warmup(window_s=0.2))).tolist() == list(range(10, 30))
    assert not warmup_mask(pa.table({"created_ns": pa.array([None, None], pa.int64())}), Warmup(window_s=1)).any()


def test_warmup_rules_are_checked():
    for bad in (dict(fraction=1.0), dict(fraction=-0.1), dict(window_s=-1.0)):
        with pytest.raises(ValueError):
            Warmup(**bad)
    assert Warmup(fraction=5.0, window_s=1.0).policy == "window"   # a fraction is ignored beside a window
    assert Warmup().as_dict() == {"policy": "fraction", "fraction": 0.25, "window_s": None}
    assert Warmup(window_s=2.0).as_dict() == {"policy": "window", "fraction": None, "window_s": 2.0}


def test_warmup_summary_of_a_point():
    # 100 batches; the first 25 (in output order too) take 30 ms, the others 35 ms
    t = run_table(n=100, latency=[30] * 25 + [35] * 75)
    p = summarize_point(t, LOOSE)
    w = p["warmup"]
    assert (w["policy"], w["fraction"], w["window_s"], w["count"], w["kept"]) == ("fraction", 0.25, None, 25, 25)
    assert w["latency_ms"]["mean"] == 30.0 and p["latency_ms"]["mean"] == 35.0
    # warm-up throughput: 25 / (last warm output 240 + 30 ms − first created 0) = 25 / 0.27 s
    assert w["throughput_bps"] == pytest.approx(25 / 0.27, rel=1e-12)


# ------------------------------------------------------------------ rates


def test_throughput_is_kept_records_over_first_created_to_last_output():
    created = T0 + np.array([0, 1000, 2000, 3000]) * MS
    out = np.array([0, 1000, 2000, 3500]) + T0 // MS
    assert throughput_bps(created, out) == 4 / 3.5
    assert math.isnan(throughput_bps([], [])) and math.isnan(throughput_bps([T0], [T0 // MS]))
    with pytest.raises(ValueError):
        throughput_bps([1, 2], [1])


def test_input_rate_counts_intervals_over_the_span():
    assert input_rate([0, 250 * MS, 500 * MS, 1000 * MS]) == 3.0
    assert math.isnan(input_rate([5])) and math.isnan(input_rate([7, 7]))


def test_output_rate_of_a_pipeline_that_keeps_up_is_the_offered_rate():
    # 100/s for 6 s at a steady 300 ms: 599 intervals over a 5.99 s creation span, no growth
    t = run_table(n=600, latency=300)
    c, o = column(t, "created_ns")[0], column(t, "output_append_ms")[0]
    assert output_rate_bps(c, o, c, o) == 100.0
    assert throughput_bps(c, o) == 600 / 6.29   # the paper's span holds one latency: under 0.98·r


def test_output_rate_subtracts_the_latency_growth_between_blocks():
    # 100 records 10 ms apart, latency i ms: blocks of 10 have medians 4.5, 14.5 … 94.5 ms;
    # growth 90 ms; 99 intervals over 0.99 s + 0.09 s
    c = T0 + np.arange(100, dtype=np.int64) * 10 * MS
    o = c // MS + np.arange(100)
    assert output_rate_bps(c, o, c, o) == pytest.approx(99 / 1.08, rel=1e-12)
    # the floor comes from every record of the point: a warm-up block at 0 ms makes the growth 94.5 ms
    wc = np.concatenate([c[:10] - 100 * 10 * MS, c])
    wo = np.concatenate([wc[:10] // MS, o])
    assert output_rate_bps(c, o, wc, wo) == pytest.approx(99 / 1.0845, rel=1e-12)
    # growth is highest minus lowest block, in whatever order: a latency falling from 99 to 0 ms (a
    # backlog built earlier, draining) reads the same as one rising
    o_falling = c // MS + np.arange(100)[::-1]
    assert output_rate_bps(c, o_falling, c, o_falling) == pytest.approx(99 / 1.08, rel=1e-12)
    assert math.isnan(output_rate_bps(c[:1], o[:1], c, o))


def test_output_rate_never_adds_a_negative_growth():
    # 20 kept records at 5 ms, interleaved in creation with 20 warm-up records at 100 ms: blocks of 2
    # over all records have medians 52.5 > the kept peak 5, a growth of −47.5 ms, counted as 0
    c = T0 + np.arange(20, dtype=np.int64) * 10 * MS
    o = c // MS + 5
    wc = np.sort(np.concatenate([c, c + 5 * MS]))
    wo = wc // MS + np.where(np.arange(40) % 2 == 0, 5, 100)
    assert output_rate_bps(c, o, wc, wo) == pytest.approx(100.0, rel=1e-12)


def test_output_rate_blocks_are_in_creation_order():
    # rows shuffled: the blocks follow creation, not row order, so the answer does not change
    c = T0 + np.arange(100, dtype=np.int64) * 10 * MS
    o = c // MS + np.arange(100)
    perm = np.random.default_rng(0).permutation(100)
    assert output_rate_bps(c[perm], o[perm], c[perm], o[perm]) == pytest.approx(99 / 1.08, rel=1e-12)


def test_timeline_counts_outputs_per_second_from_the_first():
    tl = timeline(np.array([1000, 1100, 1999, 2000, 2500, 4100]))
    assert tl == {"origin_ms": 1000, "bin_s": 1.0, "counts": [3, 2, 0, 1], "rate_per_s": [3.0, 2.0, 0.0, 1.0]}
    assert timeline(np.array([1000, 1499, 1500]), bin_s=0.5)["rate_per_s"] == [4.0, 2.0]
    assert timeline(np.array([], dtype=np.int64))["counts"] == []


# ------------------------------------------------------------------ validity


RULES = PointRules(min_duration_s=10, min_count=100, rate_tolerance=0.02)


@pytest.mark.parametrize("window, kept, achieved, reference, reasons", [
    (10.0, 100, 98.0, 100.0, []),                                    # every rule exactly at its bound
    (10.0, 100, 102.0, 100.0, []),
    (9.999, 100, 100.0, 100.0, ["measured window 9.999 s < minimum 10 s"]),
    (float("nan"), 100, 100.0, 100.0, ["measured window n/a s < minimum 10 s"]),
    (10.0, 99, 100.0, 100.0, ["kept records 99 < minimum 100"]),
    (10.0, 100, 97.99, 100.0, ["achieved input rate 97.990/s off target 100.000/s by more than 2%"]),
    (10.0, 100, 102.01, 100.0, ["achieved input rate 102.010/s off target 100.000/s by more than 2%"]),
    (10.0, 100, float("nan"), 100.0, ["achieved input rate unknown (target 100.000/s)"]),
    (10.0, 100, 50.0, None, []),                                     # no reference: not checked
])
def test_validity_rules_at_their_bounds(window, kept, achieved, reference, reasons):
    assert check_validity(RULES, window_s=window, kept=kept, achieved_rate=achieved,
                          reference_rate=reference) == reasons


def test_a_point_is_invalid_for_missing_dead_lettered_and_wrong_batches():
    t = run_table(n=12)
    t = with_column(t, "status", ["scored"] * 9 + ["missing", "dead_lettered", "dead_lettered"])
    p = summarize_point(t, LOOSE, predictions={"checked": 4, "wrong": 1})
    assert not p["valid"]
    assert p["reasons"] == ["1 batch(es) missing", "2 batch(es) dead-lettered",
                            "1 of 4 checked predictions differ from the reference model"]
    ok = summarize_point(run_table(n=12), LOOSE, predictions={"checked": 4, "wrong": 0})
    assert ok["valid"] and ok["reasons"] == []


def test_measured_window_and_input_rates_of_a_point():
    # 400 batches at 100/s, 5 ms each: the kept ones are 100..399 (output order = creation order)
    p = summarize_point(run_table(n=400, send_delay=1), LOOSE)
    m = p["measured"]
    assert (m["count"], m["rows"]) == (300, 300)
    assert m["start_ns"] == T0 + 1000 * MS + 1 * MS and m["end_ms"] == T0 // MS + 3990 + 1 + 5
    assert m["window_s"] == 2.995
    assert m["input_rate_bps"] == 100.0 and m["schedule_rate_bps"] == 100.0
    assert m["target_rate"] is None and m["reference_rate"] == 100.0   # the schedule's own rate
    p = summarize_point(run_table(n=400), PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02,
                                                       target_rate=103.0))
    assert p["measured"]["reference_rate"] == 103.0 and not p["valid"]
    assert p["reasons"] == ["achieved input rate 100.000/s off target 103.000/s by more than 2%"]


def test_achieved_input_rate_counts_every_sent_batch_whatever_its_status():
    t = with_column(run_table(n=100), "status", ["missing"] * 50 + ["scored"] * 50)
    assert summarize_point(t, LOOSE)["measured"]["input_rate_bps"] == 100.0


def test_a_point_without_kept_records():
    t = with_column(run_table(n=10), "status", ["missing"] * 10)
    p = summarize_point(t, RULES)
    assert p["measured"]["count"] == 0 and math.isnan(p["measured"]["window_s"]) and p["measured"]["start_ns"] is None
    assert p["reasons"][:2] == ["measured window n/a s < minimum 10 s", "kept records 0 < minimum 100"]
    assert math.isnan(p["throughput_bps"]) and p["timeline"]["counts"] == []


# ------------------------------------------------------------------ what counts


def test_not_sent_rows_are_counted_and_never_measured():
    t = run_table(n=8)
    foreign = pa.table({"batch_id": ["x"], "sent": [False], "status": ["scored"], "duplicates": [0],
                        "intended_ns": [T0], "created_ns": [T0], "output_append_ms": [T0 // MS + 9000]})
    p = summarize_point(pa.concat_tables([t, foreign.cast(t.schema)]), LOOSE)
    assert p["accounting"]["not_sent"] == 1 and p["accounting"]["sent"] == 8
    assert p["latency_ms"]["count"] == 6 and p["latency_ms"]["max"] == 5.0   # 8 minus 2 warm-up


def test_duplicates_are_counted_apart_and_the_batch_once_for_latency():
    t = with_column(run_table(n=8), "duplicates", [0, 2, 0, 0, 0, 0, 1, 0])
    p = summarize_point(t, LOOSE)
    assert p["accounting"]["duplicates"] == 3 and p["accounting"]["scored"] == 8
    assert p["latency_ms"]["count"] == 6


def test_accounting_of_a_point():
    t = run_table(n=10)
    t = with_column(t, "status", ["scored"] * 6 + ["dead_lettered", "missing", "missing", "scored"])
    t = with_column(t, "duplicates", [1, 0, 0, 0, 0, 0, 0, 0, 0, 2])
    t = with_column(t, "sent", [True] * 9 + [False])
    p = summarize_point(t, LOOSE, predictions={"checked": 3, "wrong": 0})
    assert p["accounting"] == {"sent": 9, "scored": 6, "dead_lettered": 1, "missing": 2, "duplicates": 1,
                               "not_sent": 1, "unmatched": 0, "checked": 3, "wrong": 0}
    assert summarize_point(t, LOOSE)["accounting"]["checked"] == 0


# ------------------------------------------------------------------ backlog and sustainability


def test_lag_slope_of_a_known_line():
    t = np.arange(10.0)
    up = lag_trend(np.c_[t, 3 + 2.5 * t], rate=100)
    assert (up.slope, up.stderr, up.tolerance, up.threshold, up.rising, up.n) == (2.5, 0.0, 1.0, 1.0, True, 10)
    # exactly at the tolerance (1 % of 100/s) is not rising; just above is
    assert not lag_trend(np.c_[t, 1.0 * t], rate=100).rising
    assert lag_trend(np.c_[t, 1.01 * t], rate=100).rising
    assert lag_trend(np.c_[t, 0.5 * t], rate=None, abs_tolerance=0.4).rising   # no rate: the absolute floor


def test_one_record_entering_the_pipeline_is_not_a_rising_backlog():
    # the backlog of a 20/s point with a 20 ms scorer, sampled every 0.5 s (a real run): one record
    # in flight from the sixth sample on. The fitted slope is significant (0.454/s > 2·se 0.307/s and
    # > 1 % of 20/s), but the rise over the window is 0.454 × 4 s = 1.8 records: not rising
    y = [0, 0, 0, 0, 0, 1, 1, 1, 1]
    t = np.arange(9) * 0.5
    tr = lag_trend(np.c_[t, y], rate=20)
    assert tr.slope > tr.threshold and tr.rise == pytest.approx(tr.slope * 4.0) and tr.rise < 2
    assert not tr.rising
    # the same slope held 10 s: a rise of 4.5 records is a backlog that grows
    assert lag_trend(np.c_[np.arange(21) * 0.5, np.floor(np.arange(21) * 0.5 * 0.45)], rate=20).rising
    # the floor can be set: exactly at it is not rising, just above is
    line = np.c_[np.arange(5.0), np.arange(5.0)]     # rise 4
    assert not lag_trend(line, min_rise=4.0).rising and lag_trend(line, min_rise=3.99).rising


def test_lag_slope_needs_significance_against_its_standard_error():
    # t = 0..3, y = 0 2 0 2: Sxx = 5, slope = 2/5 = 0.4; residuals −0.4 1.2 −1.2 0.4, SSR = 3.2,
    # se = sqrt(3.2 / 2 / 5) = sqrt(0.32); 2·se = 1.131 beats the 1 % tolerance (0.1 at 10/s)
    t = np.arange(4.0)
    tr = lag_trend(np.c_[t, [0.0, 2.0, 0.0, 2.0]], rate=10)
    assert tr.slope == pytest.approx(0.4, rel=1e-12) and tr.stderr == pytest.approx(math.sqrt(0.32), rel=1e-12)
    assert tr.threshold == 2 * tr.stderr and not tr.rising
    assert lag_trend(np.c_[t, [0.0, 3.0, 2.0, 5.0]], rate=10).rising   # + t: slope 1.4 > 1.131, same se
    few = lag_trend([(0, 1), (1, 100)], rate=10)
    assert few.slope == 99.0 and not few.rising and few.note == "fewer than 3 lag samples: not tested"
    flat_time = lag_trend([(5, 1), (5, 100), (5, 3)], rate=10)
    assert not flat_time.rising and flat_time.note.startswith("fewer than 2 distinct")
    assert lag_trend(np.zeros((0, 2))).n == 0
    with pytest.raises(ValueError):
        lag_trend([1, 2, 3])


def test_sustainable_at_the_98_percent_bound():
    assert is_sustainable(100, 98.0).ok
    low = is_sustainable(100, 97.99)
    assert not low.ok and low.reasons == ["output rate 97.990/s < 0.98 × target 100.000/s = 98.000/s"]
    assert is_sustainable(100, float("nan")).reasons == ["no output rate (no kept records)"]
    assert low.required_rate == 98.0 and low.output_rate == 97.99 and low.target_rate == 100.0
    assert is_sustainable(100, 98.0).skipped == ["lag trend (no lag samples)", "latency SLO (none given)"]


def test_sustainable_needs_a_flat_backlog_and_the_slo():
    t = np.arange(30.0)
    rising = is_sustainable(100, 100.0, lag_samples=np.c_[t, 20 * t])
    assert not rising.ok and rising.reasons[0].startswith("consumer lag rising: slope 20.000/s > threshold 1.000/s")
    assert is_sustainable(100, 100.0, lag_samples=np.c_[t, np.full(30, 500.0)]).ok
    assert is_sustainable(100, 100.0, latency={"p99": 20.0}, slo=("p99", 20)).ok
    over = is_sustainable(100, 100.0, latency={"p99": 20.001}, slo={"p99": 20})
    assert over.reasons == ["latency p99 20.001 ms > SLO 20 ms"]
    assert is_sustainable(100, 100.0, latency={}, slo={"p50": 5}).reasons == ["latency p50 unavailable for SLO 5 ms"]
    few = is_sustainable(100, 100.0, lag_samples=[(0, 1), (1, 2)])
    assert few.ok and few.skipped[0] == "lag trend (fewer than 3 lag samples: not tested)"


def test_only_backlog_samples_inside_the_measured_window_count():
    # measured window: 1.0 s .. 3.995 s after T0 (kept batches 100..399 at 100/s, 5 ms each). Outside
    # it the backlog climbs steeply; inside it is flat: not rising, and only the samples inside count.
    t = run_table(n=400)
    start = T0 / 1e9
    samples = [(start + s, 1000.0 * s if s < 1.0 or s > 3.995 else 50.0) for s in np.arange(0, 6, 0.5)]
    rules = PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, target_rate=100.0)
    p = summarize_point(t, rules, lag_samples=samples)
    assert p["lag"]["n"] == 6 and not p["lag"]["rising"] and p["sustainable"]["ok"]   # 1.0 … 3.5 s
    assert p["sustainable"]["lag"]["slope"] == 0.0
    rising = [(start + s, 1000.0 * s) for s in np.arange(0, 6, 0.5)]
    p = summarize_point(t, rules, lag_samples=rising)
    assert p["lag"]["rising"] and not p["sustainable"]["ok"]
    assert summarize_point(t, rules)["lag"] is None


def test_sustainability_judges_keeping_up_not_the_latency():
    # 100/s for 8 s, every batch 300 ms late: it keeps up; the paper's throughput reads 600/6.29 s
    rules = PointRules(min_duration_s=1, min_count=10, rate_tolerance=0.02, target_rate=100.0)
    p = summarize_point(run_table(n=800, latency=300), rules)
    assert p["throughput_bps"] == 600 / 6.29 and p["output_rate_bps"] == 100.0
    assert p["sustainable"]["ok"] and p["valid"] and p["sustainable"]["target_rate"] == 100.0


def test_sustainability_fails_a_pipeline_that_falls_behind():
    # fed at 100/s, emitting every 11.1 ms (90/s): the latency grows 1.1 ms per batch
    t = run_table(n=800)
    created = column(t, "created_ns")[0]
    t = with_column(t, "output_append_ms", (created[0] + 5 * MS + np.arange(800) * 11_111_111) // MS)
    rules = PointRules(min_duration_s=1, min_count=10, rate_tolerance=0.02, target_rate=100.0)
    p = summarize_point(t, rules)
    # latency of batch i: 5 + floor(1.111111·i) ms. Kept: 200..799 (blocks of 60), creation span 5.99 s.
    # Highest kept block 740..799, median of i = 769, 770: (859 + 860)/2; lowest block of all the
    # records 0..59, median of i = 29, 30: (37 + 38)/2. Growth 822 ms.
    assert p["output_rate_bps"] == pytest.approx(599 / 6.812, rel=1e-12)
    assert not p["sustainable"]["ok"] and p["sustainable"]["reasons"][0].startswith("output rate 87.933/s")


def test_sustainability_fails_a_backlog_drained_after_the_generator_stopped():
    # fed at 100/s for 8 s; out at 50/s while fed, then the rest in a burst at 1000/s
    t = run_table(n=800)
    first_ms = T0 // MS
    i = np.arange(800)
    out = np.where(i < 400, first_ms + i * 20, first_ms + 8000 + (i - 400))
    p = summarize_point(with_column(t, "output_append_ms", out), PointRules(
        min_duration_s=1, min_count=10, rate_tolerance=0.02, target_rate=100.0))
    assert p["output_rate_bps"] < 80 and not p["sustainable"]["ok"]


def test_sustainability_fails_a_backlog_built_during_the_warm_up():
    # nothing comes out for 5 s, then 200/s: every kept record is seconds late, latency only falls
    t = run_table(n=800)
    created_ms = column(t, "created_ns")[0] // MS
    out = np.maximum(created_ms + 5, created_ms[0] + 5000 + np.arange(800) * 5)
    p = summarize_point(with_column(t, "output_append_ms", out), PointRules(
        min_duration_s=1, min_count=10, rate_tolerance=0.02, target_rate=100.0))
    assert p["latency_ms"]["p50"] > 500 and not p["sustainable"]["ok"]


def test_slo_is_checked_on_latency_from_creation():
    rules = PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, target_rate=100.0, slo={"p99": 4.0})
    p = summarize_point(run_table(n=400, send_delay=50, latency=5), rules)
    assert p["slo"] == {"p99": 4.0} and p["sustainable"]["reasons"] == ["latency p99 5.000 ms > SLO 4 ms"]
    assert summarize_point(run_table(n=400), LOOSE)["sustainable"] is None


# ------------------------------------------------------------------ capacity search


def test_search_tries_the_rates_the_definition_gives():
    # ×2 from 100 until 1600 fails, then bisect until (hi − lo)/lo ≤ 5 %: 1200 ✓ 1400 ✗ 1300 ✗ 1250 ✗
    res = search_sustainable(lambda r: r <= 1234, 100, 100_000, precision=0.05, max_points=30)
    assert [p.rate for p in res.points] == [100, 200, 400, 800, 1600, 1200, 1400, 1300, 1250]
    assert [p.phase for p in res.points] == ["grow"] * 5 + ["bisect"] * 4
    assert (res.sustainable_rate, res.upper, res.status) == (1200, 1250, "converged")
    d = res.as_dict()
    assert d["sustainable_rate"] == 1200 and d["points"][4] == {"rate": 1600, "sustainable": False,
                                                              "phase": "grow", "reasons": []}


@pytest.mark.parametrize("capacity", [3.3, 37.0, 50.0, 777.0, 1234.0, 40_000.0])
@pytest.mark.parametrize("precision", [0.15, 0.05, 0.01])
def test_search_finds_capacity_within_its_precision(capacity, precision):
    res = search_sustainable(lambda r: r <= capacity, 20, 100_000, precision=precision, max_points=60)
    assert res.status == "converged"
    assert res.sustainable_rate <= capacity < res.upper
    assert (res.upper - res.sustainable_rate) / res.sustainable_rate <= precision


def test_search_shrinks_when_the_start_rate_fails():
    res = search_sustainable(lambda r: r <= 30, 100, 1000, precision=0.05, max_points=30)
    assert [p.rate for p in res.points] == [100, 50, 25, 37.5, 31.25, 28.125, 29.6875, 30.46875]
    assert [p.phase for p in res.points][:3] == ["grow", "shrink", "shrink"]
    assert (res.sustainable_rate, res.upper) == (29.6875, 30.46875)


def test_search_limits():
    res = search_sustainable(lambda r: True, 100, 1000, precision=0.05, max_points=30)
    assert [p.rate for p in res.points] == [100, 200, 400, 800, 1000] and res.status == "max_rate"
    assert (res.sustainable_rate, res.upper) == (1000, None)
    res = search_sustainable(lambda r: r <= 1234, 100, 1e6, precision=0.05, max_points=6)
    assert res.status == "max_points" and len(res.points) == 6 and (res.sustainable_rate, res.upper) == (1200, 1600)
    assert res.precision == 0.05
    res = search_sustainable(lambda r: True, 100, 1e6, precision=0.05, max_points=3)
    assert res.status == "max_points" and (res.sustainable_rate, res.upper) == (400, None)
    res = search_sustainable(lambda r: False, 100, 1000, precision=0.05, max_points=30, min_rate=10)
    assert res.status == "none_sustainable" and [p.rate for p in res.points] == [100, 50, 25, 12.5]
    assert res.sustainable_rate is None and res.upper == 12.5
    res = search_sustainable(lambda r: False, 100, 1000, precision=0.05, max_points=2)
    assert res.status == "max_points" and res.sustainable_rate is None
    # default floor: start / 1024
    res = search_sustainable(lambda r: False, 1024, 10_000, precision=0.05, max_points=30)
    assert res.points[-1].rate == 1.0 and res.status == "none_sustainable"
    for bad in (dict(start_rate=0), dict(max_rate=0), dict(precision=0), dict(max_points=0), dict(growth=1.0)):
        args = {"start_rate": 10, "max_rate": 100, "precision": 0.1, "max_points": 5, **bad}
        with pytest.raises(ValueError):
            search_sustainable(lambda r: True, **args)


def test_search_accepts_bools_results_and_point_summaries():
    seen = []

    def evaluate(rate):
        seen.append(rate)
        if rate == 100:
            return PointResult(True, [])
        if rate == 200:
            return {"sustainable": {"ok": True, "reasons": []}, "valid": True}
        return np.bool_(False)

    res = search_sustainable(evaluate, 100, 1000, precision=0.5, max_points=5)
    assert (res.sustainable_rate, res.upper) == (200, 300) and seen == [100, 200, 400, 300]
    with pytest.raises(TypeError):
        search_sustainable(lambda r: "yes", 100, 1000, precision=0.5, max_points=5)


def test_point_result_from_summary():
    good = {"sustainable": {"ok": True, "reasons": []}, "valid": True}
    assert point_result_from_summary(good).sustainable
    invalid = point_result_from_summary({"sustainable": {"ok": True, "reasons": []}, "valid": False,
                                         "reasons": ["kept records 3 < minimum 50"]})
    assert not invalid.sustainable and invalid.reasons == ["invalid: kept records 3 < minimum 50"]
    lenient = point_result_from_summary({"sustainable": {"ok": True, "reasons": []}, "valid": False,
                                         "reasons": ["x"]}, require_valid=False)
    assert lenient.sustainable is True and lenient.reasons == []
    slow = point_result_from_summary({"sustainable": {"ok": False, "reasons": ["output rate low"]}, "valid": True})
    assert not slow.sustainable and slow.reasons == ["output rate low"]
    none = point_result_from_summary({"valid": True})
    assert not none.sustainable and none.reasons == ["no sustainability verdict (summarize_point needs target_rate)"]


# ------------------------------------------------------------------ table access


def test_column_values_and_validity():
    t = pa.table({"i": pa.array([1, None, 3], pa.int32()), "f": [1.5, float("nan"), None],
                  "s": ["a", None, "c"], "b": [True, None, False]})
    v, ok = column(t, "i")
    assert v.tolist() == [1, 0, 3] and v.dtype == np.int64 and ok.tolist() == [True, False, True]
    v, ok = column(t, "f")
    assert v.tolist() == [1.5, 0.0, 0.0] and ok.tolist() == [True, False, False]
    v, ok = column(t, "s")
    assert v.tolist() == ["a", "", "c"] and ok.tolist() == [True, False, True]
    v, ok = column(t, "b")
    assert v.tolist() == [True, False, False] and ok.tolist() == [True, False, True]
    v, ok = column(t, "missing", default=7)
    assert v.tolist() == [7, 7, 7] and ok.all()
    with pytest.raises(KeyError):
        column(t, "missing")
    with pytest.raises(TypeError):
        column(pa.table({"d": pa.array([1.0]).cast(pa.decimal128(5, 2))}), "d")
    assert take(t, np.array([True, False, True])).column("i").to_pylist() == [1, 3]
    assert as_table({"x": [1, 2]}).num_rows == 2 and as_table(t) is t


# ------------------------------------------------------------------ edges each definition names


def test_latencies_beyond_an_hour_are_clamped_into_the_histogram_not_dropped():
    s = latency_stats([7_200_000.0, 7_200_000.0])   # two hours
    assert s["max"] == 7_200_000.0 and 3_600_000.0 <= s["p50"] <= 3_600_000.0 * 1.001


def test_large_send_delays_and_windows_keep_their_units():
    # a 10 s send delay: 10 000.000 ms, not a hair less
    p = summarize_point(run_table(n=40, send_delay=10_000), LOOSE)
    assert p["send_delay_ms"]["max"] == 10_000.0 and p["latency_from_schedule_ms"]["max"] == 10_005.0
    # a 10 s warm-up window over batches 1 s apart: the batch at exactly +10 s is measured
    t = run_table(n=20, rate=1.0)
    assert np.flatnonzero(warmup_mask(t, Warmup(window_s=10.0))).tolist() == list(range(10))
    assert not warmup_mask(t, Warmup(window_s=0.0)).any()   # a zero window is allowed: no warm-up


def test_warmup_ties_among_many_rows_keep_row_order():
    # 1000 rows, 10 output stamps of 100 rows each, in descending row blocks: the first 250 in output
    # order are the 200 rows of the two earliest stamps and the first 50 rows of the third
    out = np.repeat(np.arange(10, dtype=np.int64), 100)[::-1] + T0 // MS
    t = pa.table({"created_ns": np.full(1000, T0), "output_append_ms": out})
    expected = list(range(700, 750)) + list(range(800, 1000))
    assert np.flatnonzero(warmup_mask(t, Warmup(0.25))).tolist() == expected


def test_rate_edges():
    assert input_rate([0, 250 * MS]) == 4.0 and input_rate([0, 1]) == pytest.approx(1e9)   # two stamps; 1 ns
    # throughput over a 1 ns span (created 1 ns before the output ms)
    assert throughput_bps([T0 - 1], [T0 // MS]) == pytest.approx(1e9)
    # output rate of two records; of two created at once with no growth (no span: NaN); a 1 ns span
    assert output_rate_bps([T0, T0 + 500 * MS], [T0 // MS + 2, T0 // MS + 502],
                           [T0, T0 + 500 * MS], [T0 // MS + 2, T0 // MS + 502]) == 2.0
    assert math.isnan(output_rate_bps([T0, T0], [T0 // MS + 2] * 2, [T0, T0], [T0 // MS + 2] * 2))
    # created 1 ns apart, no growth (the floor from all records is as high): a 1 ns span
    assert output_rate_bps([T0, T0 + 1], [T0 // MS + 2] * 2, [T0 - 10 * MS], [T0 // MS - 8]) == pytest.approx(1e9)
    # created 1 ns apart, output in the same ms: a 1 ns span plus a 1 ns latency difference
    assert output_rate_bps([T0, T0 + 1], [T0 // MS + 2] * 2, [T0, T0 + 1], [T0 // MS + 2] * 2) == pytest.approx(5e8)
    with pytest.raises(ValueError, match="^created_ns and output_append_ms differ in length$"):
        throughput_bps([1, 2], [1])


def test_output_rate_blocks_hold_at_least_one_record():
    # 5 records (blocks of max(1, 0.5) = 1): latencies 0 10 0 10 0 ms -> growth 10 ms; 4 intervals
    # over 0.04 s + 0.01 s
    c = T0 + np.arange(5, dtype=np.int64) * 10 * MS
    o = c // MS + np.array([0, 10, 0, 10, 0])
    assert output_rate_bps(c, o, c, o) == pytest.approx(4 / 0.05, rel=1e-12)


def test_timeline_of_nothing():
    assert timeline(np.array([], dtype=np.int64), bin_s=2.0) == {"origin_ms": None, "bin_s": 2.0, "counts": [],
                                                                "rate_per_s": []}


def test_lag_trend_edges_and_its_record():
    t = np.arange(10.0)
    assert lag_trend(np.c_[t, 0.5 * t]).rising            # no rate, no floor: any significant rise
    assert not lag_trend(np.c_[t, 0.5 * t], abs_tolerance=0.5).rising
    three = lag_trend([(0, 0), (1, 5), (2, 10)], rate=100)   # three samples are enough to test
    assert three.rising and three.note == ""
    assert lag_trend([]).n == 0 and lag_trend([]).note.startswith("fewer than 2")
    none = lag_trend([(1, 4)])
    assert all(math.isnan(x) for x in (none.slope, none.stderr, none.threshold)) and none.tolerance == 0.0
    assert none.rising is False and none.n == 1
    two = lag_trend([(0, 1), (1, 100)], rate=10)
    assert math.isnan(two.stderr) and math.isnan(two.threshold) and two.tolerance == 0.1 and two.n == 2
    assert two.rising is False
    assert lag_trend(np.c_[t, 3 + 2.5 * t], rate=100).as_dict() == {
        "slope": 2.5, "stderr": 0.0, "tolerance": 1.0, "threshold": 1.0, "rise": 22.5, "rising": True, "n": 10,
        "note": ""}
    with pytest.raises(ValueError, match=r"^lag samples must be a sequence of \(t_s, lag\) pairs$"):
        lag_trend([1, 2, 3])


def test_sustainability_record_and_its_inputs():
    t = np.arange(10.0)
    v = is_sustainable(10, 9.9, lag_samples=np.c_[t, 0.5 * t], latency={"p99": 3.0}, slo={"p99": 5})
    assert v.as_dict() == {"ok": False, "reasons": [
        "consumer lag rising: slope 0.500/s > threshold 0.100/s (2·se 0.000, tolerance 0.100), "
        "4.5 records over the window"],
        "target_rate": 10.0, "output_rate": 9.9, "required_rate": 9.8,
        "lag": lag_trend(np.c_[t, 0.5 * t], rate=10).as_dict(), "skipped": []}
    # the tolerances can be set: half the rate per second is not "rising" then; an absolute floor too
    assert is_sustainable(10, 9.9, lag_samples=np.c_[t, 0.5 * t], lag_rel_tolerance=0.05).ok
    assert is_sustainable(10, 9.9, lag_samples=np.c_[t, 0.5 * t], lag_abs_tolerance=0.5).ok
    assert not is_sustainable(10, 9.9, lag_samples=np.c_[t, 0.5 * t]).ok
    one = is_sustainable(10, 10.0, lag_samples=[(0.0, 5.0)])
    assert one.ok and one.skipped[0] == "lag trend (fewer than 2 distinct lag sample times: not tested)"
    noisy = is_sustainable(10, 10.0, lag_samples=np.c_[np.arange(4.0), [0.0, 3.0, 2.0, 5.0]])
    assert noisy.reasons == ["consumer lag rising: slope 1.400/s > threshold 1.131/s (2·se 1.131, tolerance 0.100), "
                             "4.2 records over the window"]
    missing = is_sustainable(10, None)
    assert missing.reasons == ["no output rate (no kept records)"] and math.isnan(missing.output_rate)
    assert is_sustainable(10, 10.0).as_dict()["lag"] is None


def test_slo_forms():
    from services.analysis.sustain import normalize_slo

    assert normalize_slo(None) == {} and normalize_slo({"p99": 5}) == {"p99": 5.0}
    assert normalize_slo(("p99", 5)) == {"p99": 5.0} and normalize_slo(["p50", "2"]) == {"p50": 2.0}
    for bad in (("p99",), (5, 7), "p99", 5):
        with pytest.raises(TypeError, match="SLO must be a mapping or a \\(stat, limit_ms\\) pair, not"):
            normalize_slo(bad)


def test_point_lag_uses_the_target_rate_and_the_window_edges():
    rules = PointRules(min_duration_s=0, min_count=0, rate_tolerance=0.02, target_rate=100.0)
    t = run_table(n=400)
    start, end = T0 / 1e9 + 1.0, T0 / 1e9 + 3.995   # the measured window's two ends, included
    p = summarize_point(t, rules, lag_samples=np.array([(start, 0.0), (2.5 + T0 / 1e9, 1.0), (end, 2.0)]))
    assert p["lag"]["n"] == 3 and p["lag"]["tolerance"] == 1.0
    assert summarize_point(t, rules, lag_samples=np.array([(start, 0.0)]))["lag"]["n"] == 1
    # no kept record: no sample counts
    t = with_column(run_table(n=10), "status", ["missing"] * 10)
    p = summarize_point(t, rules, lag_samples=np.array([(T0 / 1e9, 5.0), (T0 / 1e9 + 1, 9.0)]))
    assert p["lag"]["n"] == 0


def test_without_slots_there_is_no_schedule_rate():
    t = with_column(run_table(n=40), "intended_ns", [0] * 40)
    m = summarize_point(t, LOOSE)["measured"]
    assert m["reference_rate"] is None and math.isnan(m["schedule_rate_bps"])


def test_search_records_and_bounds():
    res = search_sustainable(lambda r: r <= 300, 100, 1000, precision=0.25, max_points=30)
    # 100 ✓ 200 ✓ 400 ✗ 300 ✓ 350 ✗: (350 − 300)/300 ≤ 25 %
    assert [p.sustainable for p in res.points] == [True, True, False, True, False] and res.precision == 0.25
    d = res.as_dict()
    assert {k: d[k] for k in ("sustainable_rate", "upper", "status", "precision")} == {
        "sustainable_rate": 300, "upper": 350, "status": "converged", "precision": 0.25}
    for kwargs in (dict(max_points=3), dict(max_points=1)):
        r = search_sustainable(lambda r: True, 100, 1e6, precision=0.1, **kwargs)
        assert r.precision == 0.1 and len(r.points) == kwargs["max_points"]
    assert search_sustainable(lambda r: True, 100, 100, precision=0.1, max_points=9).precision == 0.1
    low = search_sustainable(lambda r: False, 100, 1000, precision=0.1, max_points=9, min_rate=60)
    assert low.precision == 0.1 and low.status == "none_sustainable"
    # small rates and a single point are legal
    assert search_sustainable(lambda r: True, 0.5, 0.5, precision=0.1, max_points=1).sustainable_rate == 0.5
    # the budget runs out exactly as the floor is passed: nothing left to try, none sustainable
    r = search_sustainable(lambda r: False, 100, 1000, precision=0.1, max_points=4, min_rate=10)
    assert [p.rate for p in r.points] == [100, 50, 25, 12.5] and r.status == "none_sustainable"
    # the budget runs out at a rate still on the floor: the search was cut short
    r = search_sustainable(lambda r: False, 100, 1000, precision=0.1, max_points=3, min_rate=12.5)
    assert r.status == "max_points"
    # the default floor is start / 1024: with growth 1024.5 the second rate lies just under it
    r = search_sustainable(lambda r: False, 1024.5, 2000, precision=0.1, max_points=9, growth=1024.5)
    assert [p.rate for p in r.points] == [1024.5]
    with pytest.raises(ValueError, match="^need start_rate, max_rate, precision > 0, growth > 1, max_points >= 1$"):
        search_sustainable(lambda r: True, 0, 10, precision=0.1, max_points=3)
    with pytest.raises(TypeError, match="evaluate\\(\\) must return PointResult, bool or a point dict, not str"):
        search_sustainable(lambda r: "yes", 100, 1000, precision=0.5, max_points=5)


def test_point_result_keeps_the_point():
    point = {"sustainable": {"ok": False, "reasons": []}, "valid": True, "x": 1}
    r = point_result_from_summary(point)
    assert r.point == point and r.sustainable is False
    assert point_result_from_summary({"valid": True}).sustainable is False
    assert point_result_from_summary({"sustainable": {"ok": True, "reasons": []}, "valid": False,
                                      "reasons": []}).sustainable is False


def test_column_edges():
    t = pa.table({"i": [1, 2]})
    v, ok = column(t, "missing", default=False)
    assert ok.dtype == bool and v.tolist() == [False, False]
    with pytest.raises(KeyError, match="column 'missing' missing"):
        column(t, "missing")
    with pytest.raises(TypeError, match="column 'd' has type decimal128"):
        column(pa.table({"d": pa.array([1.0]).cast(pa.decimal128(5, 2))}), "d")
    with pytest.raises(ValueError, match="^warm-up window_s must be >= 0$"):
        Warmup(window_s=-1)
    with pytest.raises(ValueError, match=r"^warm-up fraction must be in \[0, 1\)$"):
        Warmup(fraction=1)
