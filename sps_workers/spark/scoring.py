"""Executor side: the mapInArrow function that scores Kafka records inside Spark's Python workers.

Runs in every Python worker process Spark forks for a task (never on the driver). One
EngineInstance per Python worker process, cached in a module global across tasks and
micro-batches (Spark reuses its Python workers); each task labels it with its own partition id,
so ``facts.worker_id`` names the Spark task that scored a record (``spark-0``, ``spark-1``, ...).
"""

from __future__ import annotations

import os

import pyarrow as pa
from pyspark import TaskContext

from observability.light import sampled_traceparent
from sps_workers.runtime import EngineInstance
from sps_workers.settings import WorkerSettings

# Columns the driver selects from the Kafka source, in this order.
IN_COLUMNS = ("key", "value", "headers", "append_ms", "topic", "partition", "offset")
# The Kafka sink's columns (topic per row: output or dead-letter topic).
OUT_DDL = "topic STRING, key BINARY, value BINARY, headers ARRAY<STRUCT<key: STRING, value: BINARY>>"

_cached: tuple[str, object] | None = None   # (settings JSON, EngineInstance) of this process


def instance(settings_json: str, index: int):
    """This process's EngineInstance, labelled for task ``index``."""
    global _cached
    if _cached is None or _cached[0] != settings_json:
        if _cached is not None:
            _cached[1].close()
        settings = WorkerSettings.model_validate_json(settings_json)
        _cached = (settings_json, EngineInstance(settings, engine="spark", index=index))
    inst = _cached[1]
    label = f"{inst.settings.worker_id}-{index}"
    if inst.worker_id != label:
        # The instance (model session, client, tracer) belongs to the process; the id to the task.
        inst.worker_id = inst.op.worker_id = label
    return inst


def _task_index() -> int:
    ctx = TaskContext.get()
    return ctx.partitionId() if ctx is not None else 0


def make_scorer(settings_json: str, chunk: int):
    """The function given to DataFrame.mapInArrow: Arrow batches of Kafka records in, Arrow batches
    of (topic, key, value, headers) out, ``chunk`` records at a time (the sink writes each output
    batch as soon as it arrives, so a long micro-batch does not hold its first results back)."""

    def score(batches):
        out_type = pa.schema([("topic", pa.string()), ("key", pa.binary()), ("value", pa.binary()),
                              ("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())])))])
        inst = None
        traced = False
        cols_out = ([], [], [], [])   # topic, key, value, headers

        def emit():
            rb = pa.RecordBatch.from_arrays([pa.array(c, t) for c, t in zip(cols_out, out_type.types)],
                                            schema=out_type)
            for c in cols_out:
                c.clear()
            return rb

        for rb in batches:
            cols = rb.to_pydict()
            if inst is None and rb.num_rows:
                inst = instance(settings_json, _task_index())
            for key, value, hdrs, append_ms, topic, partition, offset in zip(*(cols[c] for c in IN_COLUMNS)):
                headers = [(h["key"], h["value"]) for h in hdrs] if hdrs else None
                if headers and not traced:
                    traced = sampled_traceparent(headers)
                e = inst.handle(value, headers, append_ms, topic, partition, offset)
                cols_out[0].append(e.topic)
                cols_out[1].append(key)
                cols_out[2].append(e.value)
                cols_out[3].append([{"key": k, "value": v} for k, v in e.headers] if e.headers else None)
                if len(cols_out[0]) >= chunk:
                    yield emit()
        if cols_out[0]:
            yield emit()
        if traced:
            # Spark ends idle Python workers with a signal (no exit hooks): a task that recorded
            # hop spans writes them out before it reports done.
            inst.tracing.flush()

    return score


def make_warmup(settings_json: str):
    """mapInArrow function of the warm-up job: builds each worker's EngineInstance before the
    query starts (model loaded, session created), returns the worker's pid."""

    def warm(batches):
        for rb in batches:
            if rb.num_rows:
                instance(settings_json, _task_index())
        yield pa.RecordBatch.from_arrays([pa.array([os.getpid()], pa.int64())], names=["pid"])

    return warm
