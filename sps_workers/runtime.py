"""What every engine's worker shares: the scoring assembly, the command line, readiness, processes.

The scoring assembly is :class:`EngineInstance`, one object per parallel task. Every engine -- the
baseline worker included -- builds its scorer or model-server client, its scoring operator and its
hop-span tracing through it, in that task's process (``open()`` in Flink, the actor's constructor in
Ray, ...), and hands it each input record::

    inst = EngineInstance(settings, engine="faust", index=task_index)
    out = inst.handle(value, headers, append_ms, topic, partition, offset)
    produce(out.topic, out.value, key, out.headers)     # output or dead-letter topic
    ...
    inst.close()

It gives every engine, identical to every other: decode -> validate -> score -> encode with the
same ScoringFacts stamps; dead letters with reasons (the engine never sees an exception for a bad
record); embedded scoring or a call to any external server (shared clients of serving, deadline +
retries + dead letter after the last attempt); and the worker's hop spans for sampled batches
(observability), with the trace context carried on in the output headers.

``handle`` scores one record at a time (external calls blocking). An engine that keeps several
external calls in flight (the baseline worker, ``call_mode`` pipelined / microbatch) gives
``on_emit`` and feeds records through ``prepare`` / ``submit`` / ``poll`` / ``drain`` instead.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mproc
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from crayfish.codec import get_codec
from observability.light import batch_tracing, worker_context
from serving.clients import create_client
from serving.embedded import create_scorer
from serving.models import resolve_spec
from sps_workers.external import ExternalStage
from sps_workers.options import EngineOptions
from sps_workers.scoring_op import OpResult, Prepared, ScoringOperator
from sps_workers.settings import WorkerSettings, config_error, load_config


@dataclass(slots=True)
class Emit:
    """One record to produce: to the output topic, or (``dead``) to the dead-letter topic."""

    topic: str
    value: bytes
    headers: list | None
    dead: bool = False
    reason: str = ""


class DeliveryFailed(RuntimeError):
    """The broker did not take an output record: the worker ends (its input is read again later)."""


class EngineInstance:
    """One parallel task's scoring: its scorer (embedded) or client (external), operator, tracing.

    ``on_emit(prepared, emit)``: given, external calls follow ``settings.external.call_mode`` (up to
    ``max_in_flight`` outstanding, micro-batches of ``microbatch_max``) and every record fed through
    :meth:`prepare` / :meth:`submit` comes back through it; without it calls are blocking and
    :meth:`handle` returns each record's result.
    """

    def __init__(self, settings: WorkerSettings, engine: str, index: int | str = 0,
                 on_emit: Callable[[Prepared, Emit], None] | None = None):
        self.settings = settings
        self.worker_id = f"{settings.worker_id}-{index}"
        self._out_topic, self._dead_topic = settings.output_topic, settings.dead_letter_topic
        codec = get_codec(settings.codec)
        spec = resolve_spec(settings.model, settings.models_dir)
        ext = settings.external
        self.scorer = self.client = self.stage = None
        self._client_kind = None
        if ext is None:
            self.scorer = create_scorer(settings.backend, settings.model, models_dir=settings.models_dir,
                                        **settings.backend_options)
            self.op = ScoringOperator(codec, self.scorer, settings.model, spec, self.worker_id, engine=engine)
        else:
            concurrent = on_emit is not None
            self._client_kind = ext.client
            self.client = create_client(ext.client, ext.target, settings.model, timeout_s=ext.timeout_s,
                                        max_in_flight=ext.max_in_flight if concurrent else 1, **ext.client_options)
            self.op = ScoringOperator(codec, None, settings.model, spec, self.worker_id, engine=engine,
                                      backend=ext.client)
            self._done: list[Emit] = []
            self._on_emit = on_emit or (lambda _prep, emit: self._done.append(emit))
            self.stage = ExternalStage(self.op, self.client, self._finished,
                                       mode=ext.call_mode if concurrent else "blocking",
                                       max_in_flight=ext.max_in_flight, microbatch_max=ext.microbatch_max,
                                       retries=ext.retries, backoff_s=ext.backoff_s)
        self.tracing = batch_tracing(f"{settings.worker_id}-worker")
        self._traced = self.tracing.tracer is not None

    # -- one record at a time ---------------------------------------------------------------------
    def handle(self, value: bytes | None, headers, append_ms: int, topic: str, partition: int,
               offset: int) -> Emit:
        """Score one input record. ``headers``: list of (str, bytes) or None; ``append_ms``: the
        record's (LogAppendTime) timestamp in ms."""
        headers = _normalize(headers)
        if self.stage is None:
            res = self.op.process(value, headers, append_ms, topic, partition, offset)
            ctx = worker_context(headers) if self._traced and res.timing is not None else None
            return self.emit(res, ctx, topic, partition, offset)
        prep = self.prepare(value, headers, append_ms, topic, partition, offset)
        if isinstance(prep, Emit):
            return prep
        self.stage.submit([prep])
        self.stage.drain()
        return self._done.pop()

    # -- external calls in flight (with on_emit) --------------------------------------------------
    def prepare(self, value: bytes | None, headers, append_ms: int, topic: str, partition: int,
                offset: int) -> Prepared | Emit:
        """Decode and validate one record for :meth:`submit`: the prepared batch, or at once the
        dead letter of a record that cannot be scored."""
        prep = self.op.prepare(value, headers, append_ms, topic, partition, offset)
        if isinstance(prep, OpResult):
            return self.emit(prep, None, topic, partition, offset)
        if self._traced:
            prep.trace = worker_context(headers)
        return prep

    def submit(self, prepared: list[Prepared]) -> None:
        """Send prepared batches to the model server (in this order of intake)."""
        self.stage.submit(prepared)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Hand finished calls to ``on_emit``; waits up to ``timeout_s`` for one."""
        self.stage.poll(timeout_s)

    def drain(self) -> None:
        """Wait until every call in flight has finished (before committing offsets)."""
        if self.stage is not None:
            self.stage.drain()

    @property
    def in_flight(self) -> int:
        return self.stage.in_flight if self.stage is not None else 0

    # -- results ----------------------------------------------------------------------------------
    def emit(self, res: OpResult, ctx, topic: str, partition: int, offset: int) -> Emit:
        """The record to produce for an operator result; a scored batch with a trace context
        ``ctx`` (observability.light.worker_context) gets its hop spans and carries the trace on."""
        if res.value is None:
            return Emit(self._dead_topic, res.dead_letter, None, dead=True, reason=res.reason)
        headers = res.headers or None
        if ctx is not None:
            headers = self.tracing.record_worker(ctx, topic, partition, offset, res.timing, self._out_topic,
                                                 res.headers, client=self._client_kind)
        return Emit(self._out_topic, res.value, headers)

    def _finished(self, prep: Prepared, res: OpResult) -> None:
        ctx = prep.trace if res.timing is not None else None
        self._on_emit(prep, self.emit(res, ctx, prep.topic, prep.partition, prep.offset))

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
        path = Path(settings.ready_file)
        if not path.exists():
            # Several instances may say it at once: each writes its own temporary file.
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text("ready\n")
            os.replace(tmp, path)


def read_settings(argv: list[str] | None, prog: str, description: str,
                  options: type[EngineOptions]) -> tuple[WorkerSettings, EngineOptions]:
    """Every engine's command line: ``--config <WorkerSettings JSON | @file>``; the settings and the
    engine's options (``options``: its class). A bad config ends the process: exit code 2 and one
    line naming the field. Also sets up logging (level from CRAYFISH_LOG_LEVEL)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help="WorkerSettings as JSON, or @path to a JSON file")
    raw = parser.parse_args(argv).config
    try:
        settings, opts = load_config(raw, options)
    except (OSError, ValueError) as exc:
        print(f"{options.ENGINE or prog} worker: bad config: {config_error(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)
    logging.basicConfig(level=os.environ.get("CRAYFISH_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return settings, opts


def run_processes(target, args_per_process: list[tuple], names: list[str], what: str) -> None:
    """Run ``target(*args)`` in one spawned process each, pass SIGTERM/SIGINT on to them, wait for
    all, and exit non-zero when any failed (the runner sees one worker service)."""
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
