"""Run one measured point: fresh topics, worker, collector, generator, then stop everything.

Order and readiness (never fixed sleeps):
  topics created and led -> worker started, consumer group Stable with all partitions assigned ->
  collector started, ``collector.ready`` -> generator probes the clock skew, runs the workload ->
  generator writes ``sent.parquet`` -> collector drains until every sent batch is accounted for
  (or ``drain_idle_s`` passes without news) -> worker stopped (its CPU time read first).
With experiment ``hosts``, generators and collectors join from other hosts instead of being started
here (``services.runner.hosts``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from crayfish.host.envs import python_for
from crayfish.host.procs import Service, wait_file
from crayfish.kafka import RunTopics, create_topics, delete_topics
from crayfish.kafka_client import KafkaClient
from observability.light import SPANS_DIR_ENV
from services.broker import launcher
from services.collector.collector import CollectorSettings
from services.generator.settings import GeneratorSettings, input_tensors
from services.runner.experiment import EXTERNAL_PIPELINE, Experiment
from services.runner.hosts import joins_from_hosts, run_joined
from services.runner.pipeline import (
    check_precreated,
    partitions_of,
    pipeline_topics,
    start_at_end,
    timestamp_types,
    wait_for_probe,
)
from services.runner.resources import ResourceSampler
from serving.embedded import backend
from serving.external import server_spec, start_server
from serving.models import (
    build_model,
    default_models_dir,
    import_model_file,
    model_paths,
)
from serving.models.files import model_format
from serving.models.zoo import build_zoo_model
from sps_workers import ENGINES
from sps_workers.settings import ExternalSettings, WorkerSettings


@dataclass
class Stack:
    """What lives across points: the broker (and its clients' properties) and the built models."""

    bootstrap: str
    models_dir: Path
    broker: launcher.BrokerHandle | None = None
    client: KafkaClient = field(default_factory=KafkaClient)


@contextmanager
def open_stack(exp: Experiment, models_dir: Path | None = None, log=print):
    models_dir = Path(models_dir or default_models_dir())
    if exp.model_file is not None and exp.model_file.zoo is not None:
        build_zoo_model(exp.model_file.zoo, models_dir, seed=exp.seed, seq_len=exp.model_file.seq_len, log=log)
    elif exp.model_file is not None:
        log(f"model {exp.model}: importing {exp.model_file.path} into {models_dir}")
        import_model_file(exp.model_file.path, models_dir, exp.model, exp.model_file.overrides())
    else:
        log(f"model {exp.model}: building/checking in {models_dir}")
        build_model(exp.model, models_dir, seed=exp.seed)
        backend(exp.serving.backend).export(exp.model, models_dir, seed=exp.seed, log=log)
    broker = None
    bootstrap = exp.kafka.bootstrap
    if not bootstrap:
        log("starting a local Kafka broker (KRaft) ...")
        broker = launcher.start()
        bootstrap = broker.bootstrap
        log(f"Kafka ready at {bootstrap}")
    try:
        yield Stack(bootstrap=bootstrap, models_dir=models_dir, broker=broker, client=exp.kafka.client_settings())
    finally:
        if broker is not None:
            launcher.stop(broker)


@dataclass
class PointRun:
    """Where one measured repetition left its files, and what the services reported."""

    dir: Path
    run_id: str
    generator: dict
    collector: dict
    worker_cpu_s: float
    worker_exit: int | None
    timings: dict = field(default_factory=dict)


def run_point(stack: Stack, exp: Experiment, point_dir: Path, python: str | None = None,
              keep_topics: bool = False, log=print) -> PointRun:
    point_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:10]
    external = exp.engine == EXTERNAL_PIPELINE
    given = exp.kafka.topics is not None
    client = stack.client
    timings = {}
    t = time.monotonic()
    if given:
        # Topics that exist already (a running pipeline's, or pre-created): used as they are; only
        # a probe topic the user did not name is ours.
        topics = pipeline_topics(exp.kafka.topics, run_id)
        owned = [] if exp.kafka.topics.probe else [topics.probe]
        if not external:
            check_precreated(stack.bootstrap, topics, [topics.output] + ([topics.probe] if not owned else []), client)
        partitions = partitions_of(stack.bootstrap, topics.input, client)
    else:
        topics = RunTopics.for_run(run_id)
        partitions = max(exp.kafka.partitions, exp.parallelism)
        owned = topics.all()
    if owned:
        create_topics(stack.bootstrap, topics, partitions=partitions, only=owned, client=client,
                      replication_factor=exp.kafka.replication_factor, configs=exp.kafka.topic_configs)
    timings["topics_s"] = time.monotonic() - t

    group = exp.kafka.topics.group if external else f"crayfish-{run_id}-worker"
    # Shared topics: this run's worker starts at the input's end, under its own group.
    start_offsets = start_at_end(stack.bootstrap, topics.input, group, client) if given and not external else None
    services: list[Service] = []
    worker = collector = None
    server = None
    sampler = ResourceSampler(point_dir, services, broker=stack.broker)  # -> resources.parquet
    spec = model_paths(exp.model, stack.models_dir).built_spec()   # what was built, not a copy
    tenv = trace_env(exp, point_dir)
    try:
        t = time.monotonic()
        if external:
            (point_dir / "pipeline.json").write_text(json.dumps({
                "topics": exp.kafka.topics.model_dump(),
                "timestamp_types": timestamp_types(stack.bootstrap, [topics.input, topics.output], client)}, indent=2))
            wait_for_probe(stack.bootstrap, topics, exp.codec, exp.model, spec, run_id,
                           exp.kafka.topics.ready_timeout_s, named=sends_named(exp, spec), client=client)
        else:
            worker, server = _start_worker(exp, stack, point_dir, topics, group, partitions, services, timings,
                                           python, start_offsets)
        timings["worker_ready_s"] = time.monotonic() - t

        gs = GeneratorSettings(bootstrap=stack.bootstrap, kafka_client=client, topic=topics.input,
                               feedback_topics=[topics.output, topics.dead_letter], run_id=run_id,
                               model=exp.model, item_shape=list(spec.input_shape), dtype=spec.input_dtype,
                               tensors=input_tensors(spec) if sends_named(exp, spec) else [],
                               batch_size=exp.batch_size, codec=exp.codec, workload=exp.workload,
                               seed=exp.seed, processes=exp.generator_processes, probe_topic=topics.probe,
                               clock_offset_ms=exp.inject.clock_offset_ms, stall=exp.inject.generator_stall)
        (point_dir / "generator.json.in").write_text(gs.model_dump_json(indent=2))
        cs = CollectorSettings(bootstrap=stack.bootstrap, kafka_client=client, output_topic=topics.output,
                               dead_letter_topic=topics.dead_letter, input_topic=topics.input,
                               worker_group=group, codec=exp.codec,
                               expect_file=str(point_dir / "sent.parquet"),
                               check_sample=exp.check_predictions, models_dir=str(stack.models_dir),
                               check_atol=exp.prediction_tolerance.atol, check_rtol=exp.prediction_tolerance.rtol,
                               generator_settings=str(point_dir / "generator.json.in"),
                               backend=exp.serving.backend, from_end=given)
        (point_dir / "collector.json.in").write_text(cs.model_dump_json(indent=2))
        if joins_from_hosts(exp):   # generators and collectors join from other hosts
            sampler.start(server)
            cpu_before = worker.cpu_seconds() if worker else float("nan")
            run_joined(stack.bootstrap, client, exp, run_id, topics, gs, cs, point_dir,
                       check_alive=worker.check_alive if worker else lambda: None,
                       budget_s=_workload_budget_s(exp), timings=timings, log=log)
        else:
            t = time.monotonic()
            collector = Service("collector", ["-m", "services.collector", "--config",
                                              f"@{point_dir / 'collector.json.in'}", "--out", str(point_dir)],
                                point_dir / "collector.log", env=tenv)
            services.append(collector)
            wait_file(point_dir / "collector.ready", services, timeout_s=60)
            timings["collector_ready_s"] = time.monotonic() - t
            sampler.start(server)  # CPU/RSS of every service tree (+ the generator once it starts)

            t = time.monotonic()
            cpu_before = worker.cpu_seconds() if worker else float("nan")
            generator = Service("generator", ["-m", "services.generator", "--config",
                                              f"@{point_dir / 'generator.json.in'}", "--out", str(point_dir)],
                                point_dir / "generator.log", env=tenv)
            services.append(generator)
            budget = _workload_budget_s(exp)
            while generator.alive():
                if worker:
                    worker.check_alive()
                if not (point_dir / "sent.parquet").exists():
                    collector.check_alive()
                if time.monotonic() - t > budget:
                    raise RuntimeError(f"generator still running after {budget:.0f}s:\n{generator.log_tail()}")
                try:
                    generator.proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            if generator.proc.returncode != 0:
                raise RuntimeError(f"generator failed (exit {generator.proc.returncode}):\n{generator.log_tail()}")
            timings["generator_s"] = time.monotonic() - t
            t = time.monotonic()
            code = collector.wait(timeout_s=600)
            if code != 0:
                raise RuntimeError(f"collector failed (exit {code}):\n{collector.log_tail()}")
            timings["drain_s"] = time.monotonic() - t
        worker_cpu = (worker.cpu_seconds() - cpu_before) if worker else float("nan")
        if worker:
            worker.check_alive()
    finally:
        sampler.stop()
        worker_exit = None
        for s in reversed(services):
            code = s.stop()
            if s is worker:
                worker_exit = code
        if server is not None:
            server.stop()
        if not keep_topics and owned:
            delete_topics(stack.bootstrap, topics, only=owned, client=client)
    gen_report = json.loads((point_dir / "generator.json").read_text())
    col_report = json.loads((point_dir / "collector.json").read_text())
    return PointRun(dir=point_dir, run_id=run_id, generator=gen_report, collector=col_report,
                    worker_cpu_s=worker_cpu, worker_exit=worker_exit, timings=timings)


def _start_worker(exp: Experiment, stack: Stack, point_dir: Path, topics: RunTopics, group: str, partitions: int,
                  services: list[Service], timings: dict, python: str | None = None,
                  start_offsets: dict[int, int] | None = None):
    """Start the engine's worker (and its model server, for external serving) and wait until it is
    ready -> (the worker's Service, the server or None)."""
    engine = ENGINES[exp.engine]
    ws = WorkerSettings(bootstrap=stack.bootstrap, kafka_client=stack.client, start_offsets=start_offsets,
                        input_topic=topics.input, output_topic=topics.output,
                        dead_letter_topic=topics.dead_letter, consumer_group=group, codec=exp.codec,
                        model=exp.model, backend=exp.serving.backend,
                        backend_options=exp.serving.backend_options(), models_dir=str(stack.models_dir),
                        parallelism=exp.parallelism, worker_id=exp.engine,
                        ready_file=str(point_dir / "worker.ready"), engine_options=exp.engine_options)
    server = None
    worker_env = engine.environment if exp.serving.kind == "external" else (
        backend(exp.serving.backend).environment if engine.environment == "core" else engine.environment)
    if exp.serving.kind == "external":
        server, ws.external, client_env = _external_serving(exp, stack, point_dir, timings)
        # The baseline worker runs where the client's packages are (e.g. tf-serving: the tensorflow
        # env); any other engine runs in its own environment, whose requirements carry the clients.
        worker_env = client_env if engine.environment == "core" else engine.environment
    (point_dir / "worker.json").write_text(ws.model_dump_json(indent=2))
    worker = Service(f"{exp.engine}-worker", ["-m", engine.module, "--config", f"@{point_dir / 'worker.json'}"],
                     point_dir / "worker.log", python=python or python_for(worker_env), env=trace_env(exp, point_dir))
    services.append(worker)
    engine.wait_ready(ws, partitions, services)
    return worker, server


def trace_env(exp: Experiment, point_dir: Path) -> dict:
    """Standard OTEL_* settings for the services of a point: spans to files in the point's folder
    (unless an OTLP endpoint is configured), sampled at the experiment's ``trace_sample`` unless the
    user chose a sampler."""


    env = {SPANS_DIR_ENV: str(point_dir)}
    if "OTEL_TRACES_SAMPLER" not in os.environ:
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = repr(float(exp.trace_sample))
    return env


def _external_serving(exp: Experiment, stack: Stack, point_dir: Path, timings: dict):
    """Start the external server of this point (unless a target is given) -> (its
    :class:`serving.server.RunningServer` or None, the worker's ExternalSettings, the environment
    the worker runs in)."""
    sv = exp.serving
    spec = server_spec(sv.server)
    handle = None
    target = sv.target
    if target is None:
        t = time.monotonic()
        options = {}
        if spec.runs_backend:
            # the server runs the experiment's embedded backend, with that backend's interpreter
            options = {**sv.server_options(), "python": python_for(backend(sv.backend).environment),
                       "env": trace_env(exp, point_dir)}
        elif sv.server == "tf-serving" and exp.model_file is not None and file_format(exp) == "onnx":
            # an ONNX file behind the TF Serving protocol: our servicer runs it with ONNX Runtime
            options = {"backend": "onnxruntime"}
        handle = start_server(sv.server, model=exp.model, instances=sv.instances or exp.parallelism,
                              models_dir=stack.models_dir, log_dir=point_dir, **options)
        target = handle.targets[spec.client]
        timings["server_ready_s"] = time.monotonic() - t
        (point_dir / "server.json").write_text(json.dumps({"server": handle.server, "target": target,
                                                           "kind": spec.client}, indent=2))
    ext = ExternalSettings(client=spec.client, target=target, call_mode=sv.call_mode,
                           max_in_flight=sv.max_in_flight, microbatch_max=sv.microbatch_max,
                           timeout_s=sv.timeout_ms / 1000.0, retries=sv.retries)
    return handle, ext, spec.worker_env


def file_format(exp: Experiment) -> str:
    """The format of the experiment's model file (a zoo model is an ONNX file)."""
    return model_format(exp.model_file.path) if exp.model_file.path is not None else "onnx"


def sends_named(exp: Experiment, spec) -> bool:
    """Whether the batches carry named tensors: a model of several inputs or outputs, or asked
    for (``named_tensors``), or a model file behind TF Serving's Predict, which is keyed by name
    (a file's tensors go by its own names, not the ``input_1`` / ``output`` of the zoo's exports)."""
    file_on_tfserving = exp.model_file is not None and exp.serving.kind == "external" and exp.serving.server == "tf-serving"
    return spec.named or exp.named_tensors or file_on_tfserving


def _workload_budget_s(exp: Experiment) -> float:
    wl = exp.workload
    duration = getattr(wl, "duration_s", None) or 60.0
    return duration * 3 + 120.0


def core_python() -> str:
    return sys.executable
