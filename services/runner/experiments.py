"""Run an experiment file: sweep points, repetitions, sustainable-throughput search, bursts.

Writes to the run folder:
  summary.json     one entry per measured point (schema in docs/results.md)
  batches.parquet  every per-batch record of every point (columns point, repetition added)
  manifest.json    resolved config, seeds, package versions, git revision, host facts, clock skew
  points/NN-*/     each point's raw files (sent.parquet, batches.parquet, lag.parquet, logs)
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from observability.hops import hop_breakdown as traced
from services.analysis import (
    PointRules,
    Warmup,
    combine_repetitions,
    point_bursts,
    point_result_from_summary,
    search_sustainable,
    stamp_hops,
    summarize_point,
)
from services.analysis.sustain import RATE_FRACTION
from services.generator.workloads import build_schedule, parse_workload
from services.report import write_report_safely
from services.runner.experiment import Experiment
from services.runner.hosts_merge import hosts_section
from services.runner.manifest import json_safe, write_manifest
from services.runner.orchestrator import PointRun, Stack, open_stack, run_point
from services.runner.resources import resource_summary
from serving.models import model_facts


def run_experiment(exp: Experiment, out: Path, console: Console | None = None,
                   source_file: Path | None = None, models_dir: Path | None = None) -> dict:
    console = console or Console(quiet=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary: dict[str, Any] = {"experiment": exp.name, "run_dir": str(out),
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                               "points": []}
    runs: list[tuple[int, int, PointRun]] = []
    runner = None
    try:
        with open_stack(exp, models_dir=models_dir, log=lambda m: console.print(f"[dim]{m}[/]")) as stack, \
                Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                         TimeElapsedColumn(), console=console, transient=False) as progress:
            models_dir = stack.models_dir
            summary["model"] = model_facts(exp.model, stack.models_dir)
            runner = _PointRunner(exp, stack, out, progress, runs)
            sweep = exp.points()
            task = progress.add_task("points", total=len(sweep) * exp.repetitions)
            for params in sweep:
                point_exp = exp.with_overrides(params)
                summary["points"].append(runner.measure(point_exp, params, task))
            if exp.search is not None and exp.search.per_point and exp.sweep:
                # One search per sweep combination (e.g. one per serving path): "searches" lists them.
                summary["searches"] = []
                for params in sweep:
                    found = runner.search(exp, params)
                    summary["points"].extend(found.pop("point_summaries"))
                    summary["searches"].append({"params": params, **found})
            elif exp.search is not None:
                summary["search"] = runner.search(exp)
                summary["sustainable_rate"] = summary["search"]["sustainable_rate"]
                summary["points"].extend(summary["search"].pop("point_summaries"))
    except BaseException as exc:   # a fault, Ctrl-C, SIGTERM: what was measured is still written
        summary["stopped"] = stop_reason(exc)
        if runner is not None:
            summary["points"].extend(runner.unreported(summary["points"], summary["stopped"]))
        raise
    finally:
        summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        summary["wall_s"] = round(time.time() - started, 1)
        _write_results(out, exp, runs, summary, source_file, models_dir, console)
    return summary


def stop_reason(exc: BaseException) -> str:
    """Why a run stopped before its end, in one line."""
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({exc.args[0] if exc.args else 'Ctrl-C'})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _write_results(out: Path, exp: Experiment, runs: list, summary: dict, source_file, models_dir, console) -> None:
    """summary.json, batches.parquet, manifest.json and report.html of what was measured. A run that
    stopped early still gets them (its summary says ``stopped``); nothing here may hide the reason it
    stopped, so a failure while writing is only printed."""
    try:
        _write_batches(out, runs)
        write_manifest(out, exp, runs, source_file, models_dir=models_dir)
    except Exception as exc:  # noqa: BLE001 - the summary below must still be written
        if "stopped" not in summary:
            raise
        console.print(f"[red]could not write batches.parquet / manifest.json: {exc}[/]")
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
    write_report_safely(out, console)  # report.html (services/report)


class _PointRunner:
    def __init__(self, exp: Experiment, stack: Stack, out: Path, progress: Progress, runs: list):
        self.exp, self.stack, self.out, self.progress, self.runs = exp, stack, out, progress, runs
        self.index = 0
        self.measured: list[dict] = []       # every finished point, in order (searches included)
        self.current: dict | None = None     # the params of the point being measured

    def unreported(self, reported: list[dict], reason: str) -> list[dict]:
        """After a stop: the finished points not in ``reported`` yet (a search's so far), and the
        point that was being measured, invalid with the reason."""
        shown = {id(p) for p in reported}
        rest = [p for p in self.measured if id(p) not in shown]
        if self.current is not None:
            rest.append({"params": self.current, "valid": False, "finished": False,
                         "reasons": [f"not finished: {reason}"]})
        return rest

    def measure(self, exp: Experiment, params: dict, task=None) -> dict:
        """All repetitions of one point -> the point entry of summary.json."""
        reps = []
        label = _label(params)
        self.current = {**params, **_point_params(exp)}   # as a finished point's params read
        for rep in range(exp.repetitions):
            point_dir = self.out / "points" / f"{self.index:02d}-{label}" / f"rep-{rep}"
            desc = f"{label} rep {rep + 1}/{exp.repetitions}"
            self.progress.console.print(f"[cyan]point[/] {desc}")
            run = run_point(self.stack, exp, point_dir,
                            log=lambda m: self.progress.console.print(m, markup=False, highlight=False))
            self.runs.append((self.index, rep, run))
            rep_summary = summarize_run(exp, run, params)
            (point_dir / "point.json").write_text(json.dumps(json_safe(rep_summary), indent=2))
            reps.append(rep_summary)
            if task is not None:
                self.progress.advance(task)
        self.index += 1
        self.current = None
        point = combine_repetitions(reps)
        self.measured.append(point)
        return point

    def search(self, exp: Experiment, overrides: dict | None = None) -> dict:
        sc = exp.search
        base = exp.with_overrides({**(overrides or {}), "batch_size": sc.batch_size or exp.batch_size})
        summaries: list[dict] = []
        task = self.progress.add_task("sustainable-throughput search", total=sc.max_points)

        def evaluate(rate: float):
            wl = parse_workload({"type": sc.workload, "rate": float(rate), "duration_s": sc.point_duration_s})
            point_exp = base.model_copy(update={"workload": wl})
            params = {**(overrides or {}), "search": True, "rate": round(float(rate), 3),
                      "batch_size": base.batch_size, "parallelism": base.parallelism}
            point = self.measure(point_exp, params)
            summaries.append(point)
            self.progress.advance(task)
            self.progress.console.print(
                f"  rate {rate:,.0f}/s: {'[green]sustainable[/]' if point.get('search_ok') else '[red]not sustainable[/]'}"
                f" (output {point.get('output_rate_bps', float('nan')):,.0f}/s)")
            return point_result_from_summary(point, require_valid=True)

        result = search_sustainable(evaluate, sc.start_rate, sc.max_rate, precision=sc.precision,
                                    max_points=sc.max_points)
        self.progress.update(task, total=len(summaries), completed=len(summaries))
        d = result.as_dict()
        return {"sustainable_rate": result.sustainable_rate, "upper": result.upper, "status": result.status,
                "precision": sc.precision, "criteria": {"rate_fraction": RATE_FRACTION, "lag": "slope not rising",
                                                        "slo": {sc.slo_percentile: sc.slo_ms} if sc.slo_ms else None},
                "tried": [{"rate": p["rate"], "sustainable": p["sustainable"], "phase": p["phase"]}
                          for p in d.get("points", [])],
                "point_summaries": summaries}


def point_rules(exp: Experiment) -> PointRules:
    """The rules a repetition of ``exp`` is judged by (its validity, warm-up, constant rate, SLO)."""
    wl = exp.workload
    target_rate = None
    if wl.type == "constant":
        target_rate = wl.rate if wl.rate is not None else 1.0 / wl.period_s
    slo = {exp.search.slo_percentile: exp.search.slo_ms} if exp.search is not None and exp.search.slo_ms else None
    return PointRules(min_duration_s=exp.validity.min_duration_s, min_count=exp.validity.min_count,
                      rate_tolerance=exp.validity.rate_tolerance,
                      warmup=Warmup(fraction=exp.warmup.fraction, window_s=exp.warmup.window_s),
                      target_rate=target_rate, slo=slo)


def summarize_run(exp: Experiment, run: PointRun, params: dict) -> dict:
    """One repetition of one point: percentiles, throughput, accounting, validity, verdicts."""
    table = pq.read_table(run.dir / "batches.parquet")
    lag = pq.read_table(run.dir / "lag.parquet")
    lag_samples = np.c_[np.asarray(lag.column("t_ns"), dtype=np.float64) / 1e9,
                        np.asarray(lag.column("lag"), dtype=np.float64)]
    rules = point_rules(exp)
    gen = run.generator
    point = summarize_point(table, rules, params={**params, **_point_params(exp)}, lag_samples=lag_samples,
                            predictions=run.collector.get("predictions"))
    point["generator"] = {k: gen.get(k) for k in ("target_rate_bps", "achieved_rate_bps", "processes",
                                                  "lateness_ms", "delivery_failures")}
    point["clock_skew_ms"] = gen.get("clock_skew")
    hosts = hosts_section(gen, run.collector)   # generators and collectors that joined from other hosts
    if hosts is not None:
        point["hosts"] = hosts
    point["predictions"] = run.collector.get("predictions")
    point["resources"] = {"worker_cpu_s": run.worker_cpu_s,
                          "worker_cpu_per_batch_us": run.worker_cpu_s / max(1, point["accounting"]["scored"]) * 1e6,
                          **resource_summary(run.dir)}  # {service: {cpu_mean_pct, cpu_max_pct, rss_max_mb}}
    point["hops_ms"] = stamp_hops(table)
    point["hops_traced"] = traced_hops(run.dir)
    # Which server actually answered (external serving), as the worker recorded it per batch.
    point["answered_by"] = sorted({v for v in table.column("server").to_pylist() if v})
    point["run_id"] = run.run_id
    point["dir"] = str(run.dir)
    if rules.target_rate:
        point["search_ok"] = bool(point["valid"]) and bool(point["sustainable"]["ok"])
    if exp.workload.type == "bursty":
        b = exp.bursts
        point["bursts"] = point_bursts(table, build_schedule(exp.workload, exp.seed).bursts,
                                       origin_ms=(gen.get("t0_ns") or 0) / 1e6, window_s=b.window_s,
                                       hold_s=b.hold_s, tolerance=b.tolerance, baseline_s=b.baseline_s,
                                       abs_tolerance_ms=b.abs_tolerance_ms)
        point["recovery_s"] = [x["recovery_s"] for x in point["bursts"]]
    return point


def _point_params(exp: Experiment) -> dict:
    params = {"model": exp.model, "engine": exp.engine, "backend": exp.serving.backend,
              "batch_size": exp.batch_size, "parallelism": exp.parallelism, "codec": exp.codec,
              "workload": exp.workload.type, "serving_kind": exp.serving.kind}
    if exp.serving.kind == "external":
        params.update(server=exp.serving.server, call_mode=exp.serving.call_mode,
                      instances=exp.serving.instances or exp.parallelism)
    return params


def traced_hops(point_dir: Path) -> dict | None:
    """Per-hop breakdown of the traced (sampled) batches: spans joined with the broker stamps."""

    if not (point_dir / "spans").is_dir():
        return None
    try:
        return traced(point_dir)
    except Exception as exc:  # noqa: BLE001 - the breakdown is extra; the point stays valid
        return {"error": f"{type(exc).__name__}: {exc}"}


def _write_batches(out: Path, runs: list[tuple[int, int, PointRun]]) -> None:
    tables = []
    for index, rep, run in runs:
        t = pq.read_table(run.dir / "batches.parquet")
        t = t.append_column("point", pa.array([index] * t.num_rows, pa.int32()))
        t = t.append_column("repetition", pa.array([rep] * t.num_rows, pa.int32()))
        tables.append(t)
    if tables:
        pq.write_table(pa.concat_tables(tables), out / "batches.parquet")


def _label(params: dict) -> str:
    if not params:
        return "base"
    text = "-".join(f"{k}{v}" for k, v in params.items() if k != "search")
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", ("search-" if params.get("search") else "") + text)[:60]
