"""The generator service: drives the workload schedule into the input topic.

Open loop: every batch has a slot ``intended_ns = t0 + offset`` from the schedule; the batch is
built (from a pool prepared before t0, outside the timed path), stamped ``created_ns`` and sent as
soon as its slot has come. When the sender falls behind, the batch still carries its slot, so a
stalled pipeline shows in the latency-from-schedule (no coordinated omission). Several producer
processes share the slots round-robin when one process cannot hold the rate.

Closed loop: N batches outstanding; the next one is sent when the output (or dead-letter) record of
an outstanding one is read back. ``intended_ns == created_ns`` there.

Before the workload, the clock-skew probes run with the generator's own clock: the one that stamps
``intended_ns`` and ``created_ns``, so the bound is the one latencies need.

Writes ``sent.parquet`` (one row per batch the broker acknowledged: a batch whose delivery failed was
never sent) and ``generator.json`` (achieved vs target rate, lateness against the slots, the skew
bound, delivery failures).
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

from crayfish.clock import host_clock
from crayfish.codec import get_codec
from crayfish.kafka import consumer_config, poll_batch, probe_skew, produce, producer_config
from crayfish.tensor import to_tensor
from crayfish.v1 import batch_pb2
from services.analysis.sending import send_report
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


class _Deliveries:
    """Delivery reports of one producer: the keys the broker acknowledged, and the errors."""

    def __init__(self):
        self.acked: list[bytes] = []
        self.failed: list[str] = []

    def __call__(self, err, msg) -> None:
        if err is None:
            self.acked.append(msg.key())
        else:
            self.failed.append(str(err))

    def result(self, run_id: str) -> dict:
        prefix = len(run_id) + 1
        return {"acked_seq": sorted(int(k[prefix:]) for k in self.acked), "failed": self.failed[:20],
                "n_failed": len(self.failed)}


def _warm_up(s: GeneratorSettings, producer: Producer) -> None:
    """Before the first slot: the input topic's metadata, and one record through the producer to
    the probe topic, flushed. The idempotent producer gets its producer id from the broker on its
    first send; without this the first batches waited for it inside the client (seen: 12 batches
    appended 378 ms after they were created, a start-up backlog that was the harness's, not the
    pipeline's)."""
    producer.list_topics(s.topic, timeout=10)
    if s.probe_topic:
        producer.produce(s.probe_topic, b"generator warm-up", partition=0)
        producer.flush(30)


def _stall(s: GeneratorSettings, seq: int) -> None:
    if s.stall is not None and seq == s.stall.before_sequence:
        time.sleep(s.stall.ms / 1e3)


def _open_loop_worker(s: GeneratorSettings, offsets: np.ndarray, proc_index: int, nprocs: int,
                      t0_ns: int, out_queue) -> None:
    from observability.light import batch_tracing

    factory = BatchFactory(s)
    tracing = batch_tracing("generator")
    producer = _new_producer(s, f"generator-{proc_index}")
    _warm_up(s, producer)
    mine = np.arange(proc_index, len(offsets), nprocs)
    seqs, intended, created = [], [], []
    deliveries = _Deliveries()
    time_ns, sleep = host_clock(s.clock_offset_ms), time.sleep
    for i in mine:
        slot = t0_ns + int(offsets[i])
        wait = slot - time_ns()
        if wait > 0:
            sleep(wait / 1e9)
        _stall(s, int(i))
        c = time_ns()
        span = tracing.start_send(s.topic, f"{s.run_id}-{i}") if tracing.tracer is not None else None
        key, value, headers = factory.build(int(i), slot, c)
        if span is not None:
            headers = tracing.headers_for(span, headers)
        produce(producer, s.topic, value, key, headers=headers, on_delivery=deliveries)
        if span is not None:
            span.end()
        seqs.append(int(i)); intended.append(slot); created.append(c)
        producer.poll(0)
    producer.flush(60)
    tracing.close()
    out_queue.put({"seq": seqs, "intended": intended, "created": created, **deliveries.result(s.run_id)})


def _closed_loop(s: GeneratorSettings) -> dict:
    factory = BatchFactory(s)
    producer = _new_producer(s, "generator-0")
    _warm_up(s, producer)
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
    deliveries = _Deliveries()
    clock = host_clock(s.clock_offset_ms)
    count = getattr(wl, "count", None)
    duration_ns = int((getattr(wl, "duration_s", None) or 1e9) * 1e9)
    start = clock()
    seq = 0

    from observability.light import batch_tracing

    tracing = batch_tracing("generator")

    def send():
        nonlocal seq
        _stall(s, seq)
        c = clock()
        span = tracing.start_send(s.topic, f"{s.run_id}-{seq}") if tracing.tracer is not None else None
        key, value, headers = factory.build(seq, c, c)
        if span is not None:
            headers = tracing.headers_for(span, headers)
        produce(producer, s.topic, value, key, headers=headers, on_delivery=deliveries)
        if span is not None:
            span.end()
        producer.poll(0)
        outstanding.add(key.decode())
        seqs.append(seq); intended.append(c); created.append(c)
        seq += 1

    def more() -> bool:
        return (count is None or seq < count) and clock() - start < duration_ns

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
    return {"seq": seqs, "intended": intended, "created": created, **deliveries.result(s.run_id),
            "stuck_outstanding": len(outstanding)}


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
    clock = host_clock(s.clock_offset_ms)
    skew = probe_skew(s.bootstrap, s.probe_topic, s.probes, clock=clock).to_dict() if s.probe_topic else None
    results, target_rate, nprocs, t0 = _drive(s, clock)
    seq, intended, created = (np.concatenate([np.asarray(r[k], dtype=np.int64) for r in results])
                              for k in ("seq", "intended", "created"))
    acked = np.isin(seq, np.concatenate([np.asarray(r["acked_seq"], dtype=np.int64) for r in results]))
    order = np.argsort(seq[acked], kind="stable")
    seq, intended, created = seq[acked][order], intended[acked][order], created[acked][order]
    # Written atomically: the collector starts its drain the moment sent.parquet exists.
    tmp = out_dir / "sent.parquet.tmp"
    pq.write_table(pa.table({"batch_id": [f"{s.run_id}-{i}" for i in seq], "sequence": seq,
                             "intended_ns": intended, "created_ns": created}), tmp)
    os.replace(tmp, out_dir / "sent.parquet")
    report = {
        "produced": int(len(acked)),
        **send_report(intended, created, target_rate),
        "delivery_failures": int(sum(r["n_failed"] for r in results)),
        "delivery_errors": sum((r["failed"] for r in results), [])[:20],
        "processes": nprocs,
        "stuck_outstanding": sum(r.get("stuck_outstanding", 0) for r in results),
        # Schedule origin (open loop) or first send (closed loop), generator clock, ns.
        "t0_ns": int(t0) if _is_open_loop(s) else (int(created.min()) if len(created) else None),
        "clock_skew": skew,
    }
    (out_dir / "generator.json").write_text(json.dumps(report, indent=2))
    return report


def _is_open_loop(s: GeneratorSettings) -> bool:
    return s.workload.type != "closed_loop"


def _drive(s: GeneratorSettings, clock) -> tuple[list[dict], float | None, int, int]:
    """Run the workload -> (per-process results, target rate, processes, schedule origin t0)."""
    if not _is_open_loop(s):
        return [_closed_loop(s)], None, 1, 0
    schedule = build_schedule(s.workload, s.seed)
    offsets = np.asarray(schedule.times_ns(), dtype=np.int64)
    if len(offsets) == 0:
        raise ValueError("the workload schedule has no events")
    nprocs = s.processes or max(1, math.ceil(_peak_rate(offsets) / s.per_process_rate))
    ctx = mproc.get_context("fork")
    q = ctx.Queue()
    t0 = clock() + START_LEAD_NS + 100_000_000 * nprocs
    procs = [ctx.Process(target=_open_loop_worker, args=(s, offsets, j, nprocs, t0, q)) for j in range(nprocs)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return results, schedule.mean_rate, nprocs, t0


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
