"""The ``crayfish`` command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Crayfish Mesh: benchmark ML inference in stream-processing pipelines.")
broker_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (single node, KRaft).")
models_app = typer.Typer(no_args_is_help=True, help="The model zoo (built locally from seeded weights).")
env_app = typer.Typer(no_args_is_help=True, help="Per-service Python environments (built on demand, cached).")
app.add_typer(env_app, name="env")
app.add_typer(broker_app, name="broker")
app.add_typer(models_app, name="models")
console = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True, width=400)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _stop_cleanly_on_sigterm() -> None:
    """SIGTERM (kill, a CI timeout, systemd) unwinds like Ctrl-C: every ``finally`` of the run stops
    its worker, generator, collector, model server and broker instead of leaving them running."""
    import signal

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


@app.command()
def run(file: Path = typer.Argument(..., help="Experiment YAML file."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/<name>-<time>)."),
        bootstrap: Optional[str] = typer.Option(None, help="Use this Kafka cluster instead of starting one."),
        stack: Optional[Path] = typer.Option(None, "--stack", metavar="STATE_FILE",
                                             help="Run against the native stack of `make up` (its state file or "
                                                  "folder, e.g. .cache/stack/stack.json): its Kafka, and spans "
                                                  "over OTLP to its Jaeger.")):
    """Run an experiment and write summary.json, batches.parquet and manifest.json."""
    from services.runner.experiment import ExperimentError, load_experiment
    from services.runner.experiments import run_experiment
    from services.runner.report import print_summary

    try:
        exp = load_experiment(file)
    except ExperimentError as exc:
        _fail(str(exc))
    if bootstrap:
        exp.kafka.bootstrap = bootstrap
    if stack:
        import os

        from services.stack import StackError, stack_endpoints

        try:
            endpoints = stack_endpoints(stack)
        except StackError as exc:
            _fail(str(exc))
        exp.kafka.bootstrap = bootstrap or endpoints["kafka_bootstrap"]
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoints["otlp_grpc"]  # inherited by every service started
    out = out or Path("runs") / f"{exp.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    from services.broker.launcher import BrokerError
    from services.runner.processes import ServiceError

    _stop_cleanly_on_sigterm()
    try:
        summary = run_experiment(exp, out, console=console, source_file=file)
    except (BrokerError, ServiceError, RuntimeError) as exc:
        _fail(f"run failed: {exc}\n(logs of each service are in {out}/points/*/*/*.log)")
    print_summary(summary, console)
    console.print(f"\nrun folder: [bold]{out}[/]  (summary.json, batches.parquet, manifest.json)")


@app.command()
def hops(run_dir: Path = typer.Argument(..., help="A run folder written by `crayfish run`.")):
    """Where the milliseconds went: per-hop p50/p99 of the traced batches of every point."""
    import json

    from rich.table import Table

    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        _fail(f"{run_dir}: no summary.json (not a run folder?)")
    summary = json.loads(summary_path.read_text())
    shown = 0
    for i, p in enumerate(summary.get("points", [])):
        h = p.get("hops_traced")
        if not h or "hops_ms" not in h:
            continue
        shown += 1
        t = Table(title=f"point {i} {p.get('params', {})}: {h.get('batches')} traced batches, "
                        f"bottleneck {h.get('bottleneck')} ({h.get('bottleneck_ms', 0):.2f} ms)")
        for col in ("hop", "p50 ms", "p99 ms", "mean ms", "from"):
            t.add_column(col, justify="right")
        for hop, v in h["hops_ms"].items():
            src = h.get("source", {}).get(hop)
            t.add_row(hop, f"{v.get('p50', 0):.3f}", f"{v.get('p99', 0):.3f}", f"{v.get('mean', 0):.3f}",
                      "spans" if src and src.get("spans") else ("broker+worker stamps" if hop != "e2e" else ""))
            if hop == "score":
                parts = h.get("score_parts_ms") or {}
                for part in ("client", "server_queue", "inference"):
                    pv = parts.get(part)
                    if pv:
                        t.add_row(f"  score.{part}", f"{pv['p50']:.3f}", f"{pv['p99']:.3f}", f"{pv['mean']:.3f}",
                                  "server spans" if parts.get("source", {}).get("spans") else "server-reported")
        console.print(t)
        sc = h.get("sum_check", {})
        console.print(f"hops sum to {sc.get('hops_sum_mean_ms', 0):.3f} ms vs e2e {sc.get('e2e_mean_ms', 0):.3f} ms "
                      f"(residual {100 * sc.get('residual_frac', 0):.2f} %, {'ok' if sc.get('ok') else 'NOT within 5 %'})")
    if not shown:
        _fail(f"{run_dir}: no traced batches (set trace_sample in the experiment, or OTEL_TRACES_SAMPLER)")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder written by `crayfish run`."),
           out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default RUN_DIR/report.html).")):
    """Write the run's self-contained HTML report (charts, tables, verdicts, resources, manifest)."""
    from services.report import write_report

    if not (run_dir / "summary.json").exists():
        _fail(f"{run_dir}: no summary.json (not a run folder?)")
    console.print(f"report: [bold]{write_report(run_dir, out)}[/]")


@app.command()
def compare(run_a: Path = typer.Argument(..., help="Run folder A (the reference)."),
            run_b: Path = typer.Argument(..., help="Run folder B (ratios are B/A)."),
            out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default RUN_B/compare-<A name>.html).")):
    """Differences per matching point (throughput, latency percentiles, per-hop medians, validity; B/A)."""
    from services.report.compare import compare_runs, default_out, print_comparison, write_comparison_html

    for d in (run_a, run_b):
        if not (d / "summary.json").exists():
            _fail(f"{d}: no summary.json (not a run folder?)")
    result = compare_runs(run_a, run_b)
    print_comparison(result, console)
    console.print(f"comparison: [bold]{write_comparison_html(result, out or default_out(run_a, run_b))}[/]")


@app.command()
def validate(file: Path = typer.Argument(..., help="Experiment YAML file.")):
    """Check an experiment file without running it."""
    from services.runner.experiment import ExperimentError, load_experiment

    try:
        exp = load_experiment(file)
    except ExperimentError as exc:
        _fail(str(exc))
    console.print(f"{file}: ok ({len(exp.points())} point(s){', + search' if exp.search else ''})")


@broker_app.command("start")
def broker_start():
    """Start a local broker in the background; prints its bootstrap address."""
    from services.broker import launcher

    existing = launcher.read_state()
    if existing is not None:
        try:
            launcher.wait_ready(existing.bootstrap, timeout_s=3)
            console.print(existing.bootstrap)
            return
        except launcher.BrokerError:
            launcher.clear_state()
    handle = launcher.start()
    console.print(handle.bootstrap)


@broker_app.command("stop")
def broker_stop():
    """Stop the broker started by `crayfish broker start`."""
    from services.broker import launcher

    handle = launcher.read_state()
    if handle is None:
        console.print("no broker running")
        return
    launcher.stop(handle)
    launcher.clear_state()
    console.print(f"stopped broker at {handle.bootstrap}")


@broker_app.command("status")
def broker_status():
    """Say whether the background broker answers."""
    from services.broker import launcher

    handle = launcher.read_state()
    if handle is None:
        console.print("no broker running")
        raise typer.Exit(1)
    try:
        launcher.wait_ready(handle.bootstrap, timeout_s=3)
    except launcher.BrokerError:
        console.print(f"broker at {handle.bootstrap} does not answer")
        raise typer.Exit(1)
    console.print(f"broker at {handle.bootstrap} is ready")


@models_app.command("build")
def models_build(model: str = typer.Option("all", help="ffnn | resnet50 | all"),
                 seed: int = typer.Option(42, help="Seed of the weights."),
                 dir: Optional[Path] = typer.Option(None, help="Models folder (default .cache/models).")):
    """Build the models (seeded weights -> .npz -> ONNX with a dynamic batch axis)."""
    from serving.models import MODELS, build_model, default_models_dir

    names = list(MODELS) if model == "all" else [model]
    for name in names:
        if name not in MODELS:
            _fail(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        art = build_model(name, Path(dir or default_models_dir()), seed=seed)
        console.print(f"{name}: {art.onnx}")


@env_app.command("list")
def env_list():
    """List the environments and whether they are built."""
    from services.runner import environments as envs

    for name in envs.available():
        state = "built" if envs.is_built(name) else "not built"
        console.print(f"{name:12s} {state:10s} {envs.env_dir(name) if name != 'core' else sys.prefix}")


@env_app.command("build")
def env_build(names: list[str] = typer.Argument(..., help="Environment names, or 'all'."),
              force: bool = typer.Option(False, help="Rebuild even when cached.")):
    """Build environments (virtualenv + pinned requirements + this repo, editable)."""
    from services.runner import environments as envs

    wanted = [n for n in envs.available() if n != "core"] if names == ["all"] else names
    for name in wanted:
        if name == "core":
            continue
        if name not in envs.available():
            _fail(f"unknown environment {name!r}; known: {', '.join(envs.available())}")
        envs.build_env(name, force=force, log=lambda m: console.print(f"[dim]{m}[/]"))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
