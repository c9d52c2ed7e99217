"""``crayfish conformance``: the engine conformance checks against any adapter, as a table."""

from __future__ import annotations

import shlex
import tempfile
from contextlib import ExitStack
from pathlib import Path

import typer

from services.conformance.adapters import EngineAdapter, ExternalAdapter
from services.conformance.suite import run_suite, table
from serving.models import build_model, default_models_dir
from sps_workers import ENGINES
from sps_workers.options import EngineOptionsError


def conformance(
    engine: str = typer.Option(..., help="A registered engine (kafka, flink, ..., command) or external."),
    command: str | None = typer.Option(None, help="engine command: the program and its arguments, one string "
                                          "(shell quoting), e.g. \"java -jar my-job.jar --config @${CRAYFISH_WORKER_SETTINGS}\"."),
    ready: str = typer.Option("group", help="engine command: ready when its consumers hold every input partition "
                              "(group) or when it created $CRAYFISH_READY_FILE (file)."),
    env: list[str] = typer.Option([], help="engine command: KEY=VALUE for the program's environment (repeatable)."),
    input_topic: str | None = typer.Option(None, "--input", help="engine external: the topic the pipeline reads."),
    output_topic: str | None = typer.Option(None, "--output", help="engine external: the topic it writes scored batches to."),
    dead_letter_topic: str | None = typer.Option(None, "--dead-letter", help="engine external: its dead-letter topic."),
    bootstrap: str | None = typer.Option(None, help="Kafka bootstrap servers (default: start a local broker; "
                                            "required for external)."),
    scoring_service: bool = typer.Option(False, help="Also check external serving through our Scoring server."),
    check: list[str] = typer.Option([], help="Run only these checks (repeatable; names as in the table)."),
    timeout_s: float = typer.Option(120.0, help="How long to wait for the outputs of each round."),
):
    """Run the engine conformance checks against an adapter; exit 0 only when every check passes."""
    from services.broker import launcher

    err = typer.echo
    options: dict = {}
    if engine == "external":
        if not (input_topic and output_topic and dead_letter_topic and bootstrap):
            err("error: engine external needs --bootstrap, --input, --output and --dead-letter", err=True)
            raise typer.Exit(2)
    elif engine not in ENGINES:
        err(f"error: --engine: unknown engine {engine!r}; known: {', '.join(sorted(ENGINES))}, external", err=True)
        raise typer.Exit(2)
    elif engine == "command":
        pairs = [e.split("=", 1) for e in env]
        if any(len(p) != 2 or not p[0] for p in pairs):
            err("error: --env: expected KEY=VALUE", err=True)
            raise typer.Exit(2)
        options = {"command": shlex.split(command or ""), "ready": ready, "env": dict(pairs)}
    if engine != "external":
        try:
            ENGINES[engine].check_options(options)
        except EngineOptionsError as exc:
            err(f"error: {exc}", err=True)
            raise typer.Exit(2)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="crayfish-conformance-") as tmp:
        workdir = Path(tmp)
        models_dir = default_models_dir()
        build_model("ffnn", models_dir)
        if bootstrap is None:
            broker = launcher.start()
            stack.callback(launcher.stop, broker)
            bootstrap = broker.bootstrap
        if engine == "external":
            adapter = ExternalAdapter(bootstrap, input_topic, output_topic, dead_letter_topic)
        else:
            adapter = EngineAdapter(bootstrap, models_dir, workdir, engine, options)
        results = run_suite(adapter, bootstrap, models_dir, workdir, timeout_s=timeout_s,
                            scoring_service=scoring_service, only=set(check) or None)
    typer.echo(f"conformance of {adapter.name}" + (f" ({command})" if command else ""))
    typer.echo(table(results))
    if not all(r.passed for r in results):
        raise typer.Exit(1)
