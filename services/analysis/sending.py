"""What the generator achieved (``generator.json``; docs/results.md): over the batches the broker
acknowledged, the achieved rate ``(n − 1) / span(created)`` and its ratio to the target, and the
lateness of each send against its slot (created − intended, ms; HDR statistics as for latency).
A generator that stalls shows here, and in the point's ``send_delay_ms``."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.analysis.stats import input_rate, latency_stats


def send_report(intended_ns: Any, created_ns: Any, target_rate: float | None) -> dict[str, Any]:
    """``{sent, target_rate_bps, achieved_rate_bps, lateness_ms[, achieved_over_target]}``."""
    intended, created = np.asarray(intended_ns), np.asarray(created_ns)
    achieved = input_rate(created)
    out = {"sent": len(created), "target_rate_bps": target_rate,
           "achieved_rate_bps": achieved if np.isfinite(achieved) else None,
           "lateness_ms": latency_stats((created - intended) / 1e6)}
    if target_rate:
        out["achieved_over_target"] = (out["achieved_rate_bps"] or 0.0) / target_rate
    return out
