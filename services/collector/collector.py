"""Collector: one record per batch from the output and dead-letter topics.

Protocol with the runner (no fixed sleeps):
1. start; assign output + dead-letter partitions from offset 0; write ``collector.ready``.
2. collect; sample the worker group's consumer lag on the input topic every ``lag_interval_s``.
3. when ``expect_file`` (the generator's sent.parquet) appears, stop as soon as every sent batch is
   accounted for, or after ``drain_idle_s`` without new records, or on SIGTERM.
4. write ``batches.parquet``, ``lag.parquet`` and ``collector.json``.

Outputs that lost their ids (crayfish-json through a pipeline that drops the headers) carry only an
echo key (``services.collector.batches``); they wait until sent.parquet appears, are then matched to
their batches (and count towards "every sent batch accounted for"), and from then on are matched as
they come. Each output row also keeps the collector's own clock when it was polled
(``collector_receive_ns``: the µs end of the e2e at the collector, docs/results.md).

A collector that joined a run from another host (``services.collector.joined``: no ``expect_file``)
is part ``part`` of ``parts``: it reads the output and dead-letter partitions ``p % parts == part``,
only part 0 samples the lag, it runs until it is stopped, and it writes every record it read
(``rows.parquet``) instead of ``batches.parquet``: the runner, which holds every host's sent batches,
builds the run's table from all the parts (``services.runner.hosts``).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition
from pydantic import BaseModel, Field

from crayfish.codec import CodecError, get_codec
from crayfish.kafka_client import KafkaClient
from crayfish.kafka import admin_config, consumer_config, high_watermark, poll_batch
from crayfish.tensor import arrays_from, from_tensor
from crayfish.v1 import batch_pb2
from observability.light import batch_tracing, sampled_traceparent
from services.collector.batches import (
    DEAD,
    MATCHED_BY_IDS,
    SCORED,
    EchoMatcher,
    build_batches_table,
    resolve_echo,
    rows_table,
)
from services.collector.checker import UNCHECKED_BACKENDS, PredictionChecker, not_checked_note
from services.generator.settings import GeneratorSettings


class CollectorSettings(BaseModel):
    bootstrap: str = Field(description="Kafka bootstrap servers.")
    kafka_client: KafkaClient = Field(default_factory=KafkaClient, description="Client properties of the cluster (security); secrets as references (crayfish.kafka_client).")
    output_topic: str = Field(description="Topic with ScoredBatch records.")
    dead_letter_topic: str = Field(description="Topic with DeadLetter records.")
    input_topic: str = Field(description="Input topic; the worker group's lag on it is sampled.")
    worker_group: str | None = Field(None, description="Consumer group of the worker (for lag samples).")
    codec: str = Field("protobuf", description="Payload codec of the output topic.")
    expect_file: str | None = Field(description="sent.parquet of the generator; its appearance starts the drain. None: a joined collector, which runs until stopped.")
    drain_idle_s: float = Field(15.0, gt=0, description="Stop draining after this long without new records.")
    check_sample: float = Field(0.01, ge=0, le=1, description="Share of scored batches whose predictions are checked against the reference model.")
    check_atol: float = Field(1e-4, ge=0, description="A checked value is right when |output - reference| <= check_atol + check_rtol * |reference|.")
    check_rtol: float = Field(0.0, ge=0, description="Relative part of the check's tolerance (see check_atol).")
    generator_settings: str | None = Field(None, description="The generator's settings file (to rebuild the inputs of checked batches).")
    models_dir: str | None = Field(None, description="Where the built models live (reference weights).")
    backend: str = Field("", description="Backend that scored (calibration backends noop/sleep are not checked).")
    lag_interval_s: float = Field(0.5, gt=0, description="Seconds between consumer-lag samples.")
    from_end: bool = Field(False, description="Read the output and dead-letter topics from where they end at start, and count the backlog from there (topics of a pipeline that already runs, with records of earlier runs); default: from offset 0 (the run's fresh topics).")
    part: int = Field(0, ge=0, description="This collector's part: it reads the partitions p with p % parts == part (only part 0 samples the lag).")
    parts: int = Field(1, ge=1, description="How many collectors share the output and dead-letter topics.")


class Collector:
    def __init__(self, s: CollectorSettings, out_dir: Path):
        self.s = s
        self.out = out_dir
        self.codec = get_codec(s.codec)
        self.rows: list[dict] = []
        self.lag: list[tuple[int, int, int, int]] = []   # (t_ns, backlog, committed lag or -1, appended)
        self.completed = 0   # distinct input records seen finished (output or dead letter)
        self.stop = threading.Event()
        self.undecodable = 0
        self.tracing = batch_tracing("collector")
        self.input_before = 0                     # input records older than this run (from_end)
        self.matcher: EchoMatcher | None = None   # built when sent.parquet appears
        self.pending: list[dict] = []             # id-less outputs read before that
        self.on_ready = lambda: None              # called once the partitions are assigned
        self.assigned: dict[str, list[int]] = {}  # topic -> the partitions this collector reads
        self.checker = None
        if s.check_sample > 0 and s.generator_settings and s.backend not in UNCHECKED_BACKENDS:
            gs = GeneratorSettings.model_validate_json(Path(s.generator_settings).read_text())
            self.checker = PredictionChecker(gs, s.models_dir, sample_rate=s.check_sample,
                                             atol=s.check_atol, rtol=s.check_rtol)

    def run(self) -> dict:
        s = self.s
        consumer = Consumer(consumer_config(s.bootstrap, f"collector-{s.output_topic}", s.kafka_client,
                                            **{"enable.auto.commit": False}))
        parts = []
        for t in (s.output_topic, s.dead_letter_topic):
            md = consumer.list_topics(t, timeout=10)
            parts += [TopicPartition(t, p, high_watermark(consumer, t, p) if s.from_end else 0)
                      for p in md.topics[t].partitions if p % s.parts == s.part]
        consumer.assign(parts)
        self.assigned = {t: [tp.partition for tp in parts if tp.topic == t] for t in (s.output_topic, s.dead_letter_topic)}
        # input records appended before the collector started are not this run's (topics of a
        # pipeline that already runs); none on the run's fresh topics
        if s.from_end:
            md = consumer.list_topics(s.input_topic, timeout=10)
            self.input_before = sum(high_watermark(consumer, s.input_topic, p) for p in md.topics[s.input_topic].partitions)
        lag_thread = threading.Thread(target=self._sample_lag, daemon=True)
        if s.part == 0:
            lag_thread.start()
        (self.out / "collector.ready").write_text("ready\n")
        self.on_ready()

        expect: set[str] | None = None
        seen: set[str] = set()
        last_new = time.monotonic()
        expect_path = Path(s.expect_file) if s.expect_file else None
        order = 0
        while not self.stop.is_set():
            msgs = poll_batch(consumer, 500, 0.1)
            now = time.monotonic()
            received_ns = time.time_ns()   # the records of one poll arrived together
            for m in msgs:
                if m.error():
                    continue
                row = self._row(m)
                row["order"] = order
                row["collector_receive_ns"] = received_ns
                order += 1
                self.rows.append(row)
                self.completed += 1 if not row["batch_id"] or row["batch_id"] not in seen else 0
                if row["batch_id"]:
                    seen.add(row["batch_id"])
                    if self.matcher is not None:
                        self.matcher.claim(row["batch_id"])
                elif row.get("echo_key"):
                    self.pending.append(row)
                last_new = now
            if expect is None and expect_path is not None and expect_path.exists():
                sent = pq.read_table(expect_path)
                expect = set(sent.column("batch_id").to_pylist())
                self.matcher = EchoMatcher(sent)
                for bid in seen:
                    self.matcher.claim(bid)
                last_new = max(last_new, now)
            if self.matcher is not None and self.pending:
                seen.update(self._resolve_pending())
            if expect is not None:
                if expect <= seen or now - last_new > s.drain_idle_s:
                    break
        self.stop.set()
        consumer.close()
        if lag_thread.is_alive():
            lag_thread.join(timeout=10)
        self.tracing.close()
        return self._write()

    def _resolve_pending(self) -> list[str]:
        """Match the id-less outputs read so far to their sent batches (``services.collector.batches``);
        returns the batch ids they found. Those matching nothing stay id-less: ``unmatched``."""
        found = []
        for row in self.pending:
            if resolve_echo(row, self.matcher):
                found.append(row["batch_id"])
                self._check_late(row)
            elif row.pop("_output", None) is not None and self.checker is not None:
                self.checker.skip("an output without ids matched no sent batch: its input is unknown")
        self.pending = []
        return found

    def _check_late(self, row: dict) -> None:
        """The prediction check of an output matched by its echo key (its sequence was unknown when
        it was read); only outputs kept for the check carry ``_output``."""
        output = row.pop("_output", None)
        if output is not None and self.checker is not None:
            row["correct"] = self.checker.check(row["sequence"], output, row["batch_id"])

    def _row(self, m) -> dict:
        _, append_ms = m.timestamp()
        base = {"topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
                "output_append_ms": append_ms}
        if m.topic() == self.s.dead_letter_topic:
            dl = batch_pb2.DeadLetter()
            try:
                dl.ParseFromString(m.value())
            except Exception:  # noqa: BLE001
                self.undecodable += 1
                return {**base, "batch_id": "", "status": DEAD, "reason": "undecodable_dead_letter"}
            return {**base, "batch_id": dl.batch_id, "status": DEAD, "reason": dl.reason,
                    "detail": dl.detail, "created_ns": dl.created_ns, "intended_ns": dl.intended_ns,
                    "input_append_ms": dl.input_append_ms, "worker_id": dl.facts.worker_id,
                    "worker_receive_ns": dl.facts.worker_receive_ns, "worker_send_ns": dl.facts.worker_send_ns}
        headers = m.headers()
        try:
            sb = self.codec.decode_scored(m.value(), headers)
        except CodecError as exc:
            self.undecodable += 1
            return {**base, "batch_id": "", "status": "undecodable", "reason": str(exc)[:200]}
        f = sb.facts
        if self.tracing.tracer is not None and sampled_traceparent(headers):
            self.tracing.record_receive(headers, m.topic(), append_ms, sb.batch_id)
        correct, extra = None, {"matched_by": MATCHED_BY_IDS}
        if not sb.batch_id:
            # no ids (crayfish-json without its headers): the echo key finds the batch later. Its
            # sequence is unknown until then, so a sampled output is kept for a late check.
            extra = {"matched_by": "", "echo_key": self._echo_key(m.value())}
            if self.checker is not None and extra["echo_key"] and self.checker.sampled(extra["echo_key"]):
                extra["_output"] = arrays_from(sb.outputs) if sb.outputs else from_tensor(sb.output)
        elif self.checker is not None and self.checker.sampled(sb.batch_id):
            correct = self.checker.check(sb.sequence, arrays_from(sb.outputs) if sb.outputs else from_tensor(sb.output),
                                         sb.batch_id)
        return {**base, **extra, "batch_id": sb.batch_id, "status": SCORED, "reason": "", "sequence": sb.sequence,
                "correct": correct,
                "intended_ns": sb.intended_ns, "created_ns": sb.created_ns,
                "input_append_ms": sb.input_append_ms, "worker_receive_ns": f.worker_receive_ns,
                "worker_send_ns": f.worker_send_ns, "decode_ns": f.decode_ns, "inference_ns": f.inference_ns,
                "encode_ns": f.encode_ns, "server_inference_ns": f.server_inference_ns,
                "server_queue_ns": f.server_queue_ns, "backend": f.backend, "worker_id": f.worker_id,
                "engine": f.engine, "server": f.server}

    def _echo_key(self, value) -> str | None:
        try:
            return self.codec.output_echo_key(value)
        except CodecError:  # decode_scored read it, so this does not happen; an unmatched row if it does
            return None

    def _sample_lag(self) -> None:
        """Every ``lag_interval_s``, one :meth:`backlog_sample`; a missed sample is not fatal."""
        with self.backlog_probe(with_appended=True) as sample:
            while not self.stop.wait(self.s.lag_interval_s):
                try:
                    self.lag.append(sample())
                except Exception:  # noqa: BLE001 - e.g. a broker slow to answer: try again next tick
                    continue

    @contextmanager
    def backlog_probe(self, with_appended: bool = False):
        """A function returning ``(t_ns, backlog, committed_lag)`` now (``with_appended``: and the
        records appended to the input topic): the backlog is the records appended to the input topic
        minus the records seen finished on the output and dead-letter topics (distinct batches); the
        committed lag is the worker group's committed-offset lag, or −1 where the group has committed
        nothing. The backlog judges every engine alike: Bytewax and Spark commit no group offsets,
        Flink only on checkpoints."""
        s = self.s
        c = Consumer({**admin_config(s.bootstrap, s.kafka_client), "group.id": s.worker_group or f"collector-{s.input_topic}",
                      "enable.auto.commit": False})
        try:
            md = c.list_topics(s.input_topic, timeout=10)
            parts = [TopicPartition(s.input_topic, p) for p in md.topics[s.input_topic].partitions]

            def sample() -> tuple[int, ...]:
                t = time.time_ns()
                highs = {tp.partition: c.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in parts}
                committed_lag = -1
                if s.worker_group:
                    committed = c.committed(parts, timeout=5)
                    if any(tp.offset >= 0 for tp in committed):
                        committed_lag = sum(highs[tp.partition] - max(tp.offset, 0) for tp in committed)
                appended = sum(highs.values()) - self.input_before
                now = (t, max(appended - self.completed, 0), committed_lag)
                return (*now, appended) if with_appended else now

            yield sample
        finally:
            c.close()

    def _write(self) -> dict:
        joined = self.s.expect_file is None
        sent = pq.read_table(self.s.expect_file) if not joined and Path(self.s.expect_file).exists() else None
        if sent is not None and self.matcher is None:   # stopped before sent.parquet was seen
            self.matcher = EchoMatcher(sent)
            for row in self.rows:
                if row["batch_id"]:
                    self.matcher.claim(row["batch_id"])
        if self.matcher is not None and self.pending:
            self._resolve_pending()
        for row in self.pending:   # never matched: sent.parquet never came (or lives with the runner)
            if row.pop("_output", None) is not None and self.checker is not None:
                self.checker.skip("an output without ids read by a joined collector: matched by the runner, not checked"
                                  if joined else "an output without ids was never matched (no sent.parquet)")
        table = build_batches_table(sent, self.rows)
        if joined:
            pq.write_table(rows_table(self.rows), self.out / "rows.parquet")
        else:
            pq.write_table(table, self.out / "batches.parquet")
        lag = np.array(self.lag, dtype=np.int64).reshape(-1, 4)
        pq.write_table(pa.table({"t_ns": lag[:, 0], "lag": lag[:, 1], "committed_lag": lag[:, 2], "appended": lag[:, 3]}),
                       self.out / "lag.parquet")
        status = table.column("status").to_pylist()
        report = {
            "records_read": len(self.rows),
            "undecodable": self.undecodable,
            "scored": status.count(SCORED),
            "dead_lettered": status.count(DEAD),
            "missing": status.count("missing"),
            # outputs without ids whose echo key matched no sent batch (kept in batches.parquet, sent false)
            "unmatched": int(sum(1 for r in self.rows if not r["batch_id"] and r.get("echo_key"))),
            "matched_by_echo": int(sum(1 for r in self.rows if r.get("matched_by") == "echo")),
            "predictions": self.checker.report() if self.checker else {
                "checked": 0, "wrong": 0, "note": not_checked_note(self.s.check_sample, self.s.generator_settings,
                                                                   self.s.backend)},
            "lag_samples": len(self.lag),
        }
        (self.out / "collector.json").write_text(json.dumps(report, indent=2))
        return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.collector")
    p.add_argument("--config", required=True, help="CollectorSettings JSON or @file")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    raw = a.config if not a.config.startswith("@") else Path(a.config[1:]).read_text()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    col = Collector(CollectorSettings.model_validate_json(raw), out)
    signal.signal(signal.SIGTERM, lambda *_: col.stop.set())
    report = col.run()
    print(json.dumps({k: report[k] for k in ("scored", "dead_lettered", "missing", "unmatched")}))


if __name__ == "__main__":
    main()
