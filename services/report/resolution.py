"""Resolution honesty: values finer than the stamps they were computed from are marked, not printed.

The broker stamps (LogAppendTime of the input and output records) have 1 ms resolution, so a
latency or hop taken from them that is under 1 ms in magnitude (a fast local path reads 0.00, even
slightly negative) says only "less than a millisecond". Such cells read ``<1`` with a dagger (†) and
a footnote; the µs-resolution e2e at the collector (collector receive − created, one host clock) is
shown beside them. Used by the HTML report (:mod:`.html`) and the CLI tables
(``services.runner.report``).

Extension point: a new summary statistic computed from a broker stamp adds its key path prefix to
:data:`BROKER_STAMPED` (a prefix of the summary point's dotted key, e.g. ``"latency_ms."``).
"""

from __future__ import annotations

import math
from typing import Any

RESOLUTION_MS = 1.0
MARK = "†"
# Summary keys (dotted paths of a point) whose values come from a broker stamp. Not ``count``s.
BROKER_STAMPED = (
    "latency_ms.", "latency_from_schedule_ms.", "warmup.latency_ms.",
    "hops_ms.produce.", "hops_ms.wait.", "hops_ms.publish.", "hops_ms.e2e.",
    "hops_traced.hops_ms.produce.", "hops_traced.hops_ms.wait.", "hops_traced.hops_ms.publish.",
    "hops_traced.hops_ms.e2e.",
)
FOOTNOTE = (f"{MARK} below the 1 ms resolution of the broker's stamps (LogAppendTime, whole ms): "
            "the value is under 1 ms in magnitude and its digits would be noise. The e2e at the "
            "collector (collector receive − created) has µs resolution; it is valid when the generator "
            "and the collector share a host clock.")
RECEIVE_NOTE = "collector receive − created; µs resolution, generator and collector on one host clock"


def broker_stamped(key: str) -> bool:
    """Is the summary value at ``key`` computed from a broker stamp (and not a count)?"""
    return key.startswith(BROKER_STAMPED) and not key.endswith(".count")


def below_resolution(value: Any) -> bool:
    """A finite number under the broker stamps' resolution in magnitude."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and abs(value) < RESOLUTION_MS


def marked(key: str, value: Any) -> bool:
    return broker_stamped(key) and below_resolution(value)


def below_text() -> str:
    """What a marked value reads (plain text; the HTML escapes ``<``)."""
    return f"<1{MARK}"
