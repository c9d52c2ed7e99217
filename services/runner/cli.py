"""The ``crayfish`` command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import psutil
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crayfish.host import envs
from crayfish.host.procs import ServiceError
from services.runner.experiment import ExperimentError, format_validation_error, load_experiment
from services.conformance.cli import conformance
from services.runner.report import print_summary
from services.stack import StackError, stack_endpoints
from serving.models import MODELS, ModelFileError, build_model, default_models_dir, read_signature
from serving.models.files import default_name, spec_from_signature

# The modules that need Kafka or pyarrow (the broker launcher, the experiment runner, the reports)
# are imported inside the commands that use them: `crayfish validate` and --help stay fast.

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Crayfish Mesh: benchmark ML inference in stream-processing pipelines.")
broker_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (single node, KRaft).")
models_app = typer.Typer(no_args_is_help=True, help="The model zoo (built locally from seeded weights).")
env_app = typer.Typer(no_args_is_help=True, help="Per-service Python environments (built on demand, cached).")
app.add_typer(env_app, name="env")
app.add_typer(broker_app, name="broker")
app.add_typer(models_app, name="models")
app.command()(conformance)
console = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True, width=400)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load(file: Path):
    """The experiment of ``file``, every sweep point of it validated too (a bad sweep value would
    otherwise fail mid-run, after the broker started); any problem ends the command with one line:
    ``error: FILE: <field>: <what is wrong>`` (engine options, backend options and names of engines,
    models and codecs included), exit code 2."""
    try:
        exp = load_experiment(file)
    except ExperimentError as exc:
        _fail(str(exc))
    except UnicodeDecodeError:
        _fail(f"{file}: not UTF-8 text (an experiment file is YAML)")
    except OSError as exc:  # a folder, no permission, ...
        _fail(f"{file}: cannot read: {exc.strerror or exc}")
    for params in exp.points():
        try:
            exp.with_overrides(params)
        except ValidationError as exc:
            point = ", ".join(f"{k}={v}" for k, v in params.items())
            _fail(f"{file}: sweep point {point}: {format_validation_error(exc)}")
    return exp


def _external_targets(exp) -> set[tuple[str, str]]:
    """(server, target) of every point that calls an already running model server."""
    found = set()
    for params in exp.points():
        sv = exp.with_overrides(params).serving
        if sv.kind == "external" and sv.target:
            found.add((sv.server, sv.target))
    return found


def _check_server(server: str, target: str, timeout_s: float = 10.0) -> None:
    """Fail in one line unless something listens at ``target`` (else every batch of the run would be
    dead-lettered with connection errors and the run would still end with exit code 0)."""
    host, sep, port = target.split("://", 1)[-1].rstrip("/").rpartition(":")
    if not (sep and host and port.isdigit()):
        return  # not host:port (e.g. a unix socket); the client reports what is wrong
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                _fail(f"model server {server} at {target} does not answer ({exc.strerror or exc}; "
                      f"waited {timeout_s:.0f} s)")
        time.sleep(0.2)


def _check_bootstrap(bootstrap: str, client=None, timeout_s: float = 10.0) -> None:
    """Fail in one line, within ``timeout_s``, unless a Kafka broker of ``bootstrap`` answers (instead
    of a traceback from the first topic creation of the run, 30 s later)."""
    # lazy: the launcher pulls in confluent_kafka
    from services.broker.launcher import BrokerError, wait_ready

    servers = [x.strip() for x in bootstrap.split(",")]
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not (sep and host and port.isdigit()):
            _fail(f"Kafka bootstrap {bootstrap!r}: expected host:port[,host:port ...]")
    for server in servers:
        try:
            wait_ready(server, timeout_s=timeout_s / len(servers), client=client)
            return
        except BrokerError:
            continue
    refused = " or it refused this client: check kafka.client" if client else ""
    _fail(f"Kafka at {bootstrap} does not answer (nothing listening there, or not a Kafka broker{refused}; "
          f"waited {timeout_s:.0f} s)")


def _summary_of(run_dir: Path) -> dict:
    """The parsed summary.json of a run folder; a folder without a readable one fails in one line."""
    path = run_dir / "summary.json"
    if not path.is_file():
        _fail(f"{run_dir}: no summary.json (not a run folder?)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        _fail(f"{path}: not a readable summary ({str(exc).splitlines()[0]})")


def _stop_cleanly_on_sigterm() -> None:
    """SIGTERM (kill, a CI timeout, systemd) unwinds like Ctrl-C: every ``finally`` of the run stops
    its worker, generator, collector, model server and broker instead of leaving them running."""
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
    # lazy: Kafka and pyarrow, which `crayfish validate` does not need
    from confluent_kafka import KafkaException

    # lazy: as above
    from crayfish.kafka import TopicsError
    from services.broker.launcher import BrokerError
    from services.runner.experiments import run_experiment
    from services.runner.pipeline import PipelineNotReady

    exp = _load(file)
    if bootstrap:
        exp.kafka.bootstrap = bootstrap
    if stack:
        try:
            endpoints = stack_endpoints(stack)
        except StackError as exc:
            _fail(str(exc))
        exp.kafka.bootstrap = bootstrap or endpoints["kafka_bootstrap"]
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoints["otlp_grpc"]  # inherited by every service started
    if exp.kafka.bootstrap:
        _check_bootstrap(exp.kafka.bootstrap, exp.kafka.client_settings())
    for server, target in sorted(_external_targets(exp)):
        _check_server(server, target)
    out = out or Path("runs") / f"{exp.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _stop_cleanly_on_sigterm()
    try:
        summary = run_experiment(exp, out, console=console, source_file=file)
    except (PipelineNotReady, TopicsError) as exc:   # the cluster's answer: nothing in the logs to read
        _fail(f"run failed: {exc}")
    except (BrokerError, ServiceError, RuntimeError, KafkaException, TimeoutError) as exc:
        _fail(f"run failed: {exc}\n(what was measured is in {out}/summary.json; "
              f"the logs of each service in {out}/points/*/*/*.log)")
    print_summary(summary, console)
    console.print(f"\nrun folder: [bold]{out}[/]  (summary.json, batches.parquet, manifest.json)")


def _join(role: str, run_id: str, bootstrap: str, host: Optional[str], client_file: Optional[Path],
          out: Optional[Path], models_dir: Optional[Path] = None) -> None:
    """Take part in run ``run_id`` as one ``role`` (docs/clusters.md, "Load from several hosts"); every failure ends in one line."""
    # lazy: Kafka and pyarrow
    from crayfish.kafka_client import KafkaClient, KafkaClientError
    from crayfish.run_control import RunControlError
    from crayfish.run_join import JoinedRun
    from services.collector.joined import join as join_collector
    from services.generator.joined import Stopped
    from services.generator.joined import join as join_generator

    client = KafkaClient(properties_file=str(client_file) if client_file else None)
    try:
        client.check()
    except KafkaClientError as exc:
        _fail(f"--client-file: {exc}")
    _check_bootstrap(bootstrap, client or None)
    run = None
    try:
        run = JoinedRun(run_id, role, bootstrap, client, host)
        folder = out or Path("runs") / "joined" / f"{run_id}-{role}-{run.host}"
        if role == "generator":
            report = join_generator(run, bootstrap, client, folder)
            done = f"produced {report['produced']} batches"
        else:
            report = join_collector(run, bootstrap, client, folder, models_dir or default_models_dir())
            done = f"read {report['records_read']} records"
    except Stopped as exc:
        err.print(f"{role} of run {run_id}: {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(143)
    except RunControlError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (the part's files say more)
        _fail(f"{role} of run {run_id} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        if run is not None:
            run.close()
    console.print(f"{role} {report['part']} of run {run_id} on {report['host']}: {done} (files in {folder})",
                  highlight=False)


JOIN = typer.Option(..., "--join", metavar="RUN_ID", help="The run to join: its id, as the runner logs it with the join commands.")
JOIN_BOOTSTRAP = typer.Option(..., "--bootstrap", help="Kafka bootstrap servers, as this host reaches them.")
JOIN_HOST = typer.Option(None, "--host", help="The name this host goes by in the results (default: its host name).")
JOIN_CLIENT = typer.Option(None, "--client-file", help="This host's Kafka client .properties file (security; the runner's properties are not used here).")
JOIN_OUT = typer.Option(None, "--out", help="Folder for this part's own files (default runs/joined/RUN_ID-ROLE-HOST).")


@app.command()
def generator(join: str = JOIN, bootstrap: str = JOIN_BOOTSTRAP, host: Optional[str] = JOIN_HOST,
              client_file: Optional[Path] = JOIN_CLIENT, out: Optional[Path] = JOIN_OUT):
    """Join a run from this host as one of its generators (experiment `hosts`): probe this host's
    clock skew, send its share of the workload, hand its records to the runner."""
    _join("generator", join, bootstrap, host, client_file, out)


@app.command()
def collector(join: str = JOIN, bootstrap: str = JOIN_BOOTSTRAP, host: Optional[str] = JOIN_HOST,
              client_file: Optional[Path] = JOIN_CLIENT, out: Optional[Path] = JOIN_OUT,
              models_dir: Optional[Path] = typer.Option(None, "--models-dir", help="Built models on this host, for the prediction check (default .cache/models).")):
    """Join a run from this host as one of its collectors (experiment `hosts`): read its share of
    the output and dead-letter partitions until the runner stops it, hand the records to the runner."""
    _join("collector", join, bootstrap, host, client_file, out, models_dir)


@app.command()
def hops(run_dir: Path = typer.Argument(..., help="A run folder written by `crayfish run`.")):
    """Where the milliseconds went: per-hop p50/p99 of the traced batches of every point."""
    summary = _summary_of(run_dir)
    shown = 0
    for i, p in enumerate(summary.get("points", [])):
        h = p.get("hops_traced")
        if not h or "hops_ms" not in h:
            continue
        shown += 1
        neck = (f"bottleneck {h['bottleneck']} ({h['bottleneck_ms']:.2f} ms)" if h.get("bottleneck_ms") is not None
                else "no bottleneck: the worker's hops are absent")
        t = Table(title=f"point {i} {p.get('params', {})}: {h.get('batches')} traced batches, {neck}")
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
        for hop in h.get("absent", []):
            t.add_row(hop, "absent", "absent", "absent", "its stamps are missing from the outputs")
        console.print(t)
        sc = h.get("sum_check", {})
        if sc.get("complete_batches", 1) == 0 or not sc:
            console.print("hops not summed: no traced batch has every hop (absent stamps)")
            continue
        residual = 100 * (sc.get("residual_frac") or 0)  # None when the mean e2e is 0
        console.print(f"hops sum to {sc.get('hops_sum_mean_ms', 0):.3f} ms vs e2e {sc.get('e2e_mean_ms', 0):.3f} ms "
                      f"(residual {residual:.2f} %, {'ok' if sc.get('ok') else 'NOT within 5 %'})")
    if not shown:
        _fail(f"{run_dir}: no traced batches (set trace_sample in the experiment, or OTEL_TRACES_SAMPLER)")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder written by `crayfish run`."),
           out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default RUN_DIR/report.html).")):
    """Write the run's self-contained HTML report (charts, tables, verdicts, resources, manifest)."""
    # lazy: the report pulls in pyarrow
    from services.report import write_report

    _summary_of(run_dir)
    console.print(f"report: [bold]{write_report(run_dir, out)}[/]")


@app.command()
def compare(run_a: Path = typer.Argument(..., help="Run folder A (the reference)."),
            run_b: Path = typer.Argument(..., help="Run folder B (ratios are B/A)."),
            out: Optional[Path] = typer.Option(None, "--out", help="HTML file (default RUN_B/compare-<A name>.html).")):
    """Differences per matching point (throughput, latency percentiles, per-hop medians, validity; B/A)."""
    # lazy: the report pulls in pyarrow
    from services.report.compare import compare_runs, default_out, print_comparison, write_comparison_html

    for d in (run_a, run_b):
        _summary_of(d)
    result = compare_runs(run_a, run_b)
    print_comparison(result, console)
    console.print(f"comparison: [bold]{write_comparison_html(result, out or default_out(run_a, run_b))}[/]")


@app.command()
def validate(file: Path = typer.Argument(..., help="Experiment YAML file.")):
    """Check an experiment file without running it."""
    exp = _load(file)
    console.print(f"{file}: ok ({len(exp.points())} point(s){', + search' if exp.search else ''})")


def _background_state_dir() -> Path:
    """Where the background broker's state lives. Not the launcher's default folder (.cache/broker):
    every broker started there (each `crayfish run` without --bootstrap, the test session, the
    benchmarks) rewrites that state file, which would hide the background broker from `status` and
    `stop` and leave it running."""
    from services.broker import launcher  # lazy: confluent_kafka

    return launcher.default_state_dir() / "background"


def _broker_alive(handle) -> bool:
    """Whether the process of ``handle`` still is that broker (not exited, its pid not reused)."""
    try:
        proc = psutil.Process(handle.pid)
        cmdline = proc.cmdline()
        zombie = proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
    return not zombie and "kafka.Kafka" in cmdline and str(Path(handle.data_dir) / "server.properties") in cmdline


def _forget_broker(handle) -> None:
    from services.broker import launcher  # lazy: confluent_kafka

    launcher.clear_state(_background_state_dir())
    shutil.rmtree(handle.data_dir, ignore_errors=True)


@broker_app.command("start")
def broker_start():
    """Start a local broker in the background; prints its bootstrap address."""
    from services.broker import launcher  # lazy: confluent_kafka

    state = _background_state_dir()
    existing = launcher.read_state(state)
    if existing is not None:
        if _broker_alive(existing):
            try:
                launcher.wait_ready(existing.bootstrap, timeout_s=3)
                console.print(existing.bootstrap)
                return
            except launcher.BrokerError:
                launcher.stop(existing)  # running but not answering: replace it
        _forget_broker(existing)
    try:
        handle = launcher.start(state_dir=state)
    except launcher.BrokerError as exc:
        _fail(f"the broker did not start: {str(exc).splitlines()[0]} (logs under {state})")
    except subprocess.CalledProcessError as exc:
        _fail(f"fetching the Kafka jars failed: {' '.join(map(str, exc.cmd[:2]))} ... exited with {exc.returncode}")
    console.print(handle.bootstrap)


@broker_app.command("stop")
def broker_stop():
    """Stop the broker started by `crayfish broker start` (exit 0 also when none runs)."""
    from services.broker import launcher  # lazy: confluent_kafka

    handle = launcher.read_state(_background_state_dir())
    if handle is None:
        console.print("no broker running")
        return
    if not _broker_alive(handle):
        _forget_broker(handle)
        console.print(f"no broker running (the one at {handle.bootstrap} had exited)")
        return
    launcher.stop(handle)
    launcher.clear_state(_background_state_dir())
    console.print(f"stopped broker at {handle.bootstrap}")


@broker_app.command("status")
def broker_status():
    """Say whether the background broker answers (exit 0), or not (exit 1)."""
    from services.broker import launcher  # lazy: confluent_kafka

    handle = launcher.read_state(_background_state_dir())
    if handle is None:
        console.print("no broker running")
        raise typer.Exit(1)
    if not _broker_alive(handle):
        console.print(f"no broker running (the one at {handle.bootstrap} has exited)")
        raise typer.Exit(1)
    try:
        launcher.wait_ready(handle.bootstrap, timeout_s=3)
    except launcher.BrokerError:
        console.print(f"broker at {handle.bootstrap} does not answer")
        raise typer.Exit(1)
    console.print(f"broker at {handle.bootstrap} is ready")


@models_app.command("build")
def models_build(model: str = typer.Option("all", help="A built-in model (serving.models.MODELS: ffnn, ...), a model of the zoo (fraud-gbt, text-encoder: built on demand, in its framework's environment), or all (the built-in ones)."),
                 seed: int = typer.Option(42, help="Seed of the weights (and of the zoo's training data)."),
                 dir: Optional[Path] = typer.Option(None, help="Models folder (default .cache/models).")):
    """Build the models (seeded weights -> .npz -> ONNX with a dynamic batch axis; the zoo's by
    their own frameworks, in their environments)."""
    from serving.models.zoo import ZOO, build_zoo_model

    names = list(MODELS) if model == "all" else [model]
    for name in names:
        if name not in MODELS and name not in ZOO:
            _fail(f"unknown model {name!r}; known: {', '.join([*MODELS, *ZOO])}")
        models_dir = Path(dir or default_models_dir())
        try:
            if name in ZOO:
                console.print(f"{name}: {build_zoo_model(name, models_dir, seed=seed).parent / f'{name}.onnx'}")
                continue
            art = build_model(name, models_dir, seed=seed)
        except OSError as exc:
            _fail(f"cannot write the models to {dir or default_models_dir()}: {exc.strerror or exc}")
        console.print(f"{name}: {art.onnx}")


@models_app.command("describe")
def models_describe(file: Path = typer.Argument(..., help="A model file of your own (ONNX)."),
                    name: Optional[str] = typer.Option(None, help="The name it would be served under.")):
    """Print the signature read from a model file, and what an experiment with `model: {path: FILE}`
    would serve (or, in one line, why it cannot)."""
    try:
        sig = read_signature(file)
        console.print(sig.describe(), highlight=False)
        spec = spec_from_signature(sig, name or default_name(file))
    except ModelFileError as exc:
        _fail(str(exc))
    def item(tensors):
        return ", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in tensors)

    contract = "named tensors (DataBatch.inputs)" if spec.named else "a single tensor (DataBatch.input)"
    console.print(f"served as {spec.name!r}: one item {item(spec.inputs)} -> {item(spec.outputs)}; "
                  f"travels as {contract}; reference: ONNX Runtime on the CPU on this file", highlight=False)


@env_app.command("list")
def env_list():
    """List the environments and whether they are built."""
    for name in envs.available():
        state = "built" if envs.is_built(name) else "not built"
        console.print(f"{name:12s} {state:10s} {envs.env_dir(name) if name != 'core' else sys.prefix}")


@env_app.command("build")
def env_build(names: list[str] = typer.Argument(..., help="Environment names, or 'all'."),
              force: bool = typer.Option(False, help="Rebuild even when cached.")):
    """Build environments (virtualenv + pinned requirements + this repo, editable)."""
    wanted = [n for n in envs.available() if n != "core"] if names == ["all"] else names
    for name in wanted:
        if name == "core":
            continue
        if name not in envs.available():
            _fail(f"unknown environment {name!r}; known: {', '.join(envs.available())}")
        try:
            envs.build_env(name, force=force, log=lambda m: console.print(f"[dim]{m}[/]", highlight=False))
        except envs.EnvironmentError_ as exc:
            _fail(str(exc))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
