"""The host's wall clock, and a bound on its offset from the broker's clock (LogAppendTime).

Latency is ``broker append stamp − generator created stamp``: two clocks. A probe record is sent at
t0 (host clock) and read back at t1; the broker stamped it with A (ms, truncated), so the true
append instant lies in [A, A + 1 ms) of broker time and in [t0, t1] of host time. Hence
offset = broker − host ∈ [A − t1, A + 1 ms − t0]. Intersecting the intervals of several probes
tightens the bound (:func:`combine`). Latencies measured as (broker stamp − host stamp) are exact
up to it. On one host the offset is 0, so the bound must contain 0. The probes themselves go through
the broker: :func:`crayfish.kafka.probe_skew`.

:func:`host_clock` is the clock every stamp of the generator comes from. Its ``offset_ms`` is a
test setting: it shifts the host clock by a known amount, which the bound must then contain
(negated) and the latencies must show.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

NS_PER_MS = 1_000_000


def host_clock(offset_ms: float = 0.0) -> Callable[[], int]:
    """The wall clock in ns, shifted by ``offset_ms`` (a test setting; 0 = the plain clock, with no
    cost on the hot path)."""
    if not offset_ms:
        return time.time_ns
    shift = round(offset_ms * NS_PER_MS)
    return lambda: time.time_ns() + shift


@dataclass(frozen=True)
class SkewBound:
    """``broker_clock − host_clock`` lies in ``[lower_ms, upper_ms]``, from ``probes`` round trips
    that came back; ``min_round_trip_ms`` is the fastest of them."""

    lower_ms: float
    upper_ms: float
    probes: int
    min_round_trip_ms: float

    @property
    def width_ms(self) -> float:
        return self.upper_ms - self.lower_ms

    def contains(self, offset_ms: float) -> bool:
        return self.lower_ms <= offset_ms <= self.upper_ms

    def to_dict(self) -> dict:
        d = asdict(self)
        d["width_ms"] = self.width_ms
        d["definition"] = "broker_clock - host_clock lies in [lower_ms, upper_ms]"
        return d


def probe_interval(t0_ns: int, t1_ns: int, append_ms: int) -> tuple[float, float]:
    """One round trip -> ``(lower_ms, upper_ms)`` of broker − host: ``[A − t1, A + 1 ms − t0]``."""
    append_ns = append_ms * NS_PER_MS
    return (append_ns - t1_ns) / NS_PER_MS, (append_ns + NS_PER_MS - t0_ns) / NS_PER_MS


def combine(round_trips: Iterable[tuple[int, int, int]]) -> SkewBound:
    """The intersection of the intervals of ``(t0_ns, t1_ns, append_ms)`` round trips."""
    trips = list(round_trips)
    if not trips:
        raise ValueError("no probe round trip to bound the clock offset with")
    intervals = [probe_interval(*trip) for trip in trips]
    return SkewBound(lower_ms=max(lo for lo, _ in intervals), upper_ms=min(hi for _, hi in intervals),
                     probes=len(trips), min_round_trip_ms=min(t1 - t0 for t0, t1, _ in trips) / NS_PER_MS)
