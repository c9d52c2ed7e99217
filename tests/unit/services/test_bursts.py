"""Burst recovery (docs/results.md) on constructed latency traces, with the rule the runner uses:
one-sided, a 1 ms floor under the tolerance, the baseline never reaching into the previous burst."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from services.analysis import burst_recovery, burst_recovery_detail, point_bursts

ORIGIN_MS = 1_700_000_000_000
RULE = dict(window_s=1.0, hold_s=5.0, tolerance=0.10, baseline_s=10.0, abs_tolerance_ms=1.0, origin_ms=ORIGIN_MS)


def trace(pieces, rate=100):
    """Output times (ms, from ORIGIN_MS) and latencies of records at ``rate``/s over pieces of
    ``(seconds, latency_ms or (from_ms, to_ms))``: flat or a linear ramp."""
    t, lat, start = [], [], 0.0
    for seconds, level in pieces:
        ts = start + np.arange(0, seconds, 1 / rate)
        lo, hi = (level, level) if np.isscalar(level) else level
        lat.append(lo + (hi - lo) * (ts - start) / seconds)
        t.append(ts)
        start += seconds
    return ORIGIN_MS + np.concatenate(t) * 1000.0, np.concatenate(lat)


def test_recovery_time_of_a_linear_fall_back_to_the_baseline():
    # 60 s at 10 ms, a 30 s burst ramping to 100 ms, a 7 s fall back to 10 ms, then 10 ms. Window k after
    # the burst holds latency ≈ 100 − 90·(k + 0.5)/7: above the limit 11 ms for k ≤ 6, below from k = 7
    out, lat = trace([(60, 10.0), (30, (10.0, 100.0)), (7, (100.0, 10.0)), (30, 10.0)])
    det = burst_recovery_detail(out, lat, [(60.0, 90.0)], **RULE)
    assert det == [{"start_s": 60.0, "end_s": 90.0, "baseline_ms": 10.0, "recovery_s": 7.0, "reason": ""}]
    assert burst_recovery(out, lat, [(60.0, 90.0)], **RULE) == [7.0]


def test_recovery_is_one_sided_a_latency_below_the_baseline_is_recovered():
    # after the burst the latency settles at 5 ms, half the 10 ms baseline: recovered at once
    out, lat = trace([(20, 10.0), (10, 50.0), (20, 5.0)])
    assert burst_recovery(out, lat, [(20.0, 30.0)], **RULE) == [0.0]


def test_tolerance_is_relative_above_its_floor():
    # baseline 20 ms: the limit is 10 % = 2 ms (the 1 ms floor does not apply); 21.9 ms is within,
    # 22.1 ms is not (and never recovers)
    out, lat = trace([(20, 20.0), (10, 50.0), (20, 21.9)])
    assert burst_recovery(out, lat, [(20.0, 30.0)], **RULE) == [0.0]
    out, lat = trace([(20, 20.0), (10, 50.0), (20, 22.1)])
    det = burst_recovery_detail(out, lat, [(20.0, 30.0)], **RULE)
    assert det[0]["recovery_s"] is None
    assert det[0]["reason"] == ("latency median did not stay within 10% of the baseline 20.000 ms for 5 s "
                                "before the end of data")


def test_a_sub_millisecond_baseline_gets_the_1_ms_floor():
    # baseline 0.4 ms, after the burst 1.3 ms: 10 % of the baseline (0.04 ms) would never be met at
    # the broker's 1 ms resolution; the floor allows up to 1.4 ms, not 1.5 ms
    out, lat = trace([(20, 0.4), (10, 50.0), (20, 1.3)])
    assert burst_recovery(out, lat, [(20.0, 30.0)], **RULE) == [0.0]
    out, lat = trace([(20, 0.4), (10, 50.0), (20, 1.5)])
    assert burst_recovery(out, lat, [(20.0, 30.0)], **RULE) == [None]


def test_baseline_never_reaches_into_the_previous_burst():
    # bursts 20–30 s and 34–44 s; the 10 s before the second (24–34 s) hold 6 s of the first burst at
    # 100 ms and 4 s at 10 ms. The baseline is the 4 s after the first burst only: 10 ms, not 100 ms.
    out, lat = trace([(20, 10.0), (10, 100.0), (4, 10.0), (10, 100.0), (3, 60.0), (20, 10.0)])
    det = burst_recovery_detail(out, lat, [(20.0, 30.0), (34.0, 44.0)], **RULE)
    assert [d["baseline_ms"] for d in det] == [10.0, 10.0]
    # after the second burst: 3 s at 60 ms (not within 10 % of 10 ms), then 10 ms
    assert det[1]["recovery_s"] == 3.0
    # the first burst's hold (5 s) does not fit before the second starts: not recovered within the data
    assert det[0]["recovery_s"] is None and det[0]["reason"].endswith("before the next burst")


def test_baseline_window_length_and_no_data_cases():
    out, lat = trace([(20, 10.0), (10, 50.0), (20, 10.0)])
    # only 2 s of baseline: [18, 20) s; the 6 s before that were at 30 ms and must not count
    out2, lat2 = trace([(12, 10.0), (6, 30.0), (2, 10.0), (10, 50.0), (20, 10.0)])
    det = burst_recovery_detail(out2, lat2, [(20.0, 30.0)], **{**RULE, "baseline_s": 2.0})
    assert det[0]["baseline_ms"] == 10.0
    det = burst_recovery_detail(out2, lat2, [(20.0, 30.0)], **{**RULE, "baseline_s": 10.0})
    assert det[0]["baseline_ms"] == 30.0   # [10, 20) s: 6 s at 30 ms, 4 s at 10 ms
    assert burst_recovery_detail(out, lat, [(45.0, 49.5)], **RULE)[0]["reason"] == \
        "no complete window between the burst end and the data end / next burst"
    late, late_lat = out[out >= ORIGIN_MS + 20_000], lat[out >= ORIGIN_MS + 20_000]
    assert burst_recovery_detail(late, late_lat, [(20.0, 30.0)], **RULE)[0]["reason"] == \
        "no records in the 10 s before the burst (no baseline)"
    assert burst_recovery_detail([], [], [(1.0, 2.0)], **RULE) == [
        {"start_s": 1.0, "end_s": 2.0, "baseline_ms": None, "recovery_s": None, "reason": "no records"}]


def test_an_empty_window_is_not_evidence_of_recovery():
    # after the burst: 2 s of silence, then 10 ms. The empty windows are not good: recovery at 2 s
    out, lat = trace([(20, 10.0), (10, 50.0)])
    out3, lat3 = trace([(20, 10.0)])
    out = np.concatenate([out, out3 + 32_000])
    lat = np.concatenate([lat, lat3])
    assert burst_recovery(out, lat, [(20.0, 30.0)], **RULE) == [2.0]


def test_hold_and_step():
    # latency after the burst: 3 s at 10 ms, 1 s at 30 ms, then 10 ms; with a 5 s hold the spike
    # resets the count: recovered at 4 s. Half-second steps with 1 s windows: at 4.0 s as well
    out, lat = trace([(20, 10.0), (10, 50.0), (3, 10.0), (1, 30.0), (20, 10.0)])
    assert burst_recovery(out, lat, [(20.0, 30.0)], **RULE) == [4.0]
    assert burst_recovery(out, lat, [(20.0, 30.0)], **{**RULE, "step_s": 0.5}) == [4.0]
    # a 2 s hold fits between: 0
    assert burst_recovery(out, lat, [(20.0, 30.0)], **{**RULE, "hold_s": 2.0}) == [0.0]


def test_bad_rules_are_refused():
    out, lat = trace([(5, 1.0)])
    for bad in (dict(window_s=0), dict(hold_s=0.5), dict(tolerance=-1), dict(baseline_s=0), dict(step_s=0)):
        with pytest.raises(ValueError):
            burst_recovery_detail(out, lat, [(1.0, 2.0)], **{**RULE, **bad})
    with pytest.raises(ValueError):
        burst_recovery_detail(out, lat[:-1], [(1.0, 2.0)], **RULE)


def test_point_bursts_uses_every_scored_sent_batch_and_their_latency_from_creation():
    # the 7 s case as the collector's table, plus as many rows again that were not sent and as many
    # dead-lettered, and some scored rows without a creation stamp, all with absurd latencies: if any
    # of them entered a median, the baseline or the recovery would change
    out, lat = trace([(60, 10.0), (30, (10.0, 100.0)), (7, (100.0, 10.0)), (30, 10.0)])
    out_ms = np.floor(out).astype(np.int64)
    created = out_ms * 1_000_000 - np.rint(lat * 1e6).astype(np.int64)
    n = len(out_ms)
    junk = out_ms * 1_000_000 - 900_000_000
    table = pa.table({
        "status": ["scored"] * n + ["scored"] * n + ["dead_lettered"] * n + ["scored"] * 5000,
        "sent": [True] * n + [False] * n + [True] * n + [True] * 5000,
        "created_ns": pa.array(created.tolist() + junk.tolist() + junk.tolist() + [None] * 5000, pa.int64()),
        "output_append_ms": np.concatenate([out_ms, out_ms, out_ms, out_ms[:5000]])})
    rule = {k: v for k, v in RULE.items() if k != "origin_ms"}
    det = point_bursts(table, [(60.0, 90.0)], origin_ms=ORIGIN_MS, **rule)
    assert det[0]["recovery_s"] == 7.0 and det[0]["baseline_ms"] == pytest.approx(10.0, abs=1e-6)


def test_rule_bounds_are_inclusive_where_the_definition_says():
    out, lat = trace([(20, 10.0), (10, 50.0), (20, 10.0)])
    # hold = one window, tolerance 0, a half-second baseline: all allowed
    assert burst_recovery(out, lat, [(20.0, 30.0)], **{**RULE, "hold_s": 1.0, "tolerance": 0.0,
                                                          "baseline_s": 0.5}) == [0.0]
    # exactly at baseline + 10 % is within
    out, lat = trace([(20, 20.0), (10, 50.0), (20, 22.0)])
    assert burst_recovery(out, lat, [(20.0, 30.0)], **RULE) == [0.0]
    for bad, what in ((dict(window_s=0), "window_s > 0"), (dict(hold_s=0.5), "hold_s >= window_s"),
                      (dict(tolerance=-0.1), "tolerance >= 0"), (dict(baseline_s=0), "baseline_s > 0"),
                      (dict(step_s=0), "step_s > 0")):
        with pytest.raises(ValueError, match="^burst rule needs .*" + what):
            burst_recovery_detail(out, lat, [(1.0, 2.0)], **{**RULE, **bad})
    with pytest.raises(ValueError, match="^burst rule needs window_s > 0, hold_s >= window_s, tolerance >= 0, "
                                         "baseline_s > 0, step_s > 0$"):
        burst_recovery_detail(out, lat, [(1.0, 2.0)], **{**RULE, "window_s": 0, "hold_s": 1, "step_s": 1})
    with pytest.raises(ValueError, match="^output_append_ms and latency_ms differ in length$"):
        burst_recovery_detail(out, lat[:-1], [(1.0, 2.0)], **RULE)


def test_records_without_a_latency_are_ignored():
    # the baseline stretch also holds NaN latencies (no stamp): they must not enter any median
    out, lat = trace([(20, 10.0), (10, 50.0), (20, 10.0)])
    lat = lat.copy()
    lat[(out < ORIGIN_MS + 20_000) & (np.arange(len(lat)) % 2 == 0)] = np.nan
    det = burst_recovery_detail(out, lat, [(20.0, 30.0)], **RULE)
    assert det[0]["baseline_ms"] == 10.0 and det[0]["recovery_s"] == 0.0


def test_the_hold_must_fit_in_the_data_exactly():
    # after the burst: 4 s at 50 ms, then 10 ms until the data ends. Windows k = 4..8 are good.
    # Data ending at 39.0 s (the last record exactly there) leaves windows 0..8: a 5 s hold fits, at 4 s;
    # one record less (data ending at 38.99 s) leaves windows 0..7: it does not.
    out, lat = trace([(20, 10.0), (10, 50.0), (4, 50.0), (5, 10.0), (0.01, 10.0)])
    assert out[-1] == ORIGIN_MS + 39_000
    assert burst_recovery(out, lat, [(20.0, 30.0)], **RULE) == [4.0]
    assert burst_recovery(out[:-1], lat[:-1], [(20.0, 30.0)], **RULE) == [None]
    # the first window itself needs a complete second: data ending at 31.0 s has exactly one
    out, lat = trace([(20, 10.0), (10, 50.0), (1, 10.0), (0.01, 10.0)])
    assert burst_recovery(out, lat, [(20.0, 30.0)], **{**RULE, "hold_s": 1.0}) == [0.0]
    det = burst_recovery_detail(out[:-1], lat[:-1], [(20.0, 30.0)], **{**RULE, "hold_s": 1.0})
    assert det[0]["reason"] == "no complete window between the burst end and the data end / next burst"


def test_the_next_burst_ends_the_hold_even_when_it_does_not_disturb():
    # bursts 20–30 s and 33–40 s; the second one leaves the latency at 10 ms. The first burst's 5 s
    # hold cannot fit in the 3 s before the second starts: not recovered before the next burst
    out, lat = trace([(20, 10.0), (10, 50.0), (30, 10.0)])
    det = burst_recovery_detail(out, lat, [(20.0, 30.0), (33.0, 40.0)], **RULE)
    assert det[0]["recovery_s"] is None and det[0]["reason"].endswith("before the next burst")
    assert det[1]["recovery_s"] == 0.0 and det[1]["baseline_ms"] == 10.0
    # three bursts: the middle one is bounded by the third, not by the first
    det = burst_recovery_detail(out, lat, [(5.0, 6.0), (20.0, 30.0), (45.0, 50.0)], **RULE)
    assert [d["recovery_s"] for d in det] == [0.0, 0.0, 0.0]
    # data ending exactly where the next burst starts: "next burst" (the data end is not earlier)
    out, lat = trace([(20, 10.0), (10, 50.0), (3, 50.0), (0.01, 50.0)])
    det = burst_recovery_detail(out, lat, [(20.0, 30.0), (33.0, 40.0)], **RULE)
    assert det[0]["reason"].endswith("before the next burst")


def test_a_burst_without_baseline_or_window_does_not_stop_the_next():
    out, lat = trace([(20, 10.0), (10, 50.0), (20, 10.0)])
    late = out >= ORIGIN_MS + 6_000
    det = burst_recovery_detail(out[late], lat[late], [(5.0, 8.0), (20.0, 30.0)], **RULE)
    assert det[0]["reason"].endswith("(no baseline)") and det[1]["recovery_s"] == 0.0
    det = burst_recovery_detail(out, lat, [(14.0, 19.5), (20.0, 30.0)], **RULE)
    assert det[0]["reason"].startswith("no complete window") and det[1]["recovery_s"] == 0.0
