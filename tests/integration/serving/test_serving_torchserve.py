"""TorchServe (serving/torchserve) through the shared conformance suite, over its gRPC inference
API (client kind ``torchserve``), plus TorchServe specifics: token auth kept on, every listener on
127.0.0.1, workers = instances, server-side batching with a bad request inside a batch, the wire
format, stub generation without grpcio-tools, and a stop that leaves nothing behind.

One real TorchServe start for the module (``.envs/torch``, built on first use by
``crayfish env build torch``).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import subprocess
import sys

import numpy as np
import psutil
import pytest

from serving.clients import create_client
from serving.errors import BadInputError, ServingError
from serving.models import model_paths, reference_forward
from serving.torchserve import launcher, wire
from tests.support.conformance_serving import processes_in_session
from tests.support.procs import loopback_listeners

# exactly who answers (envs/torch/requirements.txt pins torchserve==0.12.0); the handler inside
# TorchServe's worker names it in every answer frame
SERVER_NAME = "torchserve 0.12.0"

EXTRA = {**launcher.HUNG_MODELS,
         "ffnn-batched": {"model": "ffnn", "batch_size": 4, "max_batch_delay_ms": 200}}


@pytest.fixture(scope="module")
def torchserve(models_dir):
    srv = launcher.start("ffnn", instances=2, models_dir=models_dir, extra_models=EXTRA)
    pid = srv.service.proc.pid
    try:
        tree = psutil.Process(pid).children(recursive=True)
        assert len(tree) == 4  # one Python worker per instance: ffnn x2, ffnn-hung, ffnn-batched
        yield srv
    finally:
        srv.stop()
    alive = [p for p in [psutil.Process(pid) if psutil.pid_exists(pid) else None, *tree]
             if p is not None and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after stop(): {alive}"
    assert not processes_in_session(pid), f"left in the server's session after stop(): {processes_in_session(pid)}"
    assert not (srv.info["run_dir"] / "key_file.json").exists()


@pytest.fixture(scope="module")
def served(torchserve):
    from tests.support.conformance_serving import Served

    return Served(
        make_client=lambda model, timeout_s: create_client("torchserve", torchserve.target, model,
                                                           timeout_s=timeout_s, max_in_flight=4),
        hung_model="ffnn-hung",
        server_name=SERVER_NAME,
    )


from tests.support.conformance_serving import *  # noqa: E402,F401,F403


def _x(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 1, 784), dtype=np.float32)


def _ref(x: np.ndarray) -> np.ndarray:
    return reference_forward("ffnn", model_paths("ffnn").weights, x)


# -- TorchServe specifics ----------------------------------------------------------------------
def test_server_name_and_results(torchserve):
    assert torchserve.kind == "torchserve" and torchserve.server == SERVER_NAME
    client = create_client("torchserve", torchserve.target, "ffnn", timeout_s=10.0)
    try:
        r = client.score(_x(4))
        # the name comes from the server's answer, not from the client or the launcher's record
        raw = client._stub.Predictions(client._request(_x(1)), timeout=10.0, metadata=client._metadata)
    finally:
        client.close()
    assert r.server == SERVER_NAME and r.server_inference_ns > 0
    assert raw.prediction[:4] == wire.OK_SERVER_MAGIC and wire.decode_response(raw.prediction)[2] == SERVER_NAME


def test_every_listener_binds_localhost(torchserve):
    cfg = (torchserve.info["run_dir"] / "config.properties").read_text()
    for key in ("inference_address", "management_address", "metrics_address"):
        assert f"{key}=http://127.0.0.1:" in cfg
    for key in ("grpc_inference_address", "grpc_management_address"):
        assert f"{key}=127.0.0.1\n" in cfg
    # the whole tree (the Java frontend and its Python workers): loopback only, and exactly the
    # five endpoints (HTTP inference / management / metrics, gRPC inference / management)
    found = loopback_listeners(torchserve.service.proc.pid, at_least=5)
    endpoints = {int(a.rsplit(":", 1)[1]) for a in (torchserve.target, torchserve.info["management_target"],
                                                   *torchserve.info["http"].values())}
    assert len(endpoints) == 5 and {a.port for a in found} == endpoints, (endpoints, found)
    assert not {8080, 8081, 8082, 7070, 7071} & endpoints


def test_token_auth_is_on_and_enforced(torchserve, tmp_path):
    assert torchserve.info["key_file"] is not None and torchserve.info["key_file"].is_file()
    assert oct(torchserve.info["key_file"].stat().st_mode & 0o777) == "0o600"
    assert "disable_token_authorization=false" in (torchserve.info["run_dir"] / "config.properties").read_text()
    wrong = tmp_path / "key_file.json"
    wrong.write_text(json.dumps({"inference": {"key": "wrong"}, "management": {"key": "wrong"}}))
    client = create_client("torchserve", torchserve.target, "ffnn", timeout_s=5.0, key_file=str(wrong))
    try:
        with pytest.raises(ServingError, match="PERMISSION_DENIED"):
            client.score(_x(1))
    finally:
        client.close()


def test_workers_equal_instances(torchserve):
    client = create_client("torchserve", torchserve.target, "ffnn", timeout_s=5.0)
    try:
        desc = client._describe_model(customized=False)
    finally:
        client.close()
    assert [w["status"] for w in desc[0]["workers"]] == ["READY", "READY"]


def test_server_side_batching_with_a_bad_request_in_the_batch(torchserve):
    client = create_client("torchserve", torchserve.target, "ffnn-batched", timeout_s=10.0, max_in_flight=4)
    xs = [_x(1, 1), _x(2, 2), np.zeros((1, 1, 700), np.float32), _x(3, 3)]
    try:
        futures = [client.score_async(x) for x in xs]
        cf.wait(futures, timeout=30)
    finally:
        client.close()
    for i, (x, f) in enumerate(zip(xs, futures)):
        if i == 2:
            with pytest.raises(BadInputError, match="expected float32"):
                f.result()
        else:
            np.testing.assert_allclose(f.result().output, _ref(x), atol=1e-4, rtol=0)


def test_resnet_sized_messages_pass(torchserve):
    """A [64, 1, 784] batch is small, but the gRPC limit is what a ResNet50 batch needs."""
    assert f"max_request_size={256 * 1024 * 1024}" in (torchserve.info["run_dir"] / "config.properties").read_text()
    client = create_client("torchserve", torchserve.target, "ffnn", timeout_s=10.0)
    try:
        x = _x(512, 5)
        np.testing.assert_allclose(client.score(x).output, _ref(x), atol=1e-4, rtol=0)
    finally:
        client.close()


# -- no server ---------------------------------------------------------------------------------
def test_wire_roundtrip_and_errors():
    x = _x(3)
    req = wire.encode_request(x)
    assert req["shape"] == b"3,1,784" and len(req["data"]) == x.nbytes
    np.testing.assert_array_equal(wire.decode_request({k: bytearray(v) for k, v in req.items()}), x)
    y, ns, server = wire.decode_response(wire.encode_response(x[:, 0, :10], 1234))
    assert ns == 1234 and y.shape == (3, 10) and server == ""
    np.testing.assert_array_equal(y, x[:, 0, :10])
    y, ns, server = wire.decode_response(wire.encode_response(x[:, 0, :10], 99, "torchserve 9.9 (ü)"))
    assert ns == 99 and server == "torchserve 9.9 (ü)"
    np.testing.assert_array_equal(y, x[:, 0, :10])
    with pytest.raises(wire.WireError, match="needs 120 bytes"):
        wire.decode_response(wire.encode_response(x[:, 0, :10], 1, "ts")[:-3])
    with pytest.raises(wire.WireError, match="needs 9408 bytes"):
        wire.decode_request({"data": b"\0" * 8, "shape": b"3,1,784"})
    with pytest.raises(wire.WireError, match="bad shape"):
        wire.decode_request({"data": b"", "shape": b"a,b"})
    with pytest.raises(wire.WireError, match="dtype float32"):
        wire.decode_request(wire.encode_request(x.astype(np.float64)))
    with pytest.raises(wire.RemoteError) as err:
        wire.decode_response(wire.encode_error(400, "nope"))
    assert err.value.code == 400 and str(err.value) == "nope"


def test_stubs_generate_without_grpcio_tools(tmp_path):
    """The core env may lack grpcio-tools: protoc then runs in the torch env."""
    code = ("import sys; sys.modules['grpc_tools'] = None\n"
            "from serving.torchserve import grpc_stubs\n"
            "s = grpc_stubs.load(); print(s.version, s.inference_pb2.PredictionsRequest.DESCRIPTOR.full_name)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CRAYFISH_TORCHSERVE_STUBS_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["0.12.0", "org.pytorch.serve.grpc.inference.PredictionsRequest"]
    assert not list(tmp_path.rglob("*.proto"))  # only generated code, no copied protos


def test_full_job_queue_is_overloaded(models_dir):
    """TorchServe's per-model queue (job_queue_size) full -> OverloadedError, by its message."""
    from serving.errors import DeadlineExceededError, OverloadedError

    srv = launcher.start("ffnn", instances=1, models_dir=models_dir,
                         extra_models={"ffnn-hung": {"model": "ffnn", "sleep_s": 2.0}}, job_queue_size=1,
                         stop_timeout_s=3.0)
    try:
        client = create_client("torchserve", srv.target, "ffnn-hung", timeout_s=1.0, max_in_flight=4)
        try:
            x = np.zeros((1, 1, 784), np.float32)
            futures = [client.score_async(x) for _ in range(4)]
            errors = [type(f.exception(timeout=10)) for f in futures]
        finally:
            client.close()
        assert OverloadedError in errors, errors
        assert set(errors) <= {OverloadedError, DeadlineExceededError}, errors
    finally:
        srv.stop()


def test_auth_off_stock_logging_and_fallbacks(models_dir, tmp_path):
    """auth="off" (--disable-token-auth) with TorchServe's stock logging; a client that knows
    nothing but the target (no server record): health by Ping, describe from MODELS."""
    from serving.torchserve.client import TorchServeClient

    srv = launcher.start("ffnn", instances=1, models_dir=models_dir, auth="off", log_level="default")
    try:
        assert srv.info["key_file"] is None and not (srv.info["run_dir"] / "key_file.json").exists()
        assert not (srv.info["run_dir"] / "log4j2.xml").exists()
        srv.info["info_path"].unlink()  # forget the record: the client gets only the target
        client = TorchServeClient(srv.target, "ffnn", timeout_s=5.0)
        try:
            assert client.key_file is None and client.management_target is None
            assert client.health() is True
            assert client.describe()["source"] == "serving.models.MODELS"
            x = _x(2, 7)
            np.testing.assert_allclose(client.score(x).output, _ref(x), atol=1e-4, rtol=0)
        finally:
            client.close()
        assert "ACCESS_LOG" in (srv.info["run_dir"] / "torchserve.log").read_text()  # stock log config
    finally:
        srv.stop()
