"""observability/: the services' tracing API with real span files, a real OTLP/gRPC receiver and
real processes; the per-hop breakdown over real span files and batches.parquet. No broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from concurrent import futures

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

import observability
from crayfish.host.ports import free_port
from observability import light, spanlog
from observability.context import client_traceparent, sampled_traceparent, worker_context, worker_span_ids
from observability.hops import hop_breakdown, read_spans
from observability.names import (BATCH_ID, DESTINATION, HOP, MESSAGING_SYSTEM, OFFSET, OPERATION, OPERATION_TYPE,
                                 PARTITION, RPC_SYSTEM, SPANS_DIR_ENV, TRACEPARENT)
from observability.spanlog import SpanLog, new_span_id, new_trace_id, traceparent

OTEL_VARS = ("OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
             "OTEL_TRACES_SAMPLER_ARG", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
             "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_INSECURE", SPANS_DIR_ENV)


@pytest.fixture(autouse=True)
def clean_otel(monkeypatch):
    for v in OTEL_VARS:
        monkeypatch.delenv(v, raising=False)


def _traced_input() -> list:
    """Input headers as a sampling generator writes them."""
    return [("x", b"y"), (TRACEPARENT, traceparent(new_trace_id(), new_span_id()).encode())]


# ---- the API costs nothing to import -------------------------------------------------------------

def test_importing_the_services_api_loads_no_opentelemetry(tmp_path):
    code = textwrap.dedent("""
        import sys
        import observability, observability.light, observability.context, observability.spanlog
        import observability.compact, observability.hops
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        # the control: setting up a service's tracing is what loads the SDK
        import os
        os.environ["CRAYFISH_SPANS_DIR"] = sys.argv[1]
        t = observability.light.batch_tracing("generator")
        assert t.tracer is not None and "opentelemetry.sdk" in sys.modules
        t.close()
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k not in OTEL_VARS}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_package_exports_the_light_api():
    for name in observability.__all__:
        assert getattr(observability, name) is getattr(light, name)
    assert {"batch_tracing", "sampled_traceparent", "worker_context", "SPANS_DIR_ENV"} <= set(observability.__all__)


# ---- header scanning --------------------------------------------------------------------------------

def test_sampled_traceparent_and_worker_context():
    tid, sid = new_trace_id(), new_span_id()
    sampled = [("k", b"v"), (TRACEPARENT, traceparent(tid, sid).encode())]
    unsampled = [(TRACEPARENT, traceparent(tid, sid, sampled=False).encode())]
    assert sampled_traceparent(sampled) and not sampled_traceparent(unsampled)
    assert not sampled_traceparent(None) and not sampled_traceparent([("k", b"v")])
    assert not sampled_traceparent([(TRACEPARENT, b"00-xx-yy-zz")])
    ctx = worker_context(sampled)
    assert ctx[0] == f"{tid:032x}" and ctx[1] == f"{sid:016x}" and ctx[2] % 8 == 0
    assert worker_context(unsampled) is None and worker_context(None) is None
    assert worker_context([(TRACEPARENT, traceparent(tid, sid))])[:2] == ctx[:2]  # str values too
    ids = worker_span_ids(ctx[2])
    assert len(set(ids)) == 5
    assert client_traceparent(ctx) == f"00-{ctx[0]}-{ids[2]:016x}-01"


# ---- one sampled batch through generator, worker, scoring server and collector ------------------

def test_spans_of_one_batch_link_across_services(tmp_path, monkeypatch):
    monkeypatch.setenv(SPANS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    generator = light.batch_tracing("generator")
    span = generator.start_send("input", "b-1")
    headers = generator.headers_for(span, [("x", b"y")])
    span.end()
    assert ("x", b"y") in headers and sampled_traceparent(headers)

    worker = light.batch_tracing("kafka-worker")
    ctx = worker_context(headers)
    received = 1_700_000_000_000_000_000
    timing = ("b-1", received, 500_000, 30_000_000, 400_000, received + 31_000_000)
    out_headers = worker.record_worker(ctx, "input", 2, 41, timing, "output", [("h", b"1")], client="scoring")
    assert ("h", b"1") in out_headers and sampled_traceparent(out_headers)

    server = light.batch_tracing("scoring")
    t = received + 600_000
    server.record_server(client_traceparent(ctx), "/crayfish.v1.Scoring/Score", t, 1_000_000, 28_000_000,
                         t + 29_500_000, "ffnn")
    collector = light.batch_tracing("collector")
    collector.record_receive(out_headers, "output", received // 1_000_000 + 32, "b-1")
    for tracing in (generator, worker, server, collector):
        tracing.close()

    files = sorted(f.name for f in (tmp_path / "spans").glob("*.jsonl"))
    assert files == sorted(f"{s}-{os.getpid()}.jsonl" for s in ("generator", "kafka-worker", "scoring", "collector"))
    spans = read_spans(tmp_path)
    by_name = {s["name"]: s for s in spans}
    assert len(spans) == len(by_name) == 10
    send_in, process = by_name["send input"], by_name["process input"]
    assert send_in["parent_id"] is None and send_in["kind"] == "PRODUCER" and send_in["service"] == "generator"
    assert send_in["attributes"][BATCH_ID] == "b-1" and send_in["attributes"][OPERATION] == "publish"
    assert process["kind"] == "CONSUMER" and process["parent_id"] == send_in["span_id"]
    assert {s["trace_id"] for s in spans} == {send_in["trace_id"]}
    a = process["attributes"]
    assert a[MESSAGING_SYSTEM] == "kafka" and a[DESTINATION] == "input" and a[OPERATION_TYPE] == "process"
    assert a[PARTITION] == "2" and a[OFFSET] == 41 and a[BATCH_ID] == "b-1"
    assert (process["start_ns"], process["end_ns"]) == (received, received + 31_000_000)
    for hop, start, took in (("decode", received, 500_000), ("score", received + 500_000, 30_000_000),
                             ("encode", received + 30_500_000, 400_000)):
        s = by_name[f"crayfish.{hop}"]
        assert s["parent_id"] == process["span_id"] and s["attributes"][HOP] == hop
        assert (s["start_ns"], s["end_ns"] - s["start_ns"]) == (start, took)
    score = by_name["crayfish.score"]
    assert score["kind"] == "CLIENT" and score["attributes"][RPC_SYSTEM] == "grpc"
    srv = by_name["crayfish.v1.Scoring/Score"]
    assert srv["kind"] == "SERVER" and srv["parent_id"] == score["span_id"] and srv["service"] == "scoring"
    assert by_name["crayfish.server_queue"]["parent_id"] == srv["span_id"]
    inference = by_name["crayfish.inference"]
    assert inference["parent_id"] == srv["span_id"] and inference["end_ns"] - inference["start_ns"] == 28_000_000
    send_out, receive = by_name["send output"], by_name["receive output"]
    assert send_out["parent_id"] == process["span_id"] and send_out["kind"] == "PRODUCER"
    assert receive["parent_id"] == send_out["span_id"] and receive["service"] == "collector"
    assert receive["attributes"][BATCH_ID] == "b-1"


def test_flush_writes_what_was_recorded_before_close(tmp_path, monkeypatch):
    monkeypatch.setenv(SPANS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(spanlog, "FLUSH_S", 3600.0)  # no background flush during this test
    worker = light.batch_tracing("kafka-worker")
    ctx = worker_context(_traced_input())
    worker.record_worker(ctx, "in", 0, 7, ("b-7", 10, 1, 2, 3, 20), "out", None)
    assert read_spans(tmp_path) == []
    worker.flush()
    assert [s["name"] for s in read_spans(tmp_path)] == ["process in", "crayfish.decode", "crayfish.score",
                                                         "crayfish.encode", "send out"]
    worker.close()
    assert len(read_spans(tmp_path)) == 5  # nothing written twice


def test_spans_survive_a_kill_right_after_flush(tmp_path):
    """What a Spark task relies on: its Python worker may be killed by a signal once the task is
    done, so the spans must be on disk when flush() returns (the background flush never ran)."""
    code = textwrap.dedent("""
        import os, signal, sys
        from observability import light, spanlog
        from observability.spanlog import new_span_id, new_trace_id, traceparent
        spanlog.FLUSH_S = 3600.0
        t = light.batch_tracing("spark-worker")
        ctx = light.worker_context([("traceparent", traceparent(new_trace_id(), new_span_id()).encode())])
        t.record_worker(ctx, "in", 0, 1, ("b-1", 10, 1, 2, 3, 20), "out", None)
        if sys.argv[1] == "flush":
            t.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    for mode, expected in (("flush", 5), ("no-flush", 0)):
        run_dir = tmp_path / mode
        env = {**{k: v for k, v in os.environ.items() if k not in OTEL_VARS}, SPANS_DIR_ENV: str(run_dir)}
        proc = subprocess.run([sys.executable, "-c", code, mode], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert len(read_spans(run_dir)) == expected, mode


# ---- what the environment decides ----------------------------------------------------------------

def test_off_without_a_destination_or_when_disabled(tmp_path, monkeypatch):
    assert light.batch_tracing("generator").tracer is None  # neither spans folder nor endpoint
    monkeypatch.setenv(SPANS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    t = light.batch_tracing("generator")
    assert t.tracer is None and t.start_send("input", "b") is None
    assert t.headers_for(None, [("x", b"y")]) == [("x", b"y")]
    t.flush()
    t.close()
    assert not (tmp_path / "spans").exists()


def test_exporter_none_records_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv(SPANS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    t = light.batch_tracing("generator")
    assert t.tracer is not None
    t.start_send("input", "b").end()
    t.close()
    assert read_spans(tmp_path) == [] and not (tmp_path / "spans").exists()


def test_ratio_sampler_zero_samples_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(SPANS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    t = light.batch_tracing("generator")
    assert all(t.start_send("input", str(i)) is None for i in range(50))
    t.close()
    assert read_spans(tmp_path) == []


def test_service_name_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv(SPANS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "collector")
    t = light.batch_tracing("generator")
    t.start_send("input", "b").end()
    t.close()
    assert [f.name for f in (tmp_path / "spans").glob("*.jsonl")] == [f"collector-{os.getpid()}.jsonl"]
    assert [s["service"] for s in read_spans(tmp_path)] == ["collector"]


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self):
        self.spans = []

    def Export(self, request, context):  # noqa: N802 (the gRPC method name)
        for rs in request.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
            for ss in rs.scope_spans:
                self.spans.extend((service, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_otlp_endpoint_exports_the_spans_over_grpc(tmp_path, monkeypatch):
    receiver = _Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        worker = light.batch_tracing("kafka-worker")
        ctx = worker_context(_traced_input())
        worker.record_worker(ctx, "in", 3, 9, ("b-9", 100, 10, 20, 30, 200), "out", None)
        worker.close()
    finally:
        server.stop(None)
    assert not (tmp_path / "spans").exists()  # no spans folder: OTLP only
    got = {s.name: (service, s) for service, s in receiver.spans}
    assert set(got) == {"process in", "crayfish.decode", "crayfish.score", "crayfish.encode", "send out"}
    assert {service for service, _ in got.values()} == {"kafka-worker"}
    process = got["process in"][1]
    assert process.trace_id.hex() == ctx[0] and process.parent_span_id.hex() == ctx[1]
    assert (process.start_time_unix_nano, process.end_time_unix_nano) == (100, 200)
    score = got["crayfish.score"][1]
    assert score.parent_span_id == process.span_id
    assert {a.key: a.value.string_value for a in score.attributes}[HOP] == "score"


# ---- the breakdown -----------------------------------------------------------------------------------

T0 = 1_700_000_000_000_000_000  # ns


def _batches(run_dir) -> list[dict]:
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
    return rows


def _plain_span_lines(run_dir, rows) -> None:
    """Spans as plain lines (as the Kafka Streams worker writes them): a consumer span with the
    batch id and decode/score children; encode left to the columns."""
    log = SpanLog("worker", run_dir)
    for r in rows[:4]:  # b4 has no spans
        trace, process = new_trace_id(), new_span_id()
        t = r["worker_receive_ns"]
        log.add(trace, process, None, "process in", "CONSUMER", t, r["worker_send_ns"], {BATCH_ID: r["batch_id"]})
        log.add(trace, new_span_id(), process, "crayfish.decode", "INTERNAL", t, t + 500_000, {HOP: "decode"})
        log.add(trace, new_span_id(), process, "crayfish.score", "INTERNAL", t + 500_000, t + 30_500_000,
                {HOP: "score"})
    log.close()


def test_hop_breakdown(tmp_path):
    rows = _batches(tmp_path)
    _plain_span_lines(tmp_path, rows)
    assert len(read_spans(tmp_path)) == 12
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
    assert h["score_parts_ms"] == {}
    json.dumps(h)  # summary-ready


def test_hop_breakdown_from_compact_worker_lines_and_server_spans(tmp_path, monkeypatch):
    rows = _batches(tmp_path)
    monkeypatch.setenv(SPANS_DIR_ENV, str(tmp_path))
    worker, server = light.batch_tracing("kafka-worker"), light.batch_tracing("scoring")
    for r in rows[:4]:
        ctx = worker_context(_traced_input())
        recv, send = r["worker_receive_ns"], r["worker_send_ns"]
        worker.record_worker(ctx, "in", 0, 1, (r["batch_id"], recv, 500_000, 30_000_000, 500_000, send), "out",
                             None, client="scoring")
        server.record_server(client_traceparent(ctx), "/crayfish.v1.Scoring/Score", recv + 600_000, 2_000_000,
                             20_000_000, recv + 23_000_000, "ffnn")
    worker.close()
    server.close()
    compact = [json.loads(line) for f in (tmp_path / "spans").glob("kafka-worker-*.jsonl")
               for line in f.read_text().splitlines()]
    assert [rec["compact"] for rec in compact] == ["worker"]  # one line for all four batches
    h = hop_breakdown(tmp_path)
    assert h["batches"] == 3 and h["spans"] == 4 * 5 + 4 * 3
    assert all(h["source"][hop] == {"spans": 3, "columns": 0} for hop in ("decode", "score", "encode"))
    assert h["hops_ms"]["score"]["p50"] == pytest.approx(30.0) and h["sum_check"]["ok"]
    parts = h["score_parts_ms"]
    assert parts["source"] == {"spans": 3, "columns": 0}
    assert parts["server_queue"]["p50"] == pytest.approx(2.0) and parts["inference"]["p50"] == pytest.approx(20.0)
    assert parts["client"]["p50"] == pytest.approx(8.0)


def test_hop_breakdown_residual_fails_check(tmp_path):
    rows = _batches(tmp_path)
    _plain_span_lines(tmp_path, rows)
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


def test_read_spans_skips_a_torn_last_line(tmp_path):
    log = SpanLog("worker", tmp_path)
    log.add(1, 2, None, "x", "INTERNAL", 1, 2, {})
    log.close()
    (f,) = (tmp_path / "spans").glob("*.jsonl")
    with open(f, "a", encoding="utf-8") as fh:
        fh.write('{"trace_id":"00')  # killed mid-write
    assert [s["name"] for s in read_spans(tmp_path)] == ["x"]


def test_hop_breakdown_with_absent_stamps_reports_absent_hops_not_differences_from_zero(tmp_path):
    """Outputs of a pipeline that writes no worker stamps (crayfish-json without our headers): the
    generator's send span makes the batch traced, but input append, worker stamps and timers are 0.
    Only e2e (output append − created) is measured; every other hop is absent, none is ±1.8e12 ms."""
    rows = []
    log = SpanLog("generator", tmp_path)
    for i in range(3):
        created = T0 + i * 100_000_000
        rows.append({"batch_id": f"b{i}", "status": "scored", "created_ns": created, "input_append_ms": 0,
                     "worker_receive_ns": 0, "worker_send_ns": 0, "output_append_ms": created // 1_000_000 + 12,
                     "decode_ns": 0, "inference_ns": 0, "encode_ns": 0, "server_queue_ns": 0,
                     "server_inference_ns": 0})
        log.add(new_trace_id(), new_span_id(), None, "send in", "PRODUCER", created, created + 100_000,
                {BATCH_ID: f"b{i}"})
    log.close()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "batches.parquet")
    h = hop_breakdown(tmp_path)
    assert h["batches"] == 3
    assert set(h["hops_ms"]) == {"e2e"} and h["hops_ms"]["e2e"]["p50"] == pytest.approx(12.0)
    assert h["absent"] == ["produce", "wait", "decode", "score", "encode", "publish"]
    assert h["bottleneck"] is None and h["bottleneck_ms"] is None and h["score_parts_ms"] == {}
    assert h["sum_check"] == {"complete_batches": 0}
    assert h["source"]["score"] == {"spans": 0, "columns": 0}
    json.dumps(h)
    # one batch with its input append (2 ms after created): produce over that batch alone, the
    # others still absent; the sum check still has no complete batch
    rows[1]["input_append_ms"] = (rows[1]["created_ns"] // 1_000_000) + 2
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "batches.parquet")
    h = hop_breakdown(tmp_path)
    assert h["hops_ms"]["produce"] == {"p50": 2.0, "p99": 2.0, "mean": 2.0, "count": 1}
    assert "produce" not in h["absent"] and h["bottleneck"] == "produce"
    for v in (x for hop in h["hops_ms"].values() for x in (hop["p50"], hop["mean"])):
        assert abs(v) < 1e6   # nothing computed from a 0 stamp
