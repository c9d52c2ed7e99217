"""The gRPC scoring server (serving.scoring) and its core (serving.core): real in-process servers
on 127.0.0.1 (port 0), the real ONNX Runtime FFNN, real clients; no mocks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crayfish.tensor import from_tensor, to_tensor
from crayfish.v1 import scoring_pb2, scoring_pb2_grpc, tensor_pb2
from serving.core import ScoringCore
from serving.errors import (
    BackendError,
    BadInputError,
    DeadlineExceededError,
    ModelNotFoundError,
    OverloadedError,
    ServingError,
    UnavailableError,
    error_from_status,
    grpc_status,
)
from serving.models import build_model, default_models_dir, reference_forward
from serving.scoring import ScoringSettings
from serving.scoring.server import REQUEST_ID_METADATA, SCORING_SERVICE, build_server
from tests.support.conformance_serving import wait_until
from tests.support.procs import loopback_listeners

REPO = Path(__file__).resolve().parents[3]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def ffnn():
    return build_model("ffnn", default_models_dir(), seed=42)


@contextmanager
def running(settings: ScoringSettings, *, core=None, credentials=None, target_host="127.0.0.1",
            channel_options=()):
    server, core, port = build_server(settings, core=core)
    server.start()
    target = f"{target_host}:{port}"
    channel = (grpc.secure_channel(target, credentials, options=list(channel_options))
               if credentials is not None else grpc.insecure_channel(target))
    try:
        yield SimpleNamespace(stub=scoring_pb2_grpc.ScoringStub(channel),
                              health=health_pb2_grpc.HealthStub(channel), channel=channel,
                              core=core, port=port)
    finally:
        channel.close()
        server.stop(0).wait()
        core.close(timeout=0.2)


def req(x: np.ndarray, model: str = "ffnn", request_id: str = "") -> scoring_pb2.ScoreRequest:
    return scoring_pb2.ScoreRequest(model=model, input=to_tensor(x), request_id=request_id)


def rand(b: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((b, 1, 784), dtype=np.float32)


def sleep_settings(delay_ms: float, **kw) -> ScoringSettings:
    return ScoringSettings(backend="sleep", backend_options={"delay_ms": delay_ms}, warmup=False, **kw)


@pytest.fixture(scope="module")
def srv(ffnn):
    hung = {"name": "ffnn-hung", "model": "ffnn", "backend": "sleep",
            "backend_options": {"delay_ms": 2000}, "warmup": False}
    with running(ScoringSettings(models=["ffnn", hung], instances=2)) as s:
        yield s


# -- health, reflection, describe ----------------------------------------------------------------
def test_health_serving_and_reflection(srv):
    for service in ("", SCORING_SERVICE):
        r = srv.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert r.status == SERVING
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    services = ProtoReflectionDescriptorDatabase(srv.channel).get_services()
    assert SCORING_SERVICE in services and "grpc.health.v1.Health" in services


def test_not_serving_until_loaded():
    core = ScoringCore(ScoringSettings(backend="noop"), load=False)
    with running(core.settings, core=core) as s:
        check = health_pb2.HealthCheckRequest(service=SCORING_SERVICE)
        assert s.health.Check(check, timeout=5).status == NOT_SERVING
        with pytest.raises(grpc.RpcError) as ei:
            s.stub.Score(req(rand(1, 0)), timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        core.load()
        assert core.ready
        assert s.health.Check(check, timeout=5).status == SERVING
        assert s.stub.Score(req(rand(1, 0)), timeout=5).backend == "noop"


def test_describe_model(srv):
    d = srv.stub.DescribeModel(scoring_pb2.DescribeModelRequest(model="ffnn"), timeout=5)
    assert d.model == "ffnn" and d.backend == "onnxruntime"
    assert [(t.name, t.dtype, list(t.shape)) for t in d.inputs] == \
        [("input_1", tensor_pb2.DTYPE_FLOAT32, [-1, 1, 784])]
    assert [(t.name, t.dtype, list(t.shape)) for t in d.outputs] == \
        [("output", tensor_pb2.DTYPE_FLOAT32, [-1, 10])]
    with pytest.raises(grpc.RpcError) as ei:
        srv.stub.DescribeModel(scoring_pb2.DescribeModelRequest(model="nope"), timeout=5)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND


# -- scoring -------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 7])
def test_unary_score_matches_reference(srv, ffnn, batch):
    x = rand(batch, batch)
    r = srv.stub.Score(req(x, request_id=f"r{batch}"), timeout=10)
    y = from_tensor(r.output)
    assert y.shape == (batch, 10)
    np.testing.assert_allclose(y, reference_forward("ffnn", ffnn.weights, x), atol=1e-4, rtol=0)
    assert r.request_id == f"r{batch}" and r.model == "ffnn"
    assert r.server == "crayfish-scoring" and r.backend == "onnxruntime"
    assert r.inference_ns > 0 and r.queue_ns >= 0


def test_score_stream_answers_every_request(srv, ffnn):
    xs = {f"id-{i}": rand(1 + i % 4, 100 + i) for i in range(50)}
    answers = {}
    for r in srv.stub.ScoreStream((req(x, request_id=rid) for rid, x in xs.items()), timeout=30):
        assert r.request_id not in answers
        answers[r.request_id] = from_tensor(r.output)
    assert answers.keys() == xs.keys()
    ids = list(xs)
    want = reference_forward("ffnn", ffnn.weights, np.concatenate([xs[i] for i in ids]))
    got = np.concatenate([answers[i] for i in ids])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_score_stream_scores_concurrently():
    with running(sleep_settings(100, instances=4)) as s:
        ids = [f"s{i}" for i in range(8)]
        got = [r.request_id for r in s.stub.ScoreStream((req(rand(1, i), request_id=rid)
                                                         for i, rid in enumerate(ids)), timeout=20)]
        assert sorted(got) == sorted(ids)
        st = s.core.stats()["ffnn"]
        assert st["peak_busy_instances"] >= 2 and st["peak_in_flight"] >= 2, st


def test_score_stream_error_ends_stream_with_request_id(srv):
    def requests():
        for i in range(5):
            yield req(rand(1, i), request_id=f"ok-{i}")
        yield req(np.zeros((1, 3), np.float32), request_id="bad")

    call = srv.stub.ScoreStream(requests(), timeout=30)
    seen = []
    with pytest.raises(grpc.RpcError) as ei:
        for r in call:
            seen.append(r.request_id)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ei.value.details().startswith("request_id=bad:")
    assert (REQUEST_ID_METADATA, "bad") in tuple(ei.value.trailing_metadata())
    assert set(seen) <= {f"ok-{i}" for i in range(5)}


def test_bad_inputs_and_unknown_model(srv):
    cases = [
        (req(np.zeros((1, 3), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "expected float32"),
        (req(np.zeros((1, 1, 784), np.float64)), grpc.StatusCode.INVALID_ARGUMENT, "float64"),
        (req(np.zeros((0, 1, 784), np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "b>=1"),
        (scoring_pb2.ScoreRequest(model="ffnn", input=tensor_pb2.Tensor(
            dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1, 1, 784], data=b"\0" * 12)),
         grpc.StatusCode.INVALID_ARGUMENT, "bad input tensor"),
        (scoring_pb2.ScoreRequest(model="ffnn"), grpc.StatusCode.INVALID_ARGUMENT, "dtype"),
        (req(rand(1, 0), model="resnet-nope"), grpc.StatusCode.NOT_FOUND, "resnet-nope"),
    ]
    for request, code, text in cases:
        with pytest.raises(grpc.RpcError) as ei:
            srv.stub.Score(request, timeout=5)
        assert ei.value.code() == code, ei.value.details()
        assert text in ei.value.details()
    # the server is fine afterwards
    assert srv.stub.Score(req(rand(1, 0)), timeout=5).output.shape == [1, 10]


# -- back-pressure and deadlines -----------------------------------------------------------------
def test_hung_twin_model_deadline_then_real_model_answers(srv, ffnn):
    d = srv.stub.DescribeModel(scoring_pb2.DescribeModelRequest(model="ffnn-hung"), timeout=5)
    assert d.backend == "sleep" and list(d.inputs[0].shape) == [-1, 1, 784]
    with pytest.raises(grpc.RpcError) as ei:
        srv.stub.Score(req(rand(1, 0), model="ffnn-hung"), timeout=0.3)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    x = rand(1, 9)
    r = srv.stub.Score(req(x), timeout=5)
    assert r.backend == "onnxruntime"
    np.testing.assert_allclose(from_tensor(r.output), reference_forward("ffnn", ffnn.weights, x), atol=1e-4)


def test_overloaded_resource_exhausted():
    with running(sleep_settings(200, instances=1, max_queue=1)) as s:
        calls = [s.stub.Score.future(req(rand(1, i)), timeout=10) for i in range(5)]
        codes = []
        for c in calls:
            try:
                c.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        exhausted = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert exhausted >= 1 and codes.count(grpc.StatusCode.OK) >= 2
        assert exhausted + codes.count(grpc.StatusCode.OK) == 5, codes
        assert s.core.stats()["ffnn"]["rejected_overloaded"] == exhausted


def test_deadline_on_hung_call_and_server_stays_healthy():
    with running(sleep_settings(2000, instances=1)) as s:
        for _ in range(2):  # first: stuck in the backend; second: waits behind it in the queue
            with pytest.raises(grpc.RpcError) as ei:
                s.stub.Score(req(rand(1, 0)), timeout=0.2)
            assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        check = health_pb2.HealthCheckRequest(service=SCORING_SERVICE)
        assert s.health.Check(check, timeout=1).status == SERVING
        s.stub.DescribeModel(scoring_pb2.DescribeModelRequest(model="ffnn"), timeout=1)
        # the queued call gave up on the server too, without reaching the backend
        wait_until(lambda: s.core.stats()["ffnn"]["deadline_exceeded"] >= 1, 10, "the queued call's deadline")


def test_core_deadline_and_bad_input_errors():
    with ScoringCore(sleep_settings(300, instances=1)) as core:
        with futures.ThreadPoolExecutor(1) as ex:
            busy = ex.submit(core.score, "ffnn", rand(1, 0))
            wait_until(lambda: core.stats()["ffnn"]["busy_instances"] == 1, 10, "the only instance busy")
            with pytest.raises(DeadlineExceededError):
                core.score("ffnn", rand(1, 1), deadline=time.monotonic() + 0.05)
            assert busy.result().output.shape == (1, 10)
        with pytest.raises(BadInputError, match=r"expected float32 \[b>=1, 1, 784\], got float32 \[1, 784\]"):
            core.score("ffnn", np.zeros((1, 784), np.float32))
        with pytest.raises(BadInputError):
            core.score("ffnn", [[0.0]])
        with pytest.raises(ModelNotFoundError):
            core.score("resnet50", rand(1, 0))
    with pytest.raises(UnavailableError):
        core.score("ffnn", rand(1, 0))


# -- dynamic batching ----------------------------------------------------------------------------
def test_batching_merges_concurrent_calls():
    settings = sleep_settings(50, instances=1, max_workers=16,
                              batching={"max_batch_size": 8, "max_queue_delay_us": 20_000})
    with running(settings) as s:
        calls = [s.stub.Score.future(req(rand(1, i), request_id=str(i)), timeout=10) for i in range(8)]
        for i, c in enumerate(calls):
            r = c.result()
            assert r.request_id == str(i) and from_tensor(r.output).shape == (1, 10)
        st = s.core.stats()["ffnn"]
        assert st["completed"] == 8 and st["rows"] == 8
        assert st["backend_calls"] < 8 and st["max_batch_rows"] > 1


def test_batching_gives_every_caller_its_own_rows(ffnn):
    settings = ScoringSettings(instances=2, max_workers=32,
                               batching={"max_batch_size": 16, "max_queue_delay_us": 5_000})
    with running(settings) as s:
        xs = [rand(1 + i % 3, 1000 + i) for i in range(24)]
        calls = [s.stub.Score.future(req(x, request_id=str(i)), timeout=20) for i, x in enumerate(xs)]
        got = []
        for i, c in enumerate(calls):
            r = c.result()
            assert r.request_id == str(i)
            got.append(from_tensor(r.output))
        want = reference_forward("ffnn", ffnn.weights, np.concatenate(xs))
        np.testing.assert_allclose(np.concatenate(got), want, atol=1e-4, rtol=0)
        st = s.core.stats()["ffnn"]
        assert st["rows"] == sum(len(x) for x in xs) and st["completed"] == 24


def test_batching_core_oversize_request_and_threads(ffnn):
    settings = ScoringSettings(instances=1, batching={"max_batch_size": 4, "max_queue_delay_us": 2_000})
    with ScoringCore(settings) as core:
        x = rand(9, 7)  # larger than max_batch_size: scored alone, not split
        r = core.score("ffnn", x)
        assert r.batch_rows == 9
        np.testing.assert_allclose(r.output, reference_forward("ffnn", ffnn.weights, x), atol=1e-4)
        xs = [rand(1 + i % 2, 50 + i) for i in range(30)]
        with futures.ThreadPoolExecutor(10) as ex:
            outs = list(ex.map(lambda x: core.score("ffnn", x).output, xs))
        for x, y in zip(xs, outs):
            np.testing.assert_allclose(y, reference_forward("ffnn", ffnn.weights, x), atol=1e-4)
        assert core.stats()["ffnn"]["max_batch_rows"] <= 9


# -- errors, settings ----------------------------------------------------------------------------
def test_error_mapping_round_trip():
    pairs = [(BadInputError, grpc.StatusCode.INVALID_ARGUMENT),
             (ModelNotFoundError, grpc.StatusCode.NOT_FOUND),
             (OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
             (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
             (UnavailableError, grpc.StatusCode.UNAVAILABLE),
             (BackendError, grpc.StatusCode.INTERNAL)]
    for cls, code in pairs:
        assert grpc_status(cls("m")) == (code, "m")
        back = error_from_status(code, "m")
        assert type(back) is cls and str(back) == "m"
    assert grpc_status(ZeroDivisionError("x")) == (grpc.StatusCode.INTERNAL, "ZeroDivisionError: x")
    assert type(error_from_status(grpc.StatusCode.CANCELLED, "c")) is ServingError


def test_settings_validation():
    with pytest.raises(ValueError):
        ScoringSettings(modles=["ffnn"])
    with pytest.raises(ValueError):
        ScoringSettings(models=["nope"])
    with pytest.raises(ValueError):
        ScoringSettings(batching={"max_batch_size": 0})
    with pytest.raises(ValueError):
        ScoringSettings(models=["ffnn", {"name": "ffnn"}])
    with pytest.raises(ValueError):
        ScoringSettings(models=[{"name": "x", "model": "nope"}])
    served = ScoringSettings(backend_options={"intra_op_threads": 2},
                             models=["ffnn", {"name": "z", "model": "ffnn", "backend": "noop",
                                              "backend_options": {}}]).served_models
    assert [(m.name, m.spec_name, m.backend, m.backend_options) for m in served] == \
        [("ffnn", "ffnn", "onnxruntime", {"intra_op_threads": 2}), ("z", "ffnn", "noop", {})]
    s = ScoringSettings(instances=3, batching={"max_batch_size": 32})
    assert s.effective_max_workers == 64 and s.effective_stream_max_in_flight == 32
    assert ScoringSettings().host == "127.0.0.1" and ScoringSettings().port == 0


# -- TLS -----------------------------------------------------------------------------------------
def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if importlib.util.find_spec("cryptography") is None:
        assert shutil.which("openssl"), "the TLS test needs the cryptography package or openssl"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        return cert, key
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                        critical=False)
         .sign(k, hashes.SHA256()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert, key


def test_tls(ffnn, tmp_path):
    cert, key = _self_signed(tmp_path)
    settings = ScoringSettings(tls={"cert_file": cert, "key_file": key})
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with running(settings, credentials=creds,
                 channel_options=[("grpc.ssl_target_name_override", "localhost")]) as s:
        x = rand(2, 5)
        y = from_tensor(s.stub.Score(req(x), timeout=10).output)
        np.testing.assert_allclose(y, reference_forward("ffnn", ffnn.weights, x), atol=1e-4)
        # a plaintext client gets nowhere
        with grpc.insecure_channel(f"127.0.0.1:{s.port}") as plain:
            with pytest.raises(grpc.RpcError):
                scoring_pb2_grpc.ScoringStub(plain).Score(req(x), timeout=2)


# -- the CLI -------------------------------------------------------------------------------------
def test_cli_ready_file_health_and_sigterm(ffnn, tmp_path):
    ready = tmp_path / "ready"
    config = {"models": ["ffnn"], "instances": 1, "ready_file": str(ready),
              "models_dir": str(default_models_dir())}
    proc = subprocess.Popen([sys.executable, "-m", "serving.scoring", "--config", json.dumps(config)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def ready_or_dead() -> bool:
            assert proc.poll() is None, proc.stdout.read()
            return ready.exists()

        wait_until(ready_or_dead, 30, "the server's ready file")
        port = int(ready.read_text())
        # the default host: the one listener is the served port, on loopback
        assert {a.port for a in loopback_listeners(proc.pid)} == {port}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert r.status == SERVING
            out = scoring_pb2_grpc.ScoringStub(ch).Score(req(rand(1, 3)), timeout=5)
            assert from_tensor(out.output).shape == (1, 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, proc.stdout.read()
        assert not ready.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_bad_config_exits_2():
    r = subprocess.run([sys.executable, "-m", "serving.scoring", "--config", '{"instances": 0}'],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "instances" in r.stderr
