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

A generator that joined a run from another host (``services.generator.joined``) sends its
:class:`Share` of the open-loop schedule only (the sequences ``part, part + parts, ...``) from the
origin the runner gives (``await_start``), so that the shares of all hosts make the workload.

Writes ``sent.parquet`` (one row per batch the broker acknowledged: a batch whose delivery failed was
never sent; for a codec whose outputs may lose the ids, crayfish-json, also each batch's ``echo_key``:
``crayfish.codec_base``, step 4) and ``generator.json`` (achieved vs target rate, lateness against the slots, the skew
bound, delivery failures).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mproc
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.clock import host_clock
from crayfish.codec import CodecError, get_codec
from crayfish.kafka import consumer_config, poll_batch, probe_skew, produce, producer_config
from crayfish.payloads import input_pool, named_input_pool
from crayfish.tensor import fill_named, to_tensor
from crayfish.v1 import batch_pb2
from observability.light import batch_tracing
from services.analysis.sending import send_report
from services.generator.schedules import build_schedule
from services.generator.settings import GeneratorSettings

START_LEAD_NS = 200_000_000  # t0 lies this far after the processes are ready


@dataclass(frozen=True)
class Share:
    """Part ``part`` of ``parts`` of an open-loop schedule: the batches whose sequence % parts == part."""

    part: int = 0
    parts: int = 1


def input_pool_for(s: GeneratorSettings) -> list:
    """The run's distinct input batches (crayfish.payloads.input_pool, or named_input_pool: each
    entry ``{name: array}``): batch ``seq`` carries ``pool[seq % len(pool)]``. Whoever needs a
    run's inputs again (the prediction checker) calls this."""
    wl = s.workload
    replay = (wl.path, wl.key) if wl.type == "replay" else (None, None)
    if s.tensors:
        return named_input_pool(s.tensors, s.batch_size, s.pool_size, s.seed, replay[0])
    return input_pool(s.item_shape, s.dtype, s.batch_size, s.pool_size, s.seed, *replay)


def _with_inputs(batch: batch_pb2.DataBatch, entry) -> batch_pb2.DataBatch:
    if isinstance(entry, dict):
        fill_named(batch.inputs, entry)
    else:
        to_tensor(entry, batch.input)
    return batch


class BatchFactory:
    """Pre-serialized payload parts so that building a batch in the timed path is cheap."""

    def __init__(self, s: GeneratorSettings):
        self.s = s
        self.codec = get_codec(s.codec)
        pool = input_pool_for(s)
        self.pool_arrays = pool
        # What an echoing output repeats of each pool entry (None: the codec's outputs carry the ids).
        # Hashed here, once per entry, so that the per-batch echo key costs a string format only.
        self.fingerprints: list[str | None] | None = None
        if s.codec == "protobuf":
            # A DataBatch is valid protobuf when its fields are concatenated in any order: the
            # (large) tensor field is serialized once per pool entry, the small header per batch.
            self.tensor_parts = [_with_inputs(batch_pb2.DataBatch(), a).SerializeToString() for a in pool]
        else:
            self.tensors = [_with_inputs(batch_pb2.DataBatch(), a) for a in pool]
            self.fingerprints = [self._fingerprint(t) for t in self.tensors]

    def _fingerprint(self, tensor: batch_pb2.DataBatch) -> str | None:
        try:
            return self.codec.input_fingerprint(tensor)
        except CodecError:  # the codec cannot carry this input: encode_batch will say so when sent
            return None

    def echo_keys(self, seqs, created_ns) -> list[str | None] | None:
        """The echo key of each sent batch (``seqs[i]`` created at ``created_ns[i]``), or None when
        the codec's outputs carry the ids (protobuf: no column, no cost)."""
        fps = self.fingerprints
        if fps is None or not any(f is not None for f in fps):
            return None
        return [self.codec.echo_key(int(c), fps[int(q) % len(fps)]) for q, c in zip(seqs, created_ns)]

    def build(self, seq: int, intended_ns: int, created_ns: int) -> tuple[bytes, bytes, list]:
        s = self.s
        batch_id = f"{s.run_id}-{seq}"
        head = batch_pb2.DataBatch(batch_id=batch_id, run_id=s.run_id, sequence=seq,
                                   intended_ns=intended_ns, created_ns=created_ns, model=s.model)
        key = batch_id.encode()
        if s.codec == "protobuf":
            return key, head.SerializeToString() + self.tensor_parts[seq % len(self.tensor_parts)], []
        head.MergeFrom(self.tensors[seq % len(self.tensors)])
        value, headers = self.codec.encode_batch(head)
        return key, value, headers


def _new_producer(s: GeneratorSettings, name: str) -> Producer:
    return Producer(producer_config(s.bootstrap, s.kafka_client, **{"client.id": name}))


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


class _Sender:
    """One producer process's sending: builds each batch, records its send span when the batch is
    sampled for tracing, produces it, and keeps what it sent (and what the broker acknowledged)."""

    def __init__(self, s: GeneratorSettings, name: str):
        self.s = s
        self.factory = BatchFactory(s)
        self.tracing = batch_tracing("generator")
        self.producer = _new_producer(s, name)
        _warm_up(s, self.producer)
        self.deliveries = _Deliveries()
        self.seqs: list[int] = []
        self.intended: list[int] = []
        self.created: list[int] = []

    @property
    def sent(self) -> int:
        return len(self.seqs)

    def send(self, seq: int, intended_ns: int, created_ns: int) -> bytes:
        """Produce batch ``seq``; returns its key (the batch id, UTF-8)."""
        s, tracing = self.s, self.tracing
        span = tracing.start_send(s.topic, f"{s.run_id}-{seq}") if tracing.tracer is not None else None
        key, value, headers = self.factory.build(seq, intended_ns, created_ns)
        if span is not None:
            headers = tracing.headers_for(span, headers)
        produce(self.producer, s.topic, value, key, headers=headers, on_delivery=self.deliveries)
        if span is not None:
            span.end()
        self.seqs.append(seq)
        self.intended.append(intended_ns)
        self.created.append(created_ns)
        self.producer.poll(0)
        return key

    def finish(self, **extra) -> dict:
        """Wait for the deliveries, close the tracing; the per-process result ``run`` merges."""
        self.producer.flush(60)
        self.tracing.close()
        return {"seq": self.seqs, "intended": self.intended, "created": self.created,
                "echo_keys": self.factory.echo_keys(self.seqs, self.created),
                **self.deliveries.result(self.s.run_id), **extra}


def _open_loop_worker(s: GeneratorSettings, offsets: np.ndarray, seqs: np.ndarray, proc_index: int, nprocs: int,
                      t0_ns: int, out_queue) -> None:
    """One producer process of an open-loop run: of the slots ``seqs``, entries ``proc_index,
    proc_index + nprocs, ...``. A SIGTERM ends it at once (its parent stops it that way)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sender = _Sender(s, f"generator-{proc_index}")
    time_ns, sleep = host_clock(s.clock_offset_ms), time.sleep
    for i in seqs[proc_index::nprocs].tolist():
        slot = t0_ns + int(offsets[i])
        wait = slot - time_ns()
        if wait > 0:
            sleep(wait / 1e9)
        _stall(s, i)
        sender.send(i, slot, time_ns())
    out_queue.put(sender.finish())


def _feedback_consumer(s: GeneratorSettings) -> Consumer:
    """A consumer assigned to every partition of the output and dead-letter topics, from offset 0."""
    consumer = Consumer(consumer_config(s.bootstrap, f"{s.run_id}-generator-feedback", s.kafka_client,
                                        **{"enable.auto.commit": False}))
    parts = []
    for t in s.feedback_topics:
        md = consumer.list_topics(t, timeout=10)
        parts += [TopicPartition(t, p, 0) for p in md.topics[t].partitions]
    consumer.assign(parts)
    return consumer


# A closed loop gives up on its outstanding batches after this long without a completion.
CLOSED_LOOP_PATIENCE_S = 30


def _closed_loop(s: GeneratorSettings) -> dict:
    """``outstanding`` batches in flight: the next one goes when the output (or dead-letter)
    record of one of them is read back, until ``count`` batches or ``duration_s``."""
    sender = _Sender(s, "generator-0")
    consumer = _feedback_consumer(s)
    codec = sender.factory.codec
    wl = s.workload
    clock = host_clock(s.clock_offset_ms)
    duration_ns = int((wl.duration_s or 1e9) * 1e9)
    start = clock()
    outstanding: set[str] = set()
    # echo key -> outstanding batch ids, oldest first: an output that lost its ids (crayfish-json
    # through a pipeline that drops the headers) completes the oldest outstanding batch of its key
    by_key: dict[str, list[str]] = {}

    def more() -> bool:
        return (wl.count is None or sender.sent < wl.count) and clock() - start < duration_ns

    def send() -> None:
        seq = sender.sent
        _stall(s, seq)
        c = clock()
        bid = sender.send(seq, c, c).decode()
        outstanding.add(bid)
        keys = sender.factory.echo_keys([seq], [c])
        if keys is not None and keys[0] is not None:
            by_key.setdefault(keys[0], []).append(bid)

    for _ in range(wl.outstanding):
        if more():
            send()
    last_progress = time.monotonic()
    while outstanding:
        msgs = poll_batch(consumer, 64, 0.05)
        sender.producer.poll(0)
        for m in msgs:
            if m.error():
                continue
            bid = _feedback_batch_id(codec, m) or _feedback_by_echo(codec, m, by_key, outstanding)
            if bid in outstanding:
                outstanding.discard(bid)
                last_progress = time.monotonic()
                if more():
                    send()
        if time.monotonic() - last_progress > CLOSED_LOOP_PATIENCE_S:
            break  # a batch was lost; the collector will count it as missing
    result = sender.finish(stuck_outstanding=len(outstanding))
    consumer.close()
    return result


def _feedback_by_echo(codec, m, by_key: dict[str, list[str]], outstanding: set[str]) -> str:
    """The oldest outstanding batch whose echo key the output ``m`` carries ("" when none)."""
    if not by_key or m.topic().endswith("-dlq"):
        return ""
    try:
        waiting = by_key.get(codec.output_echo_key(m.value()) or "", [])
    except Exception:  # noqa: BLE001 - not ours to judge here: the collector counts it
        return ""
    while waiting:
        bid = waiting.pop(0)
        if bid in outstanding:
            return bid
    return ""


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


def run(s: GeneratorSettings, out_dir: Path, share: Share = Share(),
        await_start: Callable[[], int] | None = None) -> dict:
    """Probe the clock skew, drive the workload (``share`` of it; from the origin ``await_start``
    returns once the skew is probed, else from now), write sent.parquet and generator.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clock = host_clock(s.clock_offset_ms)
    skew = probe_skew(s.bootstrap, s.probe_topic, s.probes, clock=clock, client=s.kafka_client).to_dict() if s.probe_topic else None
    results, target_rate, nprocs, t0 = _drive(s, clock, share, await_start)
    seq, intended, created = (np.concatenate([np.asarray(r[k], dtype=np.int64) for r in results])
                              for k in ("seq", "intended", "created"))
    acked = np.isin(seq, np.concatenate([np.asarray(r["acked_seq"], dtype=np.int64) for r in results]))
    order = np.argsort(seq[acked], kind="stable")
    seq, intended, created = seq[acked][order], intended[acked][order], created[acked][order]
    columns = {"batch_id": [f"{s.run_id}-{i}" for i in seq], "sequence": seq,
               "intended_ns": intended, "created_ns": created}
    if any(r.get("echo_keys") is not None for r in results):  # crayfish-json: outputs may lose the ids
        keys = np.concatenate([np.asarray(r.get("echo_keys") or [None] * len(r["seq"]), dtype=object)
                               for r in results])
        columns["echo_key"] = pa.array(keys[acked][order].tolist(), type=pa.string())
    # Written atomically: the collector starts its drain the moment sent.parquet exists.
    tmp = out_dir / "sent.parquet.tmp"
    pq.write_table(pa.table(columns), tmp)
    os.replace(tmp, out_dir / "sent.parquet")
    failures = int(sum(r["n_failed"] for r in results))
    report = {
        # Only what the broker acknowledged was sent; a batch it refused, or never answered for
        # before the final flush gave up, is counted apart.
        "produced": int(acked.sum()),
        "attempted": int(len(acked)),
        "unacknowledged": int(len(acked) - acked.sum() - failures),
        **send_report(intended, created, target_rate),
        "delivery_failures": failures,
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


def _drive(s: GeneratorSettings, clock, share: Share = Share(),
           await_start: Callable[[], int] | None = None) -> tuple[list[dict], float | None, int, int]:
    """Run the workload -> (per-process results, target rate of the share, processes, schedule origin t0)."""
    if not _is_open_loop(s):
        if share.parts > 1:
            raise ValueError("a closed loop runs on one generator: it cannot be shared between hosts")
        if await_start is not None:
            await_start()
        return [_closed_loop(s)], None, 1, 0
    schedule = build_schedule(s.workload, s.seed)
    offsets = np.asarray(schedule.times_ns(), dtype=np.int64)
    if len(offsets) == 0:
        raise ValueError("the workload schedule has no events")
    seqs = np.arange(share.part, len(offsets), share.parts)
    nprocs = s.processes or max(1, math.ceil(_peak_rate(offsets[seqs]) / s.per_process_rate))
    ctx = mproc.get_context("fork")
    q = ctx.Queue()
    t0 = await_start() if await_start is not None else clock() + START_LEAD_NS + 100_000_000 * nprocs
    procs = [ctx.Process(target=_open_loop_worker, args=(s, offsets, seqs, j, nprocs, t0, q)) for j in range(nprocs)]
    try:
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
    except BaseException:   # stopped (SIGTERM) or failed: no producer process keeps sending
        for p in procs:
            if p.is_alive():
                p.terminate()
        raise
    for p in procs:
        p.join()
    target = schedule.mean_rate if share.parts == 1 else schedule.mean_rate * len(seqs) / len(offsets)
    return results, target, nprocs, t0


def _peak_rate(offsets: np.ndarray, window_ns: int = 1_000_000_000) -> float:
    if len(offsets) < 2:
        return 1.0
    ends = np.searchsorted(offsets, offsets + window_ns)
    return float((ends - np.arange(len(offsets))).max()) / (window_ns / 1e9)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.generator")
    p.add_argument("--config", required=True, help="GeneratorSettings JSON or @file")
    p.add_argument("--out", required=True, help="directory for sent.parquet and generator.json")
    a = p.parse_args(argv)
    raw = a.config if not a.config.startswith("@") else Path(a.config[1:]).read_text()
    report = run(GeneratorSettings.model_validate_json(raw), Path(a.out))
    print(json.dumps({k: report[k] for k in ("sent", "achieved_rate_bps", "target_rate_bps")}))


if __name__ == "__main__":
    main()
