"""Workload configs, schedules, replay data and synthetic pools (pure, no Kafka)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from crayfish import payloads
from crayfish.payloads import cycle_pool, input_pool, iter_replay_batches, load_replay, replay_batch, synthetic_pool
from services.generator import schedules, workload_configs, workloads
from services.generator.schedules import (ClosedLoopSchedule, ReplaySchedule, build_schedule, bursty, constant,
                                          poisson, ramp)
from services.generator.workload_configs import (BurstyConfig, ClosedLoopConfig, ConstantConfig, PoissonConfig,
                                                 RampConfig, ReplayConfig, bursty_from_sustainable, parse_workload)

NS = 1_000_000_000


# ---------------------------------------------------------------- constant / period


@pytest.mark.parametrize("rate,duration", [(100, 30), (1, 10), (50_000, 2), (7.5, 4), (3, 1.5)])
def test_constant_count_exact_and_evenly_spaced(rate, duration):
    t = constant(rate, duration_s=duration).times_ns()
    assert len(t) == int(np.ceil(rate * duration - 1e-9))
    assert t[0] == 0
    assert t.dtype == np.int64
    # spacing 1/rate to within rounding to the ns
    assert np.all(np.abs(np.diff(t) - NS / rate) <= 1)
    assert t[-1] < duration * NS


def test_constant_exact_when_rate_times_duration_is_whole():
    assert len(constant(100, duration_s=30).times_ns()) == 3000
    # float fuzz: 10 * 0.3 = 3.0000000000000004 must still give 3 events
    assert len(constant(10, duration_s=0.3).times_ns()) == 3


def test_period_s_one_batch_every_k_seconds():
    s = build_schedule({"type": "constant", "period_s": 2.5, "duration_s": 10})
    np.testing.assert_array_equal(s.times_ns(), np.array([0, 2.5, 5, 7.5]) * NS)
    assert constant(period_s=0.1, duration_s=0.3).times_ns().tolist() == [0, 100_000_000, 200_000_000]


def test_count_bound_and_whichever_first():
    assert len(constant(100, duration_s=None, count=250).times_ns()) == 250
    assert len(constant(100, duration_s=1.0, count=250).times_ns()) == 100
    assert len(constant(100, duration_s=10.0, count=250).times_ns()) == 250
    assert len(poisson(100, 1, duration_s=None, count=77).times_ns()) == 77


def test_chunks_concatenate_to_the_same_schedule():
    for s in (constant(1000, duration_s=3), poisson(1000, 5, duration_s=3),
              bursty(100, 400, 2, 5, duration_s=17), ramp(10, 1000, 3)):
        whole = s.times_ns()
        for k in (1, 7, 1000, 1 << 20):
            chunks = list(s.iter_chunks(k))
            assert all(len(c) <= k for c in chunks)
            np.testing.assert_array_equal(np.concatenate(chunks), whole)
        np.testing.assert_array_equal(s.offsets_ns, whole)


def test_high_rate_is_cheap_and_monotonic():
    t = constant(50_000, duration_s=20).times_ns()
    assert len(t) == 1_000_000
    assert np.all(np.diff(t) > 0)


# ---------------------------------------------------------------- poisson


def test_poisson_mean_and_cv():
    rate, dur = 2000.0, 30.0
    t = poisson(rate, seed=11, duration_s=dur).times_ns()
    n = len(t)
    expected = rate * dur
    assert abs(n - expected) < 5 * np.sqrt(expected)  # Poisson count, 5 sigma
    gaps = np.diff(t) / NS
    assert abs(gaps.mean() - 1 / rate) < 5 * (1 / rate) / np.sqrt(len(gaps))
    cv = gaps.std() / gaps.mean()
    assert abs(cv - 1.0) < 0.03
    assert t[-1] < dur * NS and t[0] > 0
    assert np.all(np.diff(t) >= 0)


def test_seeds_reproduce_and_differ():
    a = build_schedule({"type": "poisson", "rate": 500, "duration_s": 5}, seed=1).times_ns()
    b = build_schedule({"type": "poisson", "rate": 500, "duration_s": 5}, seed=1).times_ns()
    c = build_schedule({"type": "poisson", "rate": 500, "duration_s": 5}, seed=2).times_ns()
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)
    # deterministic schedules are identical for any seed
    np.testing.assert_array_equal(constant(10, duration_s=3, seed=1).times_ns(),
                                  constant(10, duration_s=3, seed=9).times_ns())


# ---------------------------------------------------------------- bursty


def test_bursty_windows_and_rates():
    s = bursty(base_rate=10, burst_rate=40, burst_s=5, period_s=20, duration_s=60)
    assert s.bursts == [(15.0, 20.0), (35.0, 40.0), (55.0, 60.0)]
    t = s.times_s()
    # per cycle: 15 s at 10/s + 5 s at 40/s = 350, three cycles
    assert len(t) == 3 * (150 + 200)
    for start, end in s.bursts:
        inside = np.count_nonzero((t >= start) & (t < end))
        assert inside == pytest.approx(40 * (end - start), abs=1)
        before = np.count_nonzero((t >= start - 10) & (t < start))
        assert before == pytest.approx(10 * 10, abs=1)
    assert s.rate_at(14.9) == 10 and s.rate_at(15.0) == 40 and s.rate_at(20.0) == 10
    # spacing inside a burst is 1/40 s
    inb = t[(t > 36) & (t < 39)]
    assert np.allclose(np.diff(inb), 1 / 40, atol=1e-9)


def test_bursty_partial_last_burst_is_clipped():
    s = bursty(10, 20, burst_s=10, period_s=30, duration_s=45)
    assert s.bursts == [(20.0, 30.0)]
    s = bursty(10, 20, burst_s=10, period_s=30, duration_s=55)
    assert s.bursts == [(20.0, 30.0), (50.0, 55.0)]


def test_bursty_from_sustainable_paper_defaults():
    cfg = bursty_from_sustainable(1000.0)
    assert cfg.base_rate == pytest.approx(700.0)
    assert cfg.burst_rate == pytest.approx(1100.0)
    assert cfg.burst_s == 30 and cfg.period_s == 150  # 120 s base then 30 s burst
    s = build_schedule(cfg)
    assert s.bursts[0] == (120.0, 150.0)
    assert s.kind == "bursty"


# ---------------------------------------------------------------- ramp


def test_ramp_up_monotonic_endpoints():
    s = ramp(100, 1000, 10)
    t = s.times_s()
    assert len(t) == pytest.approx((100 + 1000) / 2 * 10, abs=1)
    gaps = np.diff(t)
    assert np.all(gaps > 0)
    assert np.all(np.diff(gaps) <= 1e-9)  # rate rises -> gaps shrink
    assert 1 / gaps[0] == pytest.approx(100, rel=0.01)
    assert 1 / gaps[-1] == pytest.approx(1000, rel=0.01)
    assert t[-1] < 10


def test_ramp_down_and_from_zero():
    t = ramp(1000, 100, 10).times_s()
    gaps = np.diff(t)
    assert np.all(np.diff(gaps) >= -1e-9)
    assert 1 / gaps[0] == pytest.approx(1000, rel=0.01)
    assert 1 / gaps[-1] == pytest.approx(100, rel=0.02)
    t0 = ramp(0, 100, 10).times_s()
    assert len(t0) == 500 and t0[0] == 0 and np.all(np.diff(t0) > 0)


# ---------------------------------------------------------------- configs


def test_config_union_and_validation():
    assert isinstance(parse_workload({"type": "constant", "rate": 5}), ConstantConfig)
    assert isinstance(parse_workload({"type": "poisson", "rate": 5}), PoissonConfig)
    assert isinstance(parse_workload({"type": "bursty", "base_rate": 1, "burst_rate": 2}), BurstyConfig)
    assert isinstance(parse_workload({"type": "closed_loop"}), ClosedLoopConfig)
    assert isinstance(parse_workload({"type": "ramp", "start_rate": 1, "end_rate": 2}), RampConfig)
    assert isinstance(parse_workload({"type": "replay", "path": "x.npz", "rate": 2}), ReplayConfig)
    assert parse_workload({"type": "constant", "rate": 5}).duration_s == 30
    bad = [
        {"type": "constant"},
        {"type": "constant", "rate": 1, "period_s": 1},
        {"type": "constant", "rate": 0},
        {"type": "poisson", "rate": -1},
        {"type": "bursty", "base_rate": 1, "burst_rate": 2, "burst_s": 10, "period_s": 10},
        {"type": "ramp", "start_rate": 0, "end_rate": 0},
        {"type": "replay", "path": "x.csv", "rate": 1},
        {"type": "closed_loop", "outstanding": 0},
        {"type": "closed_loop", "duration_s": None},
        {"type": "constant", "rate": 1, "bogus": 1},
        {"type": "nope"},
    ]
    for b in bad:
        with pytest.raises(ValidationError):
            parse_workload(b)
    # field docstrings become descriptions
    assert ConstantConfig.model_fields["rate"].description


def test_closed_loop_spec():
    s = build_schedule({"type": "closed_loop", "outstanding": 4, "count": 100})
    assert isinstance(s, ClosedLoopSchedule) and not s.open_loop
    assert s.outstanding == 4 and s.count == 100
    with pytest.raises(TypeError):
        s.times_ns()


# ---------------------------------------------------------------- replay


def test_replay_npy_and_npz(tmp_path):
    a = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    b = np.arange(5, dtype=np.int64)
    np.save(tmp_path / "d.npy", a)
    np.savez(tmp_path / "d.npz", first=a, second=b)
    np.testing.assert_array_equal(load_replay(tmp_path / "d.npy"), a)
    np.testing.assert_array_equal(load_replay(tmp_path / "d.npz"), a)
    np.testing.assert_array_equal(load_replay(tmp_path / "d.npz", key="second"), b)
    with pytest.raises(KeyError):
        load_replay(tmp_path / "d.npz", key="missing")

    it = iter_replay_batches(a, 4)
    b0, b1, b2, b3 = (next(it) for _ in range(4))
    np.testing.assert_array_equal(b0, a[0:4])
    np.testing.assert_array_equal(b1, a[4:8])
    np.testing.assert_array_equal(b2, a[[8, 9, 0, 1]])  # wraps around
    np.testing.assert_array_equal(b3, a[2:6])
    np.testing.assert_array_equal(replay_batch(a, 4, 2), b2)
    # batch larger than the data wraps several times
    np.testing.assert_array_equal(replay_batch(b, 12, 0), np.resize(b, 12))

    s = build_schedule({"type": "replay", "path": str(tmp_path / "d.npz"), "key": "second",
                        "rate": 20, "duration_s": 2})
    assert isinstance(s, ReplaySchedule)
    np.testing.assert_array_equal(s.times_ns(), constant(20, duration_s=2).times_ns())
    np.testing.assert_array_equal(next(s.batches(3)), b[:3])


# ---------------------------------------------------------------- synthetic pool


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int32", "uint8", "int8", "bool"])
def test_synthetic_pool_shapes_dtypes_and_ranges(dtype):
    p = synthetic_pool((3, 4), dtype, batch_size=2, pool_size=5, seed=7)
    assert p.shape == (5, 2, 3, 4)
    assert p.dtype == np.dtype(dtype)
    if p.dtype.kind == "f":
        assert p.min() >= 0 and p.max() < 1
    elif p.dtype.kind in "iu":
        assert p.min() >= 0 and p.max() < 256
    np.testing.assert_array_equal(p, synthetic_pool((3, 4), dtype, 2, 5, seed=7))
    if dtype != "bool":
        assert not np.array_equal(p, synthetic_pool((3, 4), dtype, 2, 5, seed=8))


def test_synthetic_pool_int_range_and_cycle():
    p = synthetic_pool((8,), np.int64, 4, 3, seed=0, int_range=(100, 105))
    assert p.min() >= 100 and p.max() < 105
    it = cycle_pool(p)
    seq = [next(it) for _ in range(7)]
    assert seq[3] is p[0] or np.array_equal(seq[3], p[0])
    np.testing.assert_array_equal(seq[6], p[0])
    with pytest.raises(ValueError):
        synthetic_pool((2,), np.uint8, 1, 1, int_range=(0, 1000))


def test_input_pool_synthetic_is_the_seeded_pool():
    pool = input_pool([1, 784], "float32", batch_size=2, pool_size=5, seed=3)
    expect = synthetic_pool((1, 784), "float32", 2, 5, seed=3)
    assert len(pool) == 5
    for got, want in zip(pool, expect):
        assert got.flags.c_contiguous and got.shape == (2, 1, 784)
        np.testing.assert_array_equal(got, want)


def test_input_pool_replay_cuts_the_file_into_batches(tmp_path):
    rows = np.arange(7 * 6, dtype=np.float64).reshape(7, 6)
    np.save(tmp_path / "d.npy", rows)
    pool = input_pool((2, 3), "float32", batch_size=3, pool_size=64, seed=0, replay_path=tmp_path / "d.npy")
    # ceil(7 / 3) batches of 3 rows, reshaped to the item shape and cast; the last wraps around.
    assert len(pool) == 3
    for k, batch in enumerate(pool):
        assert batch.dtype == np.float32 and batch.shape == (3, 2, 3) and batch.flags.c_contiguous
        want = rows[np.arange(3 * k, 3 * k + 3) % 7].reshape(3, 2, 3)
        np.testing.assert_array_equal(batch, want)
    # Fewer rows than a batch: one batch that repeats them.
    (one,) = input_pool((6,), "float32", batch_size=10, pool_size=1, seed=0, replay_path=tmp_path / "d.npy")
    np.testing.assert_array_equal(one, rows[np.arange(10) % 7])


def test_workloads_module_re_exports_every_name_from_its_owner():
    owners = (workload_configs, schedules, payloads)
    for name in workloads.__all__:
        owner = [m for m in owners if name in getattr(m, "__all__", ())]
        assert len(owner) == 1, name
        assert getattr(workloads, name) is getattr(owner[0], name), name

