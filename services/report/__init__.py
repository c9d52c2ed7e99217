"""Views of a run folder: the self-contained HTML report (``report.html``) and the comparison of two
runs (``crayfish compare``). Inline SVG and CSS only: one file, no script, no external asset.

* :mod:`.html` — ``write_report(run_dir)``: overview, search verdicts, one section per point;
* :mod:`.compare` — ``compare_runs(a, b)``, ``print_comparison``, ``write_comparison_html``;
* :mod:`.svg` — the chart primitives; :mod:`.data` — reading a run folder for them.

Imports are lazy: the runner imports this package at start-up.
"""

from __future__ import annotations

from pathlib import Path

from services.report.html import write_report as _write

__all__ = ["write_report", "write_report_safely"]


def write_report(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``out``); returns the path."""

    return _write(run_dir, out)


def write_report_safely(run_dir: Path | str, console=None) -> Path | None:
    """``write_report`` at the end of ``crayfish run``: a failure is printed, never raised (the
    results are written already; the report is a view of them)."""
    try:
        path = write_report(run_dir)
        if console is not None:
            console.print(f"report: {path}")
        return path
    except Exception as exc:  # noqa: BLE001
        if console is not None:
            console.print(f"[yellow]report.html not written: {type(exc).__name__}: {exc}[/]")
        return None
