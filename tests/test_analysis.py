"""Analysis functions on constructed data (pure, no Kafka, no timing asserts)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from services.analysis import (
    PointResult,
    aggregate_repetitions,
    burst_recovery,
    burst_recovery_detail,
    check_validity,
    is_sustainable,
    lag_trend,
    latency_stats,
    output_rate_bps,
    point_result_from_summary,
    search_sustainable,
    split_warmup,
    summarize_point,
    throughput_bps,
    timeline,
)

T0 = 1_700_000_000_000_000_000  # ns, a realistic wall clock
HDR_REL = 1e-3  # 3 significant digits


# ---------------------------------------------------------------- latency stats


def test_latency_stats_uniform_1_to_1000():
    s = latency_stats(np.arange(1, 1001, dtype=float))
    assert s["count"] == 1000
    assert s["mean"] == 500.5  # exact
    assert s["max"] == 1000.0
    for key, true in [("p50", 500), ("p90", 900), ("p95", 950), ("p99", 990), ("p999", 999)]:
        assert s[key] == pytest.approx(true, rel=HDR_REL), key
        assert s[key] >= true  # HDR reports the bucket's highest equivalent value


def test_latency_stats_microsecond_resolution_and_edge_cases():
    s = latency_stats([0.001, 0.002, 0.003])
    assert s["p50"] == pytest.approx(0.002) and s["max"] == pytest.approx(0.003)
    empty = latency_stats([])
    assert empty["count"] == 0 and math.isnan(empty["p99"]) and math.isnan(empty["mean"])
    s = latency_stats([1.0, float("nan"), 2.0])
    assert s["count"] == 2
    s = latency_stats([5.0] * 10)
    assert all(s[k] == pytest.approx(5.0, rel=HDR_REL) for k in ("p50", "p99", "p999", "max", "mean"))


# ---------------------------------------------------------------- warm-up


def _arrays(n=100):
    created = T0 + np.arange(n, dtype=np.int64) * 10_000_000  # 100/s
    out = (created + 5_000_000) // 1_000_000  # 5 ms latency
    return {"batch_id": np.arange(n), "created_ns": created, "output_append_ms": out}


def test_split_warmup_fraction_default_25_percent():
    d = _arrays(100)
    measured, warm = split_warmup(d)
    assert len(warm["created_ns"]) == 25 and len(measured["created_ns"]) == 75
    np.testing.assert_array_equal(warm["batch_id"], np.arange(25))
    # output order, not row order: shuffle rows, the earliest outputs are still warm-up
    perm = np.random.default_rng(0).permutation(100)
    shuffled = {k: v[perm] for k, v in d.items()}
    _, warm2 = split_warmup(shuffled)
    assert sorted(warm2["batch_id"].tolist()) == list(range(25))


def test_split_warmup_table_and_window():
    t = pa.table(_arrays(100))
    measured, warm = split_warmup(t, fraction=0.1)
    assert isinstance(measured, pa.Table) and warm.num_rows == 10 and measured.num_rows == 90
    measured, warm = split_warmup(t, window_s=0.2)  # 0.2 s of 10 ms spacing = 20 rows
    assert warm.num_rows == 20
    assert warm.column("batch_id").to_pylist() == list(range(20))
    measured, warm = split_warmup(t, fraction=0)
    assert warm.num_rows == 0 and measured.num_rows == 100


# ---------------------------------------------------------------- throughput / timeline


def test_throughput_paper_formula():
    created = np.array([0, 1, 2, 3], dtype=np.int64) * 1_000_000_000 + T0
    out = (created[[0, 1, 2, 3]] + 1_000_000_000) // 1_000_000  # last output at 4 s after first created
    assert throughput_bps(created, out) == pytest.approx(4 / 4.0)
    assert math.isnan(throughput_bps([], []))


def test_timeline_counts_per_second():
    out = np.array([1000, 1100, 1999, 2000, 2500, 4100], dtype=np.int64)
    tl = timeline(out)
    assert tl["origin_ms"] == 1000 and tl["counts"] == [3, 2, 0, 1]
    assert sum(tl["counts"]) == len(out)
    assert timeline([], 1.0)["counts"] == []


# ---------------------------------------------------------------- repetitions


def test_aggregate_mean_sd():
    pts = [{"params": {"rate": 10}, "throughput_bps": v, "latency_ms": {"p99": 2 * v, "mean": float("nan")},
            "valid": True, "reasons": []} for v in (1.0, 2.0, 3.0)]
    agg = aggregate_repetitions(pts)
    assert agg["throughput_bps"]["mean"] == pytest.approx(2.0)
    assert agg["throughput_bps"]["sd"] == pytest.approx(1.0)  # sample sd
    assert agg["latency_ms"]["p99"] == {"mean": pytest.approx(4.0), "sd": pytest.approx(2.0), "n": 3}
    assert agg["latency_ms"]["mean"]["n"] == 0 and math.isnan(agg["latency_ms"]["mean"]["mean"])
    assert agg["params"] == {"rate": 10} and agg["repetitions"] == 3 and agg["valid"]
    one = aggregate_repetitions(pts[:1])
    assert one["throughput_bps"]["mean"] == 1.0 and math.isnan(one["throughput_bps"]["sd"])


# ---------------------------------------------------------------- lag trend / sustainability


def test_lag_slope_rising_vs_flat():
    t = np.arange(60.0)
    rng = np.random.default_rng(1)
    rising = lag_trend(np.c_[t, 100 + 50 * t + rng.normal(0, 5, 60)], rate=1000)  # +50/s > 1% of 1000
    assert rising.rising and rising.slope == pytest.approx(50, rel=0.05)
    flat = lag_trend(np.c_[t, 100 + rng.normal(0, 20, 60)], rate=1000)
    assert not flat.rising
    slow = lag_trend(np.c_[t, 100 + 5 * t], rate=1000)  # +5/s below 1% of the rate (10/s)
    assert not slow.rising
    noisy = lag_trend(np.c_[t[:5], [0, 500, 0, 500, 100]], rate=10)  # big se: not significant
    assert not noisy.rising
    few = lag_trend([(0, 1), (1, 100)], rate=10)
    assert not few.rising and few.note


def test_is_sustainable_rules():
    ok = is_sustainable(100, 99.0, latency={"p99": 10.0}, slo=("p99", 20))
    assert ok.ok and not ok.reasons
    low = is_sustainable(100, 97.0)
    assert not low.ok and "output rate" in low.reasons[0]
    t = np.arange(30.0)
    lag = is_sustainable(100, 100.0, lag_samples=np.c_[t, 20 * t])
    assert not lag.ok and "lag rising" in lag.reasons[0]
    slo = is_sustainable(100, 100.0, latency={"p99": 30.0}, slo={"p99": 20})
    assert not slo.ok and "p99" in slo.reasons[0]


# ---------------------------------------------------------------- capacity search


def test_search_sustainable_finds_capacity():
    capacity = 1234.0
    tried = []

    def evaluate(rate):
        tried.append(rate)
        return PointResult(rate <= capacity, [] if rate <= capacity else ["too fast"])

    res = search_sustainable(evaluate, start_rate=100, max_rate=100_000, precision=0.05)
    assert res.status == "converged"
    assert res.sustainable_rate <= capacity
    assert (capacity - res.sustainable_rate) / capacity <= 0.05
    assert res.upper > capacity
    assert [p.rate for p in res.points] == tried
    assert tried[:5] == [100, 200, 400, 800, 1600]
    assert all(p.phase == "bisect" for p in res.points[5:])


def test_search_start_fails_shrinks_and_limits():
    res = search_sustainable(lambda r: r <= 30, start_rate=100, max_rate=1000, precision=0.05)
    assert res.status == "converged" and 30 * 0.95 <= res.sustainable_rate <= 30
    assert [p.phase for p in res.points[:3]] == ["grow", "shrink", "shrink"]
    res = search_sustainable(lambda r: True, start_rate=100, max_rate=1000)
    assert res.status == "max_rate" and res.sustainable_rate == 1000
    res = search_sustainable(lambda r: r <= 1234, start_rate=100, max_rate=1e6, max_points=6)
    assert res.status == "max_points" and len(res.points) == 6 and res.sustainable_rate <= 1234
    res = search_sustainable(lambda r: False, start_rate=100, max_rate=1000, min_rate=10)
    assert res.status == "none_sustainable" and res.sustainable_rate is None


# ---------------------------------------------------------------- validity


def test_validity_reasons():
    v = check_validity(window_s=30, kept_count=5000, min_duration_s=10, min_count=100, missing=0)
    assert v.valid and v.reasons == []
    v = check_validity(window_s=3, kept_count=5000, min_duration_s=10, min_count=100)
    assert not v.valid and any("window" in r for r in v.reasons)
    v = check_validity(window_s=30, kept_count=10, min_duration_s=10, min_count=100)
    assert not v.valid and any("kept records 10" in r for r in v.reasons)
    v = check_validity(window_s=30, kept_count=5000, missing=3)
    assert not v.valid and any("3 batch(es) missing" in r for r in v.reasons)
    v = check_validity(window_s=30, kept_count=5000, achieved_rate=90, reference_rate=100)
    assert not v.valid and any("input rate" in r for r in v.reasons)
    v = check_validity(window_s=30, kept_count=5000, achieved_rate=99, reference_rate=100)
    assert v.valid


def _run_table(n=3000, rate=100.0, latency_ms=5.0, dead=(), dups=(), drop=()):
    intended = T0 + np.rint(np.arange(n) * 1e9 / rate).astype(np.int64)
    created = intended + 20_000
    out = (created + int(latency_ms * 1e6)) // 1_000_000
    status = np.array(["scored"] * n, dtype=object)
    status[list(dead)] = "dead_lettered"
    keep = np.setdiff1d(np.arange(n), list(drop))
    cols = {"batch_id": [f"r-{i}" for i in keep], "sequence": keep, "intended_ns": intended[keep],
            "created_ns": created[keep], "output_append_ms": out[keep],
            "status": status[keep].tolist(), "duplicate": np.zeros(len(keep), dtype=bool)}
    t = pa.table(cols)
    if dups:
        extra = t.take(list(dups))
        extra = extra.set_column(extra.column_names.index("duplicate"), "duplicate",
                                 pa.array([True] * len(dups)))
        t = pa.concat_tables([t, extra])
    return t


def test_summarize_point_valid_run():
    t = _run_table(n=3000, rate=100.0, latency_ms=5.0)
    p = summarize_point(t, {"rate": 100}, target_rate=100.0, sent=3000, min_duration_s=10, min_count=100)
    assert p["valid"], p["reasons"]
    assert p["accounting"] == {"sent": 3000, "scored": 3000, "dead_lettered": 0, "missing": 0, "duplicates": 0}
    assert p["warmup"]["count"] == 750 and p["measured"]["count"] == 2250
    assert p["throughput_bps"] == pytest.approx(100.0, rel=0.01)
    assert 4.0 <= p["latency_ms"]["p50"] <= 5.1
    assert p["latency_from_schedule_ms"]["count"] == 2250
    assert p["latency_from_schedule_ms"]["mean"] >= p["latency_ms"]["mean"]
    assert p["sustainable"]["ok"]
    assert sum(p["timeline"]["counts"]) == 2250


def test_summarize_point_invalid_reasons():
    t = _run_table(n=300, rate=100.0, dead=[250], dups=[260, 261], drop=[270, 271, 272])
    p = summarize_point(t, target_rate=100.0, sent=300, min_duration_s=10, min_count=1000)
    acc = p["accounting"]
    assert acc["duplicates"] == 2 and acc["dead_lettered"] == 1 and acc["scored"] == 296
    assert acc["missing"] == 3
    assert not p["valid"]
    text = " | ".join(p["reasons"])
    assert "window" in text and "kept records" in text and "3 batch(es) missing" in text
    assert "dead-lettered" in text
    # closed loop: intended == created -> latency_from_schedule equals latency
    t2 = _run_table(n=200)
    t2 = t2.set_column(t2.column_names.index("intended_ns"), "intended_ns", t2.column("created_ns"))
    p2 = summarize_point(t2, min_duration_s=0, min_count=0)
    assert p2["latency_from_schedule_ms"]["mean"] == p2["latency_ms"]["mean"]


def _with_outputs(t, out_ms):
    return t.set_column(t.column_names.index("output_append_ms"), "output_append_ms", pa.array(out_ms))


def test_sustainability_judges_keeping_up_not_the_latency():
    # 100/s for 8 s, every batch 300 ms late: the engine keeps up. The paper's throughput
    # (span from the first creation) reads 100·6/6.3 ≈ 95/s, under 0.98·r; the output rate reads 100/s.
    kept_up = summarize_point(_run_table(n=800, rate=100.0, latency_ms=300.0), target_rate=100.0, sent=800,
                              min_duration_s=1, min_count=10)
    assert kept_up["throughput_bps"] == pytest.approx(100 * 6 / 6.3, rel=0.01)
    assert kept_up["output_rate_bps"] == pytest.approx(100.0, rel=0.005)
    assert kept_up["sustainable"]["ok"], kept_up["sustainable"]["reasons"]


def test_sustainability_fails_a_pipeline_that_falls_behind():
    # fed at 100/s, emitting at 90/s: latency grows 1.1 ms per batch
    t = _run_table(n=800, rate=100.0, latency_ms=5.0)
    created = np.asarray(t.column("created_ns"))
    behind = summarize_point(_with_outputs(t, (created + 5_000_000 + np.arange(800) * 1_111_111) // 1_000_000),
                             target_rate=100.0, sent=800, min_duration_s=1, min_count=10)
    # at most its capacity: latency it built during the warm-up counts against the measured window
    assert 85 < behind["output_rate_bps"] <= 90.5
    assert not behind["sustainable"]["ok"]
    assert "output rate 8" in " ".join(behind["sustainable"]["reasons"])


def test_sustainability_fails_a_pipeline_that_drains_its_backlog_after_the_generator_stops():
    # fed at 100/s for 8 s, emitting at 50/s while fed, then the rest in a burst at 1000/s once the
    # generator (sharing the cores) has stopped: the outputs' own pace is high, latency ends low
    t = _run_table(n=800, rate=100.0, latency_ms=5.0)
    created_ms = np.asarray(t.column("created_ns")) // 1_000_000
    t0 = created_ms[0]
    i = np.arange(800)
    out = np.where(i < 400, t0 + i * 20, t0 + 8000 + (i - 400))
    drained = summarize_point(_with_outputs(t, out), target_rate=100.0, sent=800, min_duration_s=1, min_count=10)
    kept_out = out[np.argsort(out)][200:]
    assert (len(kept_out) - 1) / ((kept_out[-1] - kept_out[0]) / 1e3) > 100  # the output pace alone would pass
    assert drained["output_rate_bps"] < 80
    assert not drained["sustainable"]["ok"]


def test_sustainability_fails_a_backlog_built_during_the_warm_up():
    # fed at 100/s for 8 s; nothing comes out for the first 5 s, then 200/s: every kept record
    # (after the warm-up quarter) is already seconds late and the latency only falls
    t = _run_table(n=800, rate=100.0, latency_ms=5.0)
    created_ms = np.asarray(t.column("created_ns")) // 1_000_000
    out = np.maximum(created_ms + 5, created_ms[0] + 5000 + np.arange(800) * 5)
    late = summarize_point(_with_outputs(t, out), target_rate=100.0, sent=800, min_duration_s=1, min_count=10)
    assert late["latency_ms"]["p50"] > 500
    assert not late["sustainable"]["ok"], late["output_rate_bps"]


def test_output_rate_of_too_few_records_is_nan():
    assert math.isnan(output_rate_bps([], [])) and math.isnan(output_rate_bps([5_000_000], [7]))
    # 3 batches 0.5 s apart, 2 ms latency each: 2 intervals over 1 s
    assert output_rate_bps([0, 500_000_000, 1_000_000_000], [2, 502, 1002]) == pytest.approx(2.0)


def test_point_result_from_summary():
    p = summarize_point(_run_table(n=3000), target_rate=100.0, sent=3000)
    assert point_result_from_summary(p).sustainable
    p = summarize_point(_run_table(n=3000), target_rate=200.0, sent=3000)
    r = point_result_from_summary(p)
    assert not r.sustainable and r.reasons


# ---------------------------------------------------------------- burst recovery


def _trace(recover_after_s, burst=(60.0, 90.0), total_s=150.0, rate=200.0, base_ms=10.0, peak_ms=100.0):
    """Latency 10 ms, rising during the burst to 100 ms, then falling linearly back to
    the baseline over ``recover_after_s`` seconds (None = never recovers)."""
    t = np.arange(0, total_s, 1 / rate)
    lat = np.full_like(t, base_ms)
    s, e = burst
    inb = (t >= s) & (t < e)
    lat[inb] = base_ms + (peak_ms - base_ms) * (t[inb] - s) / (e - s)
    after = t >= e
    if recover_after_s is None:
        lat[after] = peak_ms
    else:
        frac = np.clip((t[after] - e) / recover_after_s, 0, 1)
        lat[after] = peak_ms + (base_ms - peak_ms) * frac
    rng = np.random.default_rng(3)
    lat = lat * (1 + rng.uniform(-0.02, 0.02, len(lat)))
    origin_ms = 1_700_000_000_000
    return origin_ms + t * 1000.0, lat, origin_ms


def test_burst_recovery_known_7s():
    out, lat, origin = _trace(7.0)
    rec = burst_recovery(out, lat, [(60.0, 90.0)], window_s=1.0, hold_s=5.0, tolerance=0.10,
                         origin_ms=origin)
    assert len(rec) == 1 and rec[0] is not None
    assert abs(rec[0] - 7.0) <= 1.0  # resolution = window


def test_burst_recovery_never():
    out, lat, origin = _trace(None)
    det = burst_recovery_detail(out, lat, [(60.0, 90.0)], origin_ms=origin)
    assert det[0]["recovery_s"] is None and "did not stay within" in det[0]["reason"]
    assert burst_recovery(out, lat, [(60.0, 90.0)], origin_ms=origin) == [None]


def test_burst_recovery_several_bursts_and_no_data():
    out1, lat1, origin = _trace(3.0, burst=(60.0, 90.0), total_s=150.0)
    rec = burst_recovery(out1, lat1, [(60.0, 90.0), (500.0, 510.0)], origin_ms=origin)
    assert rec[0] is not None and abs(rec[0] - 3.0) <= 1.0
    assert rec[1] is None  # no data around the second burst
    # undisturbed latency recovers immediately
    flat_out = origin + np.arange(0, 100, 0.01) * 1000
    assert burst_recovery(flat_out, np.full(len(flat_out), 10.0), [(40.0, 50.0)], origin_ms=origin) == [0.0]
