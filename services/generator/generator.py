"""The generator service: drives the workload schedule into the input topic.

Open loop: every batch has a slot ``intended_ns = t0 + offset`` from the schedule; the batch is
built (from a pool prepared before t0, outside the timed path), stamped ``created_ns`` and sent as
soon as its slot has come. When the sender falls behind, the batch still carries its slot, so a
stalled pipeline shows in the latency-from-schedule (no coordinated omission). Several producer
processes share the slots round-robin when one process cannot hold the rate.

Closed loop: N batches outstanding; the next one is sent when the output (or dead-letter) record of
an outstanding one is read back. ``intended_ns == created_ns`` there.

Writes ``sent.parquet`` (one row per acknowledged batch) and ``generator.json`` (achieved vs target
rate, lateness against the slots).
"""

from __future__ import annotations

import json
import math
import os
import multiprocessing as mproc
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.codec import get_codec
from crayfish.kafka import consumer_config, poll_batch, producer_config
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2
from services.generator.settings import GeneratorSettings
from services.generator.workloads import build_schedule, load_replay, synthetic_pool

START_LEAD_NS = 200_000_000  # t0 lies this far after the processes are ready


class BatchFactory:
    """Pre-serialized payload parts so that building a batch in the timed path is cheap."""

    def __init__(self, s: GeneratorSettings):
        self.s = s
        self.codec = get_codec(s.codec)
        pool = self._pool()
        self.pool_arrays = pool
        if s.codec == "protobuf":
            # A DataBatch is valid protobuf when its fields are concatenated in any order: the
            # (large) tensor field is serialized once per pool entry, the small header per batch.
            self.tensor_parts = [batch_pb2.DataBatch(input=to_tensor(a)).SerializeToString() for a in pool]
        else:
            self.tensors = [to_tensor(a) for a in pool]

    def _pool(self) -> list[np.ndarray]:
        s = self.s
        wl = s.workload
        if getattr(wl, "type", "") == "replay":
            data = load_replay(wl.path, getattr(wl, "key", None)).astype(s.dtype, copy=False)
            item = tuple(s.item_shape)
            n = int(np.prod(item))
            data = data.reshape((-1,) + item) if data.size % n == 0 else data
            batches = []
            for start in range(0, max(len(data), s.batch_size), s.batch_size):
                idx = np.arange(start, start + s.batch_size) % len(data)
                batches.append(np.ascontiguousarray(data[idx]))
                if len(batches) >= max(s.pool_size, math.ceil(len(data) / s.batch_size)):
                    break
            return batches
        pool = synthetic_pool(tuple(s.item_shape), s.dtype, s.batch_size, s.pool_size, s.seed)
        return [np.ascontiguousarray(pool[i]) for i in range(len(pool))]

    def build(self, seq: int, intended_ns: int, created_ns: int) -> tuple[bytes, bytes, list]:
        s = self.s
        batch_id = f"{s.run_id}-{seq}"
        head = batch_pb2.DataBatch(batch_id=batch_id, run_id=s.run_id, sequence=seq,
                                   intended_ns=intended_ns, created_ns=created_ns, model=s.model)
        key = batch_id.encode()
        if s.codec == "protobuf":
            return key, head.SerializeToString() + self.tensor_parts[seq % len(self.tensor_parts)], []
        head.input.CopyFrom(self.tensors[seq % len(self.tensors)])
        value, headers = self.codec.encode_batch(head)
        return key, value, headers


def _new_producer(s: GeneratorSettings, name: str) -> Producer:
    return Producer(producer_config(s.bootstrap, **{"client.id": name}))


def _produce(producer: Producer, topic: str, key: bytes, value: bytes, headers, cb) -> None:
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=cb, headers=headers or None)
            return
        except BufferError:
            producer.poll(0.005)


def _open_loop_worker(s: GeneratorSettings, offsets: np.ndarray, proc_index: int, nprocs: int,
                      t0_ns: int, out_queue) -> None:
    from observability.light import batch_tracing

    factory = BatchFactory(s)
    tracing = batch_tracing("generator")
    producer = _new_producer(s, f"generator-{proc_index}")
    producer.list_topics(s.topic, timeout=10)  # metadata fetched before the first slot
    mine = np.arange(proc_index, len(offsets), nprocs)
    seqs, intended, created = [], [], []
    acked = []
    failed = []

    def cb(err, msg):
        if err is None:
            acked.append(1)
        else:
            failed.append(str(err))

    time_ns, sleep = time.time_ns, time.sleep
    for i in mine:
        slot = t0_ns + int(offsets[i])
        wait = slot - time_ns()
        if wait > 0:
            sleep(wait / 1e9)
        c = time_ns()
        span = tracing.start_send(s.topic, f"{s.run_id}-{i}") if tracing.tracer is not None else None
        key, value, headers = factory.build(int(i), slot, c)
        if span is not None:
            headers = tracing.headers_for(span, headers)
        _produce(producer, s.topic, key, value, headers, cb)
        if span is not None:
            span.end()
        seqs.append(int(i)); intended.append(slot); created.append(c)
        producer.poll(0)
    producer.flush(60)
    tracing.close()
    out_queue.put({"seq": seqs, "intended": intended, "created": created, "acked": len(acked),
                   "failed": failed[:20], "n_failed": len(failed)})


def _closed_loop(s: GeneratorSettings) -> dict:
    factory = BatchFactory(s)
    producer = _new_producer(s, "generator-0")
    producer.list_topics(s.topic, timeout=10)
    wl = s.workload
    consumer = Consumer(consumer_config(s.bootstrap, f"{s.run_id}-generator-feedback",
                                        **{"enable.auto.commit": False}))
    parts = []
    for t in s.feedback_topics:
        md = consumer.list_topics(t, timeout=10)
        parts += [TopicPartition(t, p, 0) for p in md.topics[t].partitions]
    consumer.assign(parts)
    codec = get_codec(s.codec)
    outstanding: set[str] = set()
    seqs, intended, created = [], [], []
    failed = []
    count = getattr(wl, "count", None)
    duration_ns = int((getattr(wl, "duration_s", None) or 1e9) * 1e9)
    start = time.time_ns()
    seq = 0

    from observability.light import batch_tracing

    tracing = batch_tracing("generator")

    def send():
        nonlocal seq
        c = time.time_ns()
        span = tracing.start_send(s.topic, f"{s.run_id}-{seq}") if tracing.tracer is not None else None
        key, value, headers = factory.build(seq, c, c)
        if span is not None:
            headers = tracing.headers_for(span, headers)
        _produce(producer, s.topic, key, value, headers, lambda e, m: e and failed.append(str(e)))
        if span is not None:
            span.end()
        producer.poll(0)
        outstanding.add(key.decode())
        seqs.append(seq); intended.append(c); created.append(c)
        seq += 1

    def more() -> bool:
        return (count is None or seq < count) and time.time_ns() - start < duration_ns

    for _ in range(wl.outstanding):
        if more():
            send()
    last_progress = time.monotonic()
    while outstanding:
        msgs = poll_batch(consumer, 64, 0.05)
        producer.poll(0)
        for m in msgs:
            if m.error():
                continue
            bid = _feedback_batch_id(codec, m)
            if bid in outstanding:
                outstanding.discard(bid)
                last_progress = time.monotonic()
                if more():
                    send()
        if time.monotonic() - last_progress > 30:
            break  # a batch was lost; the collector will count it as missing
    producer.flush(60)
    consumer.close()
    tracing.close()
    return {"seq": seqs, "intended": intended, "created": created, "acked": len(seqs) - len(failed),
            "failed": failed[:20], "n_failed": len(failed), "stuck_outstanding": len(outstanding)}


def _feedback_batch_id(codec, m) -> str:
    if m.topic().endswith("-dlq"):
        dl = batch_pb2.DeadLetter()
        try:
            dl.ParseFromString(m.value())
        except Exception:  # noqa: BLE001
            return ""
        return dl.batch_id
    try:
        return codec.decode_scored(m.value(), m.headers()).batch_id
    except Exception:  # noqa: BLE001
        return ""


def run(s: GeneratorSettings, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    wl = s.workload
    t0 = 0
    if wl.type == "closed_loop":
        results = [_closed_loop(s)]
        target_rate = None
        nprocs = 1
    else:
        schedule = build_schedule(wl, s.seed)
        offsets = np.asarray(schedule.times_ns(), dtype=np.int64)
        if len(offsets) == 0:
            raise ValueError("the workload schedule has no events")
        peak = _peak_rate(offsets)
        nprocs = s.processes or max(1, math.ceil(peak / s.per_process_rate))
        target_rate = schedule.mean_rate
        ctx = mproc.get_context("fork")
        q = ctx.Queue()
        t0 = time.time_ns() + START_LEAD_NS + 100_000_000 * nprocs
        procs = [ctx.Process(target=_open_loop_worker, args=(s, offsets, j, nprocs, t0, q))
                 for j in range(nprocs)]
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
        for p in procs:
            p.join()
    seq = np.concatenate([np.asarray(r["seq"], dtype=np.int64) for r in results])
    intended = np.concatenate([np.asarray(r["intended"], dtype=np.int64) for r in results])
    created = np.concatenate([np.asarray(r["created"], dtype=np.int64) for r in results])
    order = np.argsort(seq, kind="stable")
    seq, intended, created = seq[order], intended[order], created[order]
    batch_ids = [f"{s.run_id}-{i}" for i in seq]
    # Written atomically: the collector starts its drain the moment sent.parquet exists.
    tmp = out_dir / "sent.parquet.tmp"
    pq.write_table(pa.table({"batch_id": batch_ids, "sequence": seq, "intended_ns": intended,
                             "created_ns": created}), tmp)
    os.replace(tmp, out_dir / "sent.parquet")
    lateness_ms = (created - intended) / 1e6
    span_s = (created.max() - created.min()) / 1e9 if len(created) > 1 else 0.0
    n_failed = sum(r["n_failed"] for r in results)
    report = {
        "sent": int(len(seq)),
        "acknowledged": int(sum(r["acked"] for r in results)),
        "delivery_failures": int(n_failed),
        "delivery_errors": sum((r["failed"] for r in results), [])[:20],
        "processes": nprocs,
        "target_rate_bps": target_rate,
        "achieved_rate_bps": (len(seq) - 1) / span_s if span_s > 0 else None,
        "lateness_ms": {
            "p50": float(np.percentile(lateness_ms, 50)) if len(seq) else None,
            "p99": float(np.percentile(lateness_ms, 99)) if len(seq) else None,
            "max": float(lateness_ms.max()) if len(seq) else None,
        },
        "stuck_outstanding": sum(r.get("stuck_outstanding", 0) for r in results),
        # Schedule origin (open loop) or first send (closed loop), host wall clock, ns.
        "t0_ns": int(t0) if wl.type != "closed_loop" else (int(created.min()) if len(created) else None),
    }
    if target_rate:
        # Achieved rate over the schedule's own span, comparable to the target.
        report["achieved_over_target"] = (report["achieved_rate_bps"] or 0) / target_rate
    (out_dir / "generator.json").write_text(json.dumps(report, indent=2))
    return report


def _peak_rate(offsets: np.ndarray, window_ns: int = 1_000_000_000) -> float:
    if len(offsets) < 2:
        return 1.0
    ends = np.searchsorted(offsets, offsets + window_ns)
    return float((ends - np.arange(len(offsets))).max()) / (window_ns / 1e9)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m services.generator")
    p.add_argument("--config", required=True, help="GeneratorSettings JSON or @file")
    p.add_argument("--out", required=True, help="directory for sent.parquet and generator.json")
    a = p.parse_args(argv)
    raw = a.config if not a.config.startswith("@") else Path(a.config[1:]).read_text()
    report = run(GeneratorSettings.model_validate_json(raw), Path(a.out))
    print(json.dumps({k: report[k] for k in ("sent", "achieved_rate_bps", "target_rate_bps")}))


if __name__ == "__main__":
    main()
