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
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.analysis import aggregate_repetitions, summarize_point
from services.analysis.bursts import burst_recovery_detail
from services.analysis.sustain import point_result_from_summary, search_sustainable
from services.generator.workloads import build_schedule, parse_workload
from services.runner.experiment import Experiment
from services.runner.manifest import json_safe, write_manifest
from services.runner.orchestrator import PointRun, Stack, open_stack, run_point
from services.report import write_report_safely
from services.runner.resources import resource_summary


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
    with open_stack(exp, models_dir=models_dir, log=lambda m: console.print(f"[dim]{m}[/]")) as stack, \
            Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                     TimeElapsedColumn(), console=console, transient=False) as progress:
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
    summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    summary["wall_s"] = round(time.time() - started, 1)
    _write_batches(out, runs)
    write_manifest(out, exp, runs, source_file)
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
    write_report_safely(out, console)  # report.html (services/report)
    return summary


class _PointRunner:
    def __init__(self, exp: Experiment, stack: Stack, out: Path, progress: Progress, runs: list):
        self.exp, self.stack, self.out, self.progress, self.runs = exp, stack, out, progress, runs
        self.index = 0

    def measure(self, exp: Experiment, params: dict, task=None) -> dict:
        """All repetitions of one point -> the point entry of summary.json."""
        reps = []
        label = _label(params)
        for rep in range(exp.repetitions):
            point_dir = self.out / "points" / f"{self.index:02d}-{label}" / f"rep-{rep}"
            desc = f"{label} rep {rep + 1}/{exp.repetitions}"
            self.progress.console.print(f"[cyan]point[/] {desc}")
            run = run_point(self.stack, exp, point_dir)
            self.runs.append((self.index, rep, run))
            rep_summary = summarize_run(exp, run, params)
            (point_dir / "point.json").write_text(json.dumps(json_safe(rep_summary), indent=2))
            reps.append(rep_summary)
            if task is not None:
                self.progress.advance(task)
        self.index += 1
        return combine_repetitions(reps)

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
                "precision": sc.precision, "criteria": {"rate_fraction": 0.98, "lag": "slope not rising",
                                                        "slo": {sc.slo_percentile: sc.slo_ms} if sc.slo_ms else None},
                "tried": [{"rate": p["rate"], "sustainable": p["sustainable"], "phase": p["phase"]}
                          for p in d.get("points", [])],
                "point_summaries": summaries}


def summarize_run(exp: Experiment, run: PointRun, params: dict) -> dict:
    """One repetition of one point: percentiles, throughput, accounting, validity, verdicts."""
    table = pq.read_table(run.dir / "batches.parquet")
    gen = run.generator
    wl = exp.workload
    target_rate = getattr(wl, "rate", None) if wl.type == "constant" else None
    if wl.type == "constant" and target_rate is None and getattr(wl, "period_s", None):
        target_rate = 1.0 / wl.period_s
    lag = pq.read_table(run.dir / "lag.parquet")
    lag_samples = list(zip((np.asarray(lag.column("t_ns")) / 1e9).tolist(), lag.column("lag").to_pylist()))
    slo = None
    if exp.search is not None and exp.search.slo_ms:
        slo = {exp.search.slo_percentile: exp.search.slo_ms}
    sent_rows = table.filter(pc.equal(table.column("sent"), True))
    status = sent_rows.column("status").to_pylist()
    accounting = {"sent": len(status), "scored": status.count("scored"),
                  "dead_lettered": status.count("dead_lettered"), "missing": status.count("missing"),
                  "duplicates": int(pc.sum(sent_rows.column("duplicates")).as_py() or 0),
                  "not_sent": table.num_rows - sent_rows.num_rows,
                  "checked": int((run.collector.get("predictions") or {}).get("checked", 0)),
                  "wrong": int((run.collector.get("predictions") or {}).get("wrong", 0))}
    point = summarize_point(
        sent_rows, {**params, "model": exp.model, "engine": exp.engine, "backend": exp.serving.backend,
                    "batch_size": exp.batch_size, "parallelism": exp.parallelism, "codec": exp.codec,
                    "workload": wl.type, "serving_kind": exp.serving.kind,
                    **({"server": exp.serving.server, "call_mode": exp.serving.call_mode,
                        "instances": exp.serving.instances or exp.parallelism}
                       if exp.serving.kind == "external" else {})},
        target_rate=target_rate, warmup=exp.warmup.fraction if exp.warmup.window_s is None else None,
        warmup_window_s=exp.warmup.window_s, min_duration_s=exp.validity.min_duration_s,
        min_count=exp.validity.min_count, rate_tolerance=exp.validity.rate_tolerance, slo=slo,
        lag_samples=lag_samples, accounting=accounting)
    point["params"] = {**params, **point.get("params", {})}
    point["generator"] = {k: gen.get(k) for k in ("target_rate_bps", "achieved_rate_bps", "processes",
                                                  "lateness_ms", "delivery_failures")}
    point["clock_skew_ms"] = run.collector.get("clock_skew")
    point["predictions"] = run.collector.get("predictions")
    if accounting["wrong"]:
        point["valid"] = False
        point["reasons"] = [*point.get("reasons", []), f"{accounting['wrong']} of {accounting['checked']} "
                            "checked predictions differ from the reference model"]
    kept = max(1, accounting["scored"])
    point["resources"] = {"worker_cpu_s": run.worker_cpu_s,
                          "worker_cpu_per_batch_us": run.worker_cpu_s / kept * 1e6,
                          **resource_summary(run.dir)}  # {service: {cpu_mean_pct, cpu_max_pct, rss_max_mb}}
    point["hops_ms"] = hop_breakdown(sent_rows)
    point["hops_traced"] = traced_hops(run.dir)
    # Which server actually answered (external serving), as the worker recorded it per batch.
    point["answered_by"] = sorted({v for v in sent_rows.column("server").to_pylist() if v})
    point["run_id"] = run.run_id
    point["dir"] = str(run.dir)
    if target_rate:
        point["search_ok"] = bool(point.get("valid")) and bool((point.get("sustainable") or {}).get("ok"))
    if wl.type == "bursty":
        point["bursts"] = bursts_recovery(exp, sent_rows, gen)
        point["recovery_s"] = [b["recovery_s"] for b in point["bursts"]]
    return point


def bursts_recovery(exp: Experiment, rows: pa.Table, gen: dict) -> list:
    schedule = build_schedule(exp.workload, exp.seed)
    ok = np.array([s == "scored" for s in rows.column("status").to_pylist()])
    out_ms = np.asarray(rows.column("output_append_ms").fill_null(0))[ok].astype(np.float64)
    created = np.asarray(rows.column("created_ns").fill_null(0))[ok].astype(np.float64)
    order = np.argsort(out_ms, kind="stable")
    latency = out_ms - created / 1e6
    return burst_recovery_detail(out_ms[order], latency[order], schedule.bursts,
                                 window_s=exp.bursts.window_s, hold_s=exp.bursts.hold_s,
                                 tolerance=exp.bursts.tolerance, abs_tolerance_ms=exp.bursts.abs_tolerance_ms,
                                 baseline_s=exp.bursts.baseline_s, one_sided=True, origin_ms=(gen.get("t0_ns") or 0) / 1e6)


def hop_breakdown(rows: pa.Table) -> dict:
    """Median per-hop times (ms) from the broker stamps and the worker's own stamps.

    produce = input append - created; wait = worker receive - input append;
    decode / score / encode from the worker's perf counters; publish = output append - worker send.
    Broker stamps have 1 ms resolution, so produce/wait/publish are +-1 ms each; the per-hop medians
    need not add up to the e2e median (the per-hop spans of the tracing layer do)."""
    ok = np.array([s == "scored" for s in rows.column("status").to_pylist()])
    if not ok.any():
        return {}

    def col(name):
        return np.asarray(rows.column(name).fill_null(0))[ok].astype(np.float64)

    created, inp = col("created_ns") / 1e6, col("input_append_ms")
    recv, send, outp = col("worker_receive_ns") / 1e6, col("worker_send_ns") / 1e6, col("output_append_ms")
    hops = {"produce": inp - created, "wait": recv - inp, "decode": col("decode_ns") / 1e6,
            "score": col("inference_ns") / 1e6, "encode": col("encode_ns") / 1e6,
            "publish": outp - send, "e2e": outp - created}
    return {k: {"p50": float(np.median(v)), "mean": float(np.mean(v))} for k, v in hops.items()}


def traced_hops(point_dir: Path) -> dict | None:
    """Per-hop breakdown of the traced (sampled) batches: spans joined with the broker stamps."""
    from observability.hops import hop_breakdown as traced

    if not (point_dir / "spans").is_dir():
        return None
    try:
        return traced(point_dir)
    except Exception as exc:  # noqa: BLE001 - the breakdown is extra; the point stays valid
        return {"error": f"{type(exc).__name__}: {exc}"}


def combine_repetitions(reps: list[dict]) -> dict:
    """The point entry: the repetition itself when there is one; else means, with ``sd`` beside."""
    if len(reps) == 1:
        point = dict(reps[0])
        point["repetitions"] = 1
        return point
    agg = aggregate_repetitions(reps)
    mean, sd = _split_mean_sd(agg)
    point = {**mean, "params": reps[0]["params"], "sd": sd, "repetitions": len(reps),
             "valid": all(r.get("valid") for r in reps),
             "reasons": sorted({x for r in reps for x in r.get("reasons", [])}),
             "per_repetition": reps}
    if any("search_ok" in r for r in reps):
        point["search_ok"] = all(r.get("search_ok") for r in reps)
        point["sustainable"] = {"ok": point["search_ok"],
                                "reasons": sorted({x for r in reps for x in (r.get("sustainable") or {}).get("reasons", [])})}
    if any("recovery_s" in r for r in reps):
        point["recovery_s"] = [r.get("recovery_s") for r in reps]
    return point


def _split_mean_sd(node):
    if isinstance(node, dict) and set(node) >= {"mean", "sd", "n"} and not isinstance(node["mean"], dict):
        return node["mean"], node["sd"]
    if isinstance(node, dict):
        m, s = {}, {}
        for k, v in node.items():
            if k in ("params", "reasons", "repetitions", "used", "valid", "valid_count"):
                continue
            mv, sv = _split_mean_sd(v)
            m[k] = mv
            if sv is not None:
                s[k] = sv
        return m, s
    return node, None


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
