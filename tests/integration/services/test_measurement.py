"""Measurement proven on known cases through the real parts: a real broker, the real generator,
worker, collector and runner. Each test injects something known — a clock offset, a stall of the
sender, a backlog, a record nobody sent, a process burning a known amount of CPU, a model that
disagrees with the reference — and checks that the reported number is exactly that, within the
resolution stated in docs/results.md (broker stamps: 1 ms)."""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.clock import host_clock
from crayfish.codec import get_codec
from crayfish.kafka import (
    RunTopics,
    consumer_config,
    delete_topics,
    probe_skew,
    producer_config,
)
from crayfish.v1 import batch_pb2
from services.analysis import account
from services.runner.experiment import Experiment
from services.runner.experiments import run_experiment
from tests.support.kafka_io import make_batch, send_batches


def _exp(kafka_bootstrap, **fields) -> Experiment:
    base = {"name": "known", "model": "ffnn", "engine": "kafka", "kafka": {"bootstrap": kafka_bootstrap},
            "validity": {"min_duration_s": 1, "min_count": 20}}
    return Experiment.model_validate({**base, **fields})


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------ clock skew


def test_skew_bound_contains_zero_on_one_host_and_an_injected_offset(kafka_bootstrap, topics):
    plain = probe_skew(kafka_bootstrap, topics.probe, probes=10)
    assert plain.probes == 10 and plain.contains(0.0), plain
    # the host clock 750 ms fast: broker − host = −750 ms, and 0 is no longer possible
    fast = probe_skew(kafka_bootstrap, topics.probe, probes=10, clock=host_clock(750.0))
    assert fast.contains(-750.0) and not fast.contains(0.0), fast


def test_injected_clock_offset_and_stall_come_back_in_the_point(kafka_bootstrap, models_dir, tmp_path):
    """Two runs of the same 100/s workload; the second with the generator's clock 400 ms slow and a
    300 ms stall of the sender before batch 200. The offset must show in the skew bound and as +400 ms
    on every latency; the stall in the generator's lateness, the point's send delay and the latency
    from schedule, and not in the latency from creation."""
    workload = {"type": "constant", "rate": 100, "duration_s": 4}
    base = run_experiment(_exp(kafka_bootstrap, workload=workload), tmp_path / "base", models_dir=models_dir)
    shifted = run_experiment(_exp(kafka_bootstrap, workload=workload, inject={
        "clock_offset_ms": -400.0, "generator_stall": {"before_sequence": 200, "ms": 300.0}}),
        tmp_path / "shifted", models_dir=models_dir)
    p0, p1 = base["points"][0], shifted["points"][0]
    for p in (p0, p1):   # every batch through (validity may also judge the machine's load: not the point here)
        assert p["accounting"]["scored"] == p["accounting"]["sent"] == 400, p["accounting"]

    b0, b1 = p0["clock_skew_ms"], p1["clock_skew_ms"]
    assert b0["lower_ms"] <= 0.0 <= b0["upper_ms"], b0
    assert b1["lower_ms"] <= 400.0 <= b1["upper_ms"] and b1["lower_ms"] > 0.0, b1
    # every latency 400 ms longer: the medians differ by the offset, within the broker's 1 ms stamps
    # and the two runs' own spread (their median gap is a few ms at most on this path)
    assert abs((p1["latency_ms"]["p50"] - p0["latency_ms"]["p50"]) - 400.0) <= 5.0, (p0["latency_ms"], p1["latency_ms"])

    stall = p1["generator"]["lateness_ms"]["max"]
    assert 300.0 <= stall < 400.0, p1["generator"]
    assert p0["generator"]["lateness_ms"]["max"] < 300.0
    assert 300.0 <= p1["send_delay_ms"]["max"] < 400.0
    assert p1["latency_from_schedule_ms"]["max"] >= 300.0 + 400.0
    # from creation, the stalled batch is as fast as the others: its wait was before it was created
    assert p1["latency_ms"]["max"] < p1["latency_from_schedule_ms"]["max"] - 250.0


# ------------------------------------------------------------------ backlog, not sent, accounting


def test_backlog_and_a_record_nobody_sent_are_counted_exactly(kafka_bootstrap, topics, tmp_path):
    from services.collector.collector import Collector, CollectorSettings

    run_id = f"k{uuid.uuid4().hex[:6]}"
    send_batches(kafka_bootstrap, topics.input, run_id, range(50), partitions=1)
    group = f"{run_id}-worker"
    c = Consumer(consumer_config(kafka_bootstrap, group, **{"enable.auto.commit": False}))
    c.commit(offsets=[TopicPartition(topics.input, 0, 10)], asynchronous=False)   # the "worker" read 10
    c.close()
    settings = CollectorSettings(bootstrap=kafka_bootstrap, output_topic=topics.output,
                                 dead_letter_topic=topics.dead_letter, input_topic=topics.input,
                                 worker_group=group, expect_file=str(tmp_path / "sent.parquet"),
                                 drain_idle_s=2.0, check_sample=0.0)
    col = Collector(settings, tmp_path)
    report = {}
    runner = threading.Thread(target=lambda: report.update(col.run()), daemon=True)
    runner.start()
    wait_until(lambda: (tmp_path / "collector.ready").exists(), 30, "the collector")
    with col.backlog_probe() as sample:
        _, backlog, committed = sample()
        assert (backlog, committed) == (50, 40)
        codec, p = get_codec("protobuf"), Producer(producer_config(kafka_bootstrap))
        for i in range(20):
            sb = batch_pb2.ScoredBatch(batch_id=f"{run_id}-{i}", sequence=i, created_ns=1, intended_ns=1)
            value, headers = codec.encode_scored(sb)
            p.produce(topics.output, value, headers=headers or None)
        p.flush(10)
        wait_until(lambda: col.completed == 20, 30, "20 outputs read")
        assert sample()[1] == 30
    foreign = batch_pb2.ScoredBatch(batch_id="someone-else-1", sequence=1)
    value, headers = codec.encode_scored(foreign)
    p.produce(topics.output, value, headers=headers or None)
    p.flush(10)
    wait_until(lambda: col.completed == 21, 30, "the foreign record read")
    sent = [make_batch(run_id, i) for i in range(50)]
    pq.write_table(pa.table({"batch_id": [b.batch_id for b in sent], "sequence": list(range(50)),
                             "intended_ns": [b.intended_ns for b in sent], "created_ns": [b.created_ns for b in sent]}),
                   tmp_path / "sent.parquet")
    runner.join(60)
    assert not runner.is_alive()
    table = pq.read_table(tmp_path / "batches.parquet")
    assert account(table) == {"sent": 50, "scored": 20, "dead_lettered": 0, "missing": 30, "duplicates": 0,
                              "not_sent": 1, "unmatched": 0, "checked": 0, "wrong": 0}
    assert report["scored"] == 21 and report["missing"] == 30
    # the collector's own samples meanwhile (every 0.5 s, whenever they fell): between 50 and 29,
    # never rising, 29 at the end (the backlog counts every record seen finished, the foreign one
    # too: docs/results.md)
    lag = pq.read_table(tmp_path / "lag.parquet").column("lag").to_pylist()
    assert lag[-1] == 29 and all(29 <= v <= 50 for v in lag) and lag == sorted(lag, reverse=True), lag


# ------------------------------------------------------------------ resources


BURNER = """
import os, sys, time
from pathlib import Path
ballast = bytearray(256 * 2**20)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
ready, go, done = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.write_text("ready")
while not go.exists():
    time.sleep(0.01)
start = time.process_time()
while time.process_time() - start < 1.5:
    pass
done.write_text(str(time.process_time()))
time.sleep(600)
"""


def test_resource_figures_of_a_process_with_a_known_load(tmp_path):
    """A process holding 256 MiB and burning 1.5 s of CPU after the sampler's first sample: the CPU
    the samples add up to is that 1.5 s, and the resident memory is at least the 256 MiB."""
    from crayfish.host.procs import Service
    from services.runner.resources import ResourceSampler, resource_summary

    ready, go, done = tmp_path / "ready", tmp_path / "go", tmp_path / "done"
    svc = Service("burner", ["-c", BURNER, str(ready), str(go), str(done)], tmp_path / "burner.log",
                  python=sys.executable)
    sampler = ResourceSampler(tmp_path, [svc], interval_s=0.25)
    try:
        sampler.start()
        wait_until(ready.exists, 60, "the ballast allocated")   # its CPU must not count
        # a sample taken after that is the baseline the 1.5 s are measured from
        wait_until(lambda: "burner" in sampler._trees and sampler._trees["burner"].last_t is not None, 30,
                   "the sampler's first sample")
        after = sampler._trees["burner"].last_t
        wait_until(lambda: sampler._trees["burner"].last_t > after, 30, "a sample after the allocation")
        rows_before = len(sampler.rows)
        go.write_text("go")
        wait_until(done.exists, 60, "1.5 s of CPU burnt")
        rows_then = len(sampler.rows)
        wait_until(lambda: len(sampler.rows) >= rows_then + 2, 30, "two samples after the burn")
        sampler.stop()
        t = pq.read_table(tmp_path / "resources.parquet").to_pydict()
        times, cpu = t["t_s"], t["cpu_percent"]
        # each sample's CPU share covers the time since the previous one; count from the rows
        # after the baseline taken once the ballast was in place
        intervals = [0.25] + [b - a for a, b in zip(times, times[1:])]
        burnt = sum(pct / 100 * dt for pct, dt in list(zip(cpu, intervals))[rows_before:])
        assert burnt == pytest.approx(1.5, abs=0.15), (cpu, intervals)
        assert min(t["rss_mb"]) >= 256 and max(t["rss_mb"]) < 256 + 100
        summary = resource_summary(tmp_path)["burner"]
        assert summary["samples"] == len(cpu) and summary["rss_max_mb"] == max(t["rss_mb"])
        assert summary["cpu_max_pct"] == max(cpu) and summary["cpu_mean_pct"] == pytest.approx(sum(cpu) / len(cpu))
        assert svc.cpu_seconds() >= 1.5
    finally:
        sampler.stop()
        svc.stop()


# ------------------------------------------------------------------ predictions


def test_a_model_that_disagrees_with_the_reference_makes_the_point_invalid(kafka_bootstrap, models_dir, tmp_path):
    """The worker scores with an FFNN built from another seed; the collector checks every batch
    against the reference weights: every checked prediction is wrong, and the point is invalid."""
    from services.runner.experiments import summarize_run
    from services.runner.orchestrator import Stack, run_point
    from serving.models import build_model

    other = tmp_path / "other-seed"
    build_model("ffnn", other, seed=7)
    wrong = tmp_path / "models"
    shutil.copytree(Path(models_dir) / "ffnn", wrong / "ffnn")
    shutil.copy(other / "ffnn" / "ffnn.onnx", wrong / "ffnn" / "ffnn.onnx")   # weights (reference) stay seed 42
    exp = _exp(kafka_bootstrap, workload={"type": "closed_loop", "outstanding": 1, "count": 40, "duration_s": 60},
               check_predictions=1.0, validity={"min_duration_s": 0, "min_count": 20})
    run = run_point(Stack(bootstrap=kafka_bootstrap, models_dir=wrong), exp, tmp_path / "point")
    point = summarize_run(exp, run, {})
    acc = point["accounting"]
    assert acc["scored"] == 40 and acc["checked"] == 40 and acc["wrong"] == 40
    assert not point["valid"] and "40 of 40 checked predictions differ from the reference model" in point["reasons"]
    # the same run with the right model: all checked, none wrong, valid
    run = run_point(Stack(bootstrap=kafka_bootstrap, models_dir=Path(models_dir)), exp, tmp_path / "right")
    point = summarize_run(exp, run, {})
    assert (point["accounting"]["checked"], point["accounting"]["wrong"]) == (40, 0) and point["valid"], point["reasons"]


# ------------------------------------------------------------------ the harness's own start


def test_the_generator_producer_is_warm_before_the_first_slot(kafka_bootstrap, models_dir, tmp_path):
    """The idempotent producer gets its id from the broker on its first send; the generator sends a
    warm-up record to the probe topic and flushes it before the schedule starts, so no batch waits
    in the client for that (it did: 12 batches appended 378 ms after their creation). The warm-up
    record is appended before the first batch is created, and it is the probe topic's last record."""
    from services.runner.orchestrator import Stack, run_point

    exp = _exp(kafka_bootstrap, workload={"type": "constant", "rate": 50, "duration_s": 1})
    run = run_point(Stack(bootstrap=kafka_bootstrap, models_dir=Path(models_dir)), exp, tmp_path / "point",
                    keep_topics=True)
    topics = RunTopics.for_run(run.run_id)
    try:
        c = Consumer(consumer_config(kafka_bootstrap, f"t-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
        c.assign([TopicPartition(topics.probe, 0, 0)])
        records = []
        while not records or records[-1].value() != b"generator warm-up":
            got = c.consume(100, timeout=2.0)
            assert got, [m.value()[:20] for m in records]
            records += [m for m in got if not m.error()]
        c.close()
        warm_ms = records[-1].timestamp()[1]
        first_created_ms = min(pq.read_table(run.dir / "sent.parquet").column("created_ns").to_pylist()) / 1e6
        assert warm_ms <= first_created_ms + 1   # broker stamps are truncated to the ms
        assert len(records) == 11   # 10 clock probes, then the warm-up
    finally:
        delete_topics(kafka_bootstrap, topics)


# ------------------------------------------------------------------ what counts as sent


def test_batches_the_broker_refuses_are_not_counted_as_sent(kafka_bootstrap, tmp_path):
    """An input topic that takes no record as big as a batch: every delivery fails. Nothing was sent,
    and the generator says so (it counted every attempt as produced before)."""
    import json

    from crayfish.kafka import create_topics
    from services.generator.generator import run as generate
    from services.generator.settings import GeneratorSettings
    from services.generator.workloads import parse_workload

    t = RunTopics.for_run(f"refused{uuid.uuid4().hex[:6]}")
    create_topics(kafka_bootstrap, t, partitions=1, only=[t.input], configs={"max.message.bytes": "64"})
    try:
        s = GeneratorSettings(bootstrap=kafka_bootstrap, topic=t.input, run_id="refused", model="ffnn",
                              item_shape=[1, 784], workload=parse_workload({"type": "constant", "rate": 50,
                                                                            "duration_s": 0.4}))
        report = generate(s, tmp_path)
    finally:
        delete_topics(kafka_bootstrap, t, only=[t.input])
    assert report["attempted"] == 20 and report["delivery_failures"] == 20, report
    assert report["produced"] == 0 and report["unacknowledged"] == 0
    assert pq.read_table(tmp_path / "sent.parquet").num_rows == 0
    assert json.loads((tmp_path / "generator.json").read_text())["produced"] == 0
