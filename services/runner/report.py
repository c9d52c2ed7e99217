"""Print a run's summary as a table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from services.report.resolution import FOOTNOTE, below_resolution, below_text


def _f(v, fmt="{:,.2f}"):
    if v is None:
        return "-"
    try:
        return fmt.format(v)
    except (TypeError, ValueError):
        return str(v)


def _stamped(v, marks: list[bool]) -> str:
    """A latency from the broker's 1 ms stamps: "<1†" under the resolution (docs/results.md), never
    "0.00"; ``marks`` records that a footnote is due."""
    if below_resolution(v):
        marks.append(True)
        return escape(below_text())
    return _f(v)


def print_summary(summary: dict, console: Console) -> None:
    t = Table(title=f"{summary['experiment']}", show_lines=False)
    for col in ("point", "serving", "bsz", "mp", "rate/s", "thr b/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                "sched p99", "recv p50", "sent", "scored", "dlq", "miss", "unm.", "dup", "verdict"):
        t.add_column(col, justify="right", no_wrap=True)
    marks: list[bool] = []
    for p in summary["points"]:
        params = p.get("params", {})
        lat = p.get("latency_ms") or {}
        sched = p.get("latency_from_schedule_ms") or {}
        acc = p.get("accounting") or {}
        kind = "search" if params.get("search") else params.get("workload", "")
        valid = "yes" if p.get("valid") else "no"
        if params.get("search"):
            valid += " / " + ("sust." if p.get("search_ok") else "not sust.")
        serving = params.get("backend", "")
        if params.get("serving_kind") == "external":
            serving = f"{params.get('server')}/{params.get('call_mode')}"
        t.add_row(kind, serving, _f(params.get("batch_size"), "{}"), _f(params.get("parallelism"), "{}"),
                  _f(params.get("rate"), "{:,.0f}"), _f(p.get("throughput_bps"), "{:,.1f}"),
                  *(_stamped(lat.get(k), marks) for k in ("p50", "p99", "p999", "max")),
                  _stamped(sched.get("p99"), marks), _f((p.get("latency_receive_ms") or {}).get("p50"), "{:,.3f}"),
                  *(_f(acc.get(k), "{:,.0f}") for k in
                    ("sent", "scored", "dead_lettered", "missing", "unmatched", "duplicates")), valid)
    console.print(t)
    # recv p50: the e2e at the collector (collector receive − created), µs resolution, one host clock
    joined = any(p.get("hosts") for p in summary.get("points", []))
    console.print("recv p50 = collector receive − created (µs resolution; " +
                  ("generators and collectors on several hosts: two host clocks, their bounds in each point's hosts)"
                   if joined else "generator and collector on one host)"))
    if marks:
        console.print(escape(FOOTNOTE))
    for found in summary.get("searches", []):
        label = ", ".join(f"{k}={v}" for k, v in found["params"].items())
        console.print(f"sustainable throughput ({label}): [bold]{_f(found['sustainable_rate'], '{:,.0f}')} batches/s[/] "
                      f"(search {found['status']})")
    if "sustainable_rate" in summary:
        sr = summary["sustainable_rate"]
        console.print(f"sustainable throughput: [bold]{_f(sr, '{:,.0f}')} batches/s[/] "
                      f"(search {summary['search']['status']}, precision {summary['search']['precision']:.0%})")
    for p in summary["points"]:
        if p.get("recovery_s") is not None:
            console.print(f"burst recovery (s): {p['recovery_s']}")
