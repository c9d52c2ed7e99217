"""A pipeline of someone else's, through the real broker: it reads the crayfish-json input topic and
writes outputs that echo the input (creationTimestamp, sizes, dataPoint, re-printed its own way)
with a prediction and *without* the Kafka headers, as most real jobs do. The real generator (closed
loop: it needs the outputs back to send more) and the real collector must account for every batch
by the echo key, leave every hop that needs a worker stamp absent, and measure the injected delay
in the µs-resolution e2e at the collector."""

from __future__ import annotations

import json
import threading
import time
import uuid

import numpy as np
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.kafka import (
    RunTopics,
    consumer_config,
    producer_config,
)
from services.analysis import PointRules, Warmup, stamp_hops, summarize_point
from services.collector.collector import Collector, CollectorSettings
from services.generator.generator import run as run_generator
from services.generator.settings import GeneratorSettings

DELAY_S = 0.030     # the pipeline holds every record this long before it writes the output
COUNT = 60


def _pipeline(bootstrap: str, topics: RunTopics, stop: threading.Event, written: list[int]) -> None:
    """The third-party job: value in, value out, headers dropped; floats re-printed by Python."""
    c = Consumer(consumer_config(bootstrap, f"pipe-{uuid.uuid4().hex[:6]}", **{"enable.auto.commit": False}))
    c.assign([TopicPartition(topics.input, 0, 0)])
    p = Producer(producer_config(bootstrap))
    try:
        while not stop.is_set():
            for m in c.consume(16, timeout=0.1):
                if m.error():
                    continue
                doc = json.loads(m.value())
                values = np.array(doc["dataPoint"].rstrip(",").split(","), dtype=np.float32)
                doc["dataPoint"] = ",".join(repr(float(v)) for v in values)   # "0.10000000149011612", no final ","
                doc["prediction"] = "[[0.5, 0.5]]"
                time.sleep(DELAY_S)
                p.produce(topics.output, json.dumps(doc).encode())               # no headers
                p.poll(0)
                written.append(1)
            p.flush(5)
    finally:
        p.flush(10)
        c.close()


def test_outputs_without_headers_are_accounted_by_their_echo_and_the_delay_is_measured(kafka_bootstrap, topics,
                                                                                      tmp_path):
    run_id = f"x{uuid.uuid4().hex[:6]}"
    gen_dir, col_dir = tmp_path / "gen", tmp_path / "col"
    col_dir.mkdir()
    col = Collector(CollectorSettings(bootstrap=kafka_bootstrap, output_topic=topics.output,
                                      dead_letter_topic=topics.dead_letter, input_topic=topics.input,
                                      codec="crayfish-json", expect_file=str(gen_dir / "sent.parquet"),
                                      drain_idle_s=60.0, check_sample=0.0), col_dir)
    report: dict = {}
    collector = threading.Thread(target=lambda: report.update(col.run()), daemon=True)
    collector.start()
    deadline = time.monotonic() + 30
    while not (col_dir / "collector.ready").exists():
        assert time.monotonic() < deadline, "the collector did not start"
        time.sleep(0.02)
    stop, written = threading.Event(), []
    pipe = threading.Thread(target=_pipeline, args=(kafka_bootstrap, topics, stop, written), daemon=True)
    pipe.start()
    try:
        # pool_size 1 and 4 outstanding: batches sent in the same millisecond share an echo key,
        # so they are told apart by order alone (services.collector.batches)
        gs = GeneratorSettings(bootstrap=kafka_bootstrap, topic=topics.input, run_id=run_id, model="ffnn",
                               item_shape=[1, 8], codec="crayfish-json", pool_size=1,
                               feedback_topics=[topics.output, topics.dead_letter],
                               workload={"type": "closed_loop", "outstanding": 4, "count": COUNT, "duration_s": 60})
        gen = run_generator(gs, gen_dir)
        sent_at = time.monotonic()
        # the generator got every output back through the echo key (else it would have waited 30 s)
        assert gen["produced"] == COUNT and gen["stuck_outstanding"] == 0, gen
        collector.join(30)
        assert not collector.is_alive()
        # it stopped because every sent batch was accounted for, not after drain_idle_s (60 s)
        assert time.monotonic() - sent_at < 20
    finally:
        stop.set()
        pipe.join(10)

    sent = pq.read_table(gen_dir / "sent.parquet")
    keys = sent.column("echo_key").to_pylist()
    assert len(keys) == COUNT and all(keys)
    assert report["scored"] == COUNT and report["missing"] == 0 and report["unmatched"] == 0
    assert report["matched_by_echo"] == COUNT and report["records_read"] == len(written) == COUNT
    assert report["predictions"]["note"] == "not checked: check_sample is 0"

    table = pq.read_table(col_dir / "batches.parquet")
    d = table.to_pydict()
    assert d["status"] == ["scored"] * COUNT and all(d["sent"]) and d["matched_by"] == ["echo"] * COUNT
    assert d["batch_id"] == sent.column("batch_id").to_pylist() and sum(d["duplicates"]) == 0
    assert all(r == 0 for r in d["input_append_ms"])   # as read: the outputs carry no input stamp

    hops = stamp_hops(table)
    for hop in ("produce", "wait", "decode", "score", "encode", "publish"):
        assert hops[hop] == {"p50": None, "mean": None}, (hop, hops[hop])
    # e2e from the broker stamp (ms, truncated) and at the collector (µs): both at least the delay
    assert hops["e2e"]["p50"] >= DELAY_S * 1e3 - 1.0 and hops["e2e"]["p50"] < 10_000
    assert hops["e2e_receive"]["p50"] >= DELAY_S * 1e3
    receive_ms = (np.asarray(d["collector_receive_ns"]) - np.asarray(d["created_ns"])) / 1e6
    assert receive_ms.min() >= DELAY_S * 1e3, receive_ms.min()
    # the collector polls after the broker appended: its receive is not before the output append (1 ms stamps)
    assert (np.asarray(d["collector_receive_ns"]) >= (np.asarray(d["output_append_ms"]) - 1) * 1_000_000).all()

    p = summarize_point(table, PointRules(min_duration_s=0, min_count=0, rate_tolerance=1.0, warmup=Warmup(0)))
    assert p["accounting"]["scored"] == COUNT and p["accounting"]["missing"] == 0
    assert p["accounting"]["unmatched"] == 0 and p["valid"], p["reasons"]
    assert p["latency_receive_ms"]["count"] == COUNT and p["latency_receive_ms"]["p50"] >= DELAY_S * 1e3
