"""What every Python engine's scoring task shares: one object per parallel instance.

An engine (Faust agent, Bytewax map, PyFlink function, Spark foreach, Ray actor, ...) builds one
:class:`EngineInstance` per parallel task, in that task's process (``open()`` in Flink, the actor's
constructor in Ray, ...), and hands it each input record::

    inst = EngineInstance(settings, engine="faust", index=task_index)
    out = inst.handle(value, headers, append_ms, topic, partition, offset)
    produce(out.topic, out.value, key, out.headers)     # output or dead-letter topic
    ...
    inst.close()

It gives every engine, for free and identical to the baseline worker (sps_workers/kafka):
decode -> validate -> score -> encode with the same ScoringFacts stamps; dead letters with reasons
(the engine never sees an exception for a bad record); embedded scoring or a blocking call to any
external server (shared clients in serving/clients, deadline + retries + dead letter after the last
attempt); and the worker's hop spans for sampled batches (observability.wiring), with the trace
context carried on in the output headers.

Engines that call servers asynchronously use ScoringOperator.prepare/finish with
sps_workers.external.ExternalStage directly, as the baseline worker does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crayfish.codec import get_codec
from observability.light import batch_tracing, worker_context
from sps_workers.scoring_op import OpResult, ScoringOperator
from sps_workers.settings import WorkerSettings


@dataclass
class Emit:
    """One record to produce: to the output topic, or (``dead``) to the dead-letter topic."""

    topic: str
    value: bytes
    headers: list | None
    dead: bool = False
    reason: str = ""


class EngineInstance:
    def __init__(self, settings: WorkerSettings, engine: str, index: int | str = 0):
        from serving.models import MODELS

        self.settings = settings
        self.worker_id = f"{settings.worker_id}-{index}"
        spec = MODELS[settings.model]
        codec = get_codec(settings.codec)
        ext = settings.external
        self.scorer = self.client = self.stage = None
        if ext is None:
            from serving.embedded import create_scorer

            self.scorer = create_scorer(settings.backend, settings.model, models_dir=settings.models_dir,
                                        **settings.backend_options)
            self.op = ScoringOperator(codec, self.scorer, settings.model, spec.input_shape, self.worker_id,
                                      engine=engine)
        else:
            from serving.clients import create_client
            from sps_workers.external import ExternalStage

            self.client = create_client(ext.client, ext.target, settings.model, timeout_s=ext.timeout_s,
                                        max_in_flight=1, **ext.client_options)
            self.op = ScoringOperator(codec, None, settings.model, spec.input_shape, self.worker_id,
                                      engine=engine, backend=ext.client)
            self._done: list[OpResult] = []
            self.stage = ExternalStage(self.op, self.client, lambda _prep, res: self._done.append(res),
                                       mode="blocking", retries=ext.retries, backoff_s=ext.backoff_s)
        self.tracing = batch_tracing(f"{settings.worker_id}-worker")
        self._traced = self.tracing.tracer is not None

    def handle(self, value: bytes | None, headers, append_ms: int, topic: str, partition: int,
               offset: int) -> Emit:
        """Score one input record. ``headers``: list of (str, bytes) or None; ``append_ms``: the
        record's (LogAppendTime) timestamp in ms."""
        headers = _normalize(headers)
        if self.stage is None:
            res = self.op.process(value, headers, append_ms, topic, partition, offset)
        else:
            prep = self.op.prepare(value, headers, append_ms, topic, partition, offset)
            if isinstance(prep, OpResult):
                res = prep
            else:
                if self._traced:
                    prep.trace = worker_context(headers)
                self.stage.submit([prep])
                self.stage.drain()
                res = self._done.pop()
        s = self.settings
        if res.value is None:
            return Emit(s.dead_letter_topic, res.dead_letter, None, dead=True, reason=res.reason)
        out_headers = res.headers or None
        if self._traced and res.timing is not None:
            ctx = prep.trace if self.stage is not None else worker_context(headers)
            if ctx is not None:
                ext = s.external
                out_headers = self.tracing.record_worker(ctx, topic, partition, offset, res.timing, s.output_topic,
                                                         res.headers, client=ext.client if ext is not None else None)
        return Emit(s.output_topic, res.value, out_headers)

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()
        if self.client is not None:
            self.client.close()
        self.tracing.close()


def _normalize(headers) -> list | None:
    """(str, bytes) pairs whatever the Kafka client gave (tuples, lists, str values, None)."""
    if not headers:
        return None
    out = []
    for k, v in headers:
        if isinstance(k, bytes):
            k = k.decode("utf-8", "replace")
        if isinstance(v, str):
            v = v.encode()
        out.append((k, v))
    return out


def mark_ready(settings: WorkerSettings) -> None:
    """Tell the runner the pipeline runs (engines that do not join the consumer group). Idempotent."""
    if settings.ready_file:
        import os
        import threading

        path = Path(settings.ready_file)
        if not path.exists():
            # Several instances may say it at once: each writes its own temporary file.
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text("ready\n")
            os.replace(tmp, path)


def read_settings(argv: list[str] | None, prog: str, description: str) -> WorkerSettings:
    """Every engine's command line: ``--config <WorkerSettings JSON | @file>``; also sets up logging
    (level from CRAYFISH_LOG_LEVEL)."""
    import argparse
    import json
    import logging
    import os

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="WorkerSettings as JSON, or @path to a JSON file")
    raw = parser.parse_args(argv).config
    if raw.startswith("@"):
        with open(raw[1:]) as f:
            raw = f.read()
    settings = WorkerSettings.model_validate(json.loads(raw))
    logging.basicConfig(level=os.environ.get("CRAYFISH_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return settings


def run_processes(target, args_per_process: list[tuple], names: list[str], what: str) -> None:
    """Run ``target(*args)`` in one spawned process each, pass SIGTERM/SIGINT on to them, wait for
    all, and exit non-zero when any failed (the runner sees one worker service)."""
    import multiprocessing as mproc
    import os
    import signal
    import sys

    ctx = mproc.get_context("spawn")
    procs = [ctx.Process(target=target, args=args, name=name) for args, name in zip(args_per_process, names)]
    for p in procs:
        p.start()

    def _forward(signum, _frame):
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    codes = []
    for p in procs:
        p.join()
        codes.append(p.exitcode)
    if any(codes):
        sys.exit(f"{what} exited with codes {codes}")
