"""Part 3: sustainable throughput at mp = 1 and mp = 2 (sleep 10 ms and embedded ONNX FFNN).

Definitions: see :mod:`benchmarks` (part 3).
"""

from __future__ import annotations

from math import floor, log10
from pathlib import Path

from benchmarks.common import (
    BenchSettings,
    error_line,
    ratio,
    run_search,
    search_experiment,
)

SCALING_GOAL_SLEEP = 1.9


def experiment(name: str, backend: str, parallelism: int, start_rate: float, bootstrap: str,
               s: BenchSettings):
    serving = {"kind": "embedded", "backend": backend, "threads": 1, "inter_threads": 1}
    if backend == "sleep":
        serving["delay_ms"] = s.sleep_delay_ms
    return search_experiment(name, serving, parallelism, start_rate, bootstrap, s)


def _round_rate(r: float) -> float:
    """Two significant digits (a tidy start rate)."""
    if r <= 0:
        return r

    digits = 1 - int(floor(log10(r)))
    return float(round(r, digits))


def search(name: str, backend: str, parallelism: int, start_rate: float, bootstrap: str, out_dir: Path,
           s: BenchSettings, console=None) -> dict:
    return run_search(experiment(name, backend, parallelism, start_rate, bootstrap, s), out_dir, console)


def run(bootstrap: str, out_dir: Path, s: BenchSettings, drain_rate: float | None = None, console=None,
        log=print) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"point_duration_s": s.point_duration_s, "precision": s.precision, "max_points": s.max_points}

    def guarded(key, *args):
        """One search; on an error (a crashed service) it is retried once, the error kept."""
        errors = []
        for attempt in range(2):
            name = key if attempt == 0 else f"{key}-retry"
            log(f"parallelism: search {name}")
            try:
                res[key] = search(name, *args, bootstrap, out_dir, s, console)
                break
            except Exception as exc:  # noqa: BLE001 - report and go on with the next search
                errors.append(f"{type(exc).__name__}: {exc}")
                log(f"parallelism: search {name} failed: {error_line(errors[-1])}")
                res[key] = {"error": errors[-1]}
        if errors:
            res[key]["errors_before"] = errors if "error" not in res[key] else errors[:-1]
            res[key]["retried"] = len(errors) > 0 and "error" not in res[key]
        return res[key].get("sustainable_rate_bps")

    # Both searches start at the same rate, so neither is steered towards a 2x answer.
    guarded("sleep-mp1", "sleep", 1, s.sleep_start_rate)
    guarded("sleep-mp2", "sleep", 2, s.sleep_start_rate)
    if s.onnx_start_rate:
        onnx_start, why = s.onnx_start_rate, "--onnx-start-rate"
    elif drain_rate:
        onnx_start, why = _round_rate(drain_rate / 3), "a third of the drain rate of part 1"
    else:
        onnx_start, why = 500.0, "default"
    res["onnx_start_rate_source"] = why
    o1 = guarded("onnx-mp1", "onnxruntime", 1, onnx_start)
    guarded("onnx-mp2", "onnxruntime", 2, _round_rate(o1) if o1 else onnx_start)
    for name in ("sleep", "onnx"):
        a, b = res[f"{name}-mp1"], res[f"{name}-mp2"]
        res[f"{name}_scaling"] = ratio(b.get("sustainable_rate_bps"), a.get("sustainable_rate_bps"))
        # each search brackets its capacity in [sustainable, upper): the ratio lies in these bounds
        lo = ratio(b.get("sustainable_rate_bps"), a.get("upper_bps"))
        hi = ratio(b.get("upper_bps"), a.get("sustainable_rate_bps"))
        res[f"{name}_scaling_bounds"] = [lo, hi] if lo is not None and hi is not None else None
    res["goal"] = {"sleep_scaling_min": SCALING_GOAL_SLEEP}
    res["goal_met"] = (res["sleep_scaling"] or 0) >= SCALING_GOAL_SLEEP
    return res
