"""observability/: real OpenTelemetry SDK, real span files, no broker and no mocks."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Message
from opentelemetry import trace

from observability import tracing
from observability.hops import HOP, hop_breakdown, hop_span, read_spans, record_hop
from observability.kafka_context import (BATCH_ID, CONSUMER_GROUP, DESTINATION, MESSAGE_KEY,
                                         MESSAGING_SYSTEM, OFFSET, OPERATION, OPERATION_TYPE, PARTITION,
                                         consumer_span, extract_context, inject_headers, producer_span)

OTEL_VARS = ("OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
             "OTEL_TRACES_SAMPLER_ARG", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
             "OTEL_TRACES_EXPORTER", "OTEL_PROPAGATORS")


@pytest.fixture(autouse=True)
def clean_otel(monkeypatch):
    for v in OTEL_VARS:
        monkeypatch.delenv(v, raising=False)
    tracing.shutdown_tracing()
    yield
    tracing.shutdown_tracing()


def _spans(run_dir):
    return read_spans(run_dir)


def test_span_file_and_parent_child_across_kafka_headers(tmp_path):
    tracer = tracing.setup_tracing("generator", tmp_path)
    assert tracing.setup_tracing("generator", tmp_path) is tracer  # idempotent

    with producer_span(tracer, "input", key="b-1", batch_id="b-1", headers=[("x", b"y")]) as (ps, headers):
        pass
    names = [k for k, _ in headers]
    assert "traceparent" in names and ("x", b"y") in headers
    # a second inject replaces rather than duplicates
    assert [k for k, _ in inject_headers(list(headers), trace.set_span_in_context(ps))].count("traceparent") == 1

    # the broker hands the worker a message with the same headers
    msg = Message(topic="input", partition=2, offset=41, key=b"b-1", value=b"\x00" * 10, headers=headers)
    ctx = extract_context(msg.headers())
    assert trace.get_current_span(ctx).get_span_context().span_id == ps.get_span_context().span_id
    with consumer_span(tracer, msg, group="workers") as cs:
        with hop_span(tracer, "decode"):
            pass
        cs.set_attribute(BATCH_ID, "b-1")
        with hop_span(tracer, "score", batch_id="b-1"):
            pass
        with producer_span(tracer, "output", key="b-1", batch_id="b-1") as (_, out_headers):
            pass
    # and the collector reads the output record
    out = Message(topic="output", partition=0, offset=7, key=b"b-1", value=b"", headers=out_headers)
    with consumer_span(tracer, out, group="collector", batch_id="b-1", parent=False):
        pass
    tracing.shutdown_tracing()

    files = list((tmp_path / "spans").glob("*.jsonl"))
    assert [f.name for f in files] == [f"generator-{os.getpid()}.jsonl"]
    spans = {s["name"]: s for s in _spans(tmp_path)}
    assert len(spans) == len(_spans(tmp_path)) == 6
    send_in, proc_in = spans["send input"], spans["process input"]
    send_out = spans["send output"]
    assert send_in["parent_id"] is None and send_in["kind"] == "PRODUCER"
    assert proc_in["trace_id"] == send_in["trace_id"] and proc_in["parent_id"] == send_in["span_id"]
    assert proc_in["kind"] == "CONSUMER"
    assert proc_in["links"] == []  # the parent is the producer span; a link would repeat it
    for hop in ("crayfish.decode", "crayfish.score"):
        assert spans[hop]["parent_id"] == proc_in["span_id"] and spans[hop]["trace_id"] == send_in["trace_id"]
    assert spans["crayfish.score"]["attributes"][HOP] == "score"
    assert send_out["parent_id"] == proc_in["span_id"]
    a = proc_in["attributes"]
    assert a[MESSAGING_SYSTEM] == "kafka" and a[DESTINATION] == "input" and a[OPERATION_TYPE] == "process"
    assert a[OPERATION] == "process" and a[PARTITION] == "2" and a[OFFSET] == 41 and a[MESSAGE_KEY] == "b-1"
    assert a[CONSUMER_GROUP] == "workers" and a[BATCH_ID] == "b-1"
    assert send_in["attributes"][OPERATION] == "publish" and send_in["attributes"][BATCH_ID] == "b-1"
    # parent=False: a new trace, linked to the worker's output send
    proc_out = spans["process output"]
    assert proc_out["parent_id"] is None and proc_out["trace_id"] != send_in["trace_id"]
    assert proc_out["links"] == [{"trace_id": send_out["trace_id"], "span_id": send_out["span_id"]}]
    for s in spans.values():
        assert s["service"] == "generator" and s["end_ns"] >= s["start_ns"] > 0


def test_extract_without_headers_gives_root(tmp_path):
    tracer = tracing.setup_tracing("worker", tmp_path)
    assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid
    assert not trace.get_current_span(extract_context([("k", None)])).get_span_context().is_valid
    with consumer_span(tracer, Message(topic="t", partition=0, offset=0, key=None, value=None)) as s:
        assert s.is_recording()
    tracing.shutdown_tracing()
    (only,) = _spans(tmp_path)
    assert only["parent_id"] is None and only["links"] == []


def test_service_name_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "collector")
    tracer = tracing.setup_tracing("generator", tmp_path)
    with tracer.start_as_current_span("x"):
        pass
    tracing.shutdown_tracing()
    assert [f.name for f in (tmp_path / "spans").glob("*.jsonl")] == [f"collector-{os.getpid()}.jsonl"]


def test_sdk_disabled_is_noop(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracer = tracing.setup_tracing("generator", tmp_path)
    with producer_span(tracer, "input", batch_id="b") as (span, headers):
        assert not span.is_recording()
    assert headers == []
    tracing.shutdown_tracing()
    assert not (tmp_path / "spans").exists()


def test_ratio_sampler_zero_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    tracer = tracing.setup_tracing("generator", tmp_path)
    for i in range(20):
        with producer_span(tracer, "input", batch_id=str(i)) as (span, _):
            assert not span.is_recording()
    tracing.shutdown_tracing()
    assert _spans(tmp_path) == []


def test_otlp_endpoint_selects_otlp_exporter(tmp_path, monkeypatch):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    tracing.setup_tracing("generator", tmp_path)
    procs = tracing._provider._active_span_processor._span_processors
    assert [type(p.span_exporter) for p in procs] == [OTLPSpanExporter]
    tracing.shutdown_tracing()  # nothing queued: returns at once
    assert not (tmp_path / "spans").exists()


# ---- hops ------------------------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000  # ns


def _write_run(run_dir, tracer_spans: bool = True):
    """Three scored batches (+ one dead-lettered, + one without spans), hops in ms:
    produce 1, wait 2, decode 0.5, score 30, encode 0.5, publish 1 -> e2e 35 (no residual)."""
    rows = []
    for i in range(5):
        created = T0 + i * 100_000_000
        inp_ms = created // 1_000_000 + 1
        recv = (inp_ms + 2) * 1_000_000
        send = recv + 31_000_000
        rows.append({"batch_id": f"b{i}", "status": "dead_lettered" if i == 3 else "scored",
                     "created_ns": created, "input_append_ms": inp_ms, "worker_receive_ns": recv,
                     "worker_send_ns": send, "output_append_ms": send // 1_000_000 + 1,
                     # the columns disagree with the spans on purpose for score (spans win)
                     "decode_ns": 500_000, "inference_ns": 25_000_000, "encode_ns": 500_000})
    pq.write_table(pa.Table.from_pylist(rows), run_dir / "batches.parquet")
    tracer = tracing.setup_tracing("worker", run_dir)
    for r in rows[:4]:  # b4 has no spans
        msg = Message(topic="in", partition=0, offset=0, key=r["batch_id"].encode(), value=b"",
                      headers=[])
        with consumer_span(tracer, msg) as cs:
            cs.set_attribute(BATCH_ID, r["batch_id"])
            t = r["worker_receive_ns"]
            record_hop(tracer, "decode", t, t + 500_000)
            record_hop(tracer, "score", t + 500_000, t + 30_500_000)  # 30 ms
            # encode left to the columns
    tracing.shutdown_tracing()
    return rows


def test_hop_breakdown(tmp_path):
    _write_run(tmp_path)
    spans = read_spans(tmp_path)
    assert len(spans) == 12
    h = hop_breakdown(tmp_path)
    assert h["batches"] == 3 and h["batches_scored"] == 4
    hm = h["hops_ms"]
    expect = {"produce": 1.0, "wait": 2.0, "decode": 0.5, "score": 30.0, "encode": 0.5, "publish": 1.0,
              "e2e": 35.0}
    for hop, v in expect.items():
        assert hm[hop]["p50"] == pytest.approx(v, abs=1e-6), hop
        assert hm[hop]["p99"] == pytest.approx(v, abs=1e-6), hop
        assert hm[hop]["count"] == 3
    assert h["source"]["score"] == {"spans": 3, "columns": 0}
    assert h["source"]["encode"] == {"spans": 0, "columns": 3}
    assert h["bottleneck"] == "score" and h["bottleneck_ms"] == pytest.approx(30.0)
    sc = h["sum_check"]
    assert sc["ok"] and sc["residual_mean_ms"] == pytest.approx(0.0, abs=1e-6)
    assert sc["e2e_mean_ms"] == pytest.approx(35.0) and sc["batches_within_tolerance"] == 1.0
    json.dumps(h)  # summary-ready


def test_hop_breakdown_residual_fails_check(tmp_path):
    rows = _write_run(tmp_path)
    # the worker spends 10 ms outside decode/score/encode: send stamps move, e2e grows, residual = 10
    t = pa.Table.from_pylist([{**r, "worker_send_ns": r["worker_send_ns"] + 10_000_000,
                               "output_append_ms": r["output_append_ms"] + 10} for r in rows])
    pq.write_table(t, tmp_path / "batches.parquet")
    h = hop_breakdown(tmp_path)
    assert h["hops_ms"]["e2e"]["p50"] == pytest.approx(45.0)
    assert h["sum_check"]["residual_mean_ms"] == pytest.approx(10.0)
    assert not h["sum_check"]["ok"] and h["bottleneck"] == "score"


def test_hop_breakdown_without_spans(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"batch_id": "a", "status": "scored", "created_ns": T0,
                                          "input_append_ms": 1, "worker_receive_ns": 1, "worker_send_ns": 1,
                                          "output_append_ms": 1, "decode_ns": 1, "inference_ns": 1,
                                          "encode_ns": 1}]), tmp_path / "batches.parquet")
    h = hop_breakdown(tmp_path)
    assert h["batches"] == 0 and h["hops_ms"] == {} and h["bottleneck"] is None
