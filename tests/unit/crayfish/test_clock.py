"""The clock-skew bound (crayfish/clock.py) on constructed round trips, and the host clock's test
offset. The bound measured against a real broker is proven in tests/integration/services/test_measurement.py."""

from __future__ import annotations

import math
import time

import pytest

from crayfish.clock import SkewBound, combine, host_clock, probe_interval

MS = 1_000_000


def test_one_round_trip_bounds_the_offset():
    # sent at 10 ms, read back at 12.5 ms (host clock), stamped 11 ms by the broker (truncated):
    # broker − host ∈ [11 − 12.5, 11 + 1 − 10] ms
    assert probe_interval(10 * MS, 12_500_000, 11) == (-1.5, 2.0)


def test_round_trips_intersect():
    # a second trip: sent 20.2 ms, read 20.9 ms, stamped 20 ms -> [−0.9, 0.8]; with the first: [−0.9, 0.8]
    b = combine([(10 * MS, 12_500_000, 11), (20_200_000, 20_900_000, 20), (30 * MS, 33 * MS, 31)])
    assert (b.lower_ms, b.upper_ms, b.probes) == (-0.9, 0.8, 3)
    assert b.min_round_trip_ms == 0.7 and b.width_ms == pytest.approx(1.7)
    assert b.contains(0.0) and b.contains(-0.9) and b.contains(0.8) and not b.contains(0.81)
    d = b.to_dict()
    assert (d["lower_ms"], d["upper_ms"], d["probes"], d["width_ms"]) == (-0.9, 0.8, 3, b.width_ms)
    assert d["definition"] == "broker_clock - host_clock lies in [lower_ms, upper_ms]"
    with pytest.raises(ValueError, match="^no probe round trip to bound the clock offset with$"):
        combine([])


def test_a_known_offset_lands_inside_the_bound():
    # the broker's clock runs 250 ms behind the host: every round trip must bound −250 ms
    trips = []
    for sent_ms, rtt_ms, broker_delay_ms in ((100.0, 3.0, 1.2), (200.0, 0.4, 0.1), (300.0, 8.0, 7.9)):
        t0 = round(sent_ms * MS)
        append = math.floor(sent_ms + broker_delay_ms - 250.0)   # the broker truncates to ms
        trips.append((t0, t0 + round(rtt_ms * MS), append))
    b = combine(trips)
    assert b.contains(-250.0) and not b.contains(0.0)
    assert SkewBound(-1.0, 1.0, 1, 0.5).width_ms == 2.0


def test_host_clock_offset_is_a_shift_of_the_wall_clock():
    assert host_clock() is time.time_ns and host_clock(0.0) is time.time_ns
    shifted = host_clock(250.5)
    before = time.time_ns()
    reading = shifted()
    after = time.time_ns()
    assert before + 250_500_000 <= reading <= after + 250_500_000
    assert host_clock(-3)() < time.time_ns()
