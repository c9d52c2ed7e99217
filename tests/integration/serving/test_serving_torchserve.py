"""TorchServe (serving/torchserve) through the shared conformance suite, over its gRPC inference
API (client kind ``torchserve``), plus TorchServe specifics: token auth kept on, every listener on
127.0.0.1, workers = instances, server-side batching with a bad request inside a batch, the wire
format, stub generation without grpcio-tools, and a stop that leaves nothing behind; and model
files of one's own (a TorchScript file and an ONNX file, each with two inputs of different dtypes
and two outputs) served by name, compared with their references.

One real TorchServe start for the zoo's model, one for the model files (``.envs/torch``, built on
first use by ``crayfish env build torch``).
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
from serving.models import import_model_file, model_paths, reference_forward, reference_predictions
from serving.torchserve import launcher, wire
from tests.support.conformance_serving import processes_in_session
from tests.support.model_files import two_layer_onnx
from tests.support.procs import loopback_listeners
from tests.support.torchscript_files import make_torchscript

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
    # another dtype travels as itself (the handler refuses what its model does not take)
    req64 = wire.encode_request(x.astype(np.float64))
    assert req64["dtype"] == b"float64" and wire.decode_request(req64).dtype == np.float64
    with pytest.raises(wire.WireError, match="unsupported dtype 'complex64'"):
        wire.decode_request({**req, "dtype": b"complex64"})
    with pytest.raises(wire.RemoteError) as err:
        wire.decode_response(wire.encode_error(400, "nope"))
    assert err.value.code == 400 and str(err.value) == "nope"


def test_wire_named_tensors_roundtrip():
    """Named tensors both ways, each in its own dtype: one map entry per input, and one CFN1
    frame whose tensors all start 8-aligned (the client's views need no copy)."""
    rng = np.random.default_rng(3)
    x = {"features": rng.random((3, 6), dtype=np.float32), "flag": np.array([1, 0, 1], np.uint8),
         "mask": rng.integers(0, 2, (3, 6), dtype=np.int64)}
    req = wire.encode_named_request(x)
    assert wire.is_named_request(req) and "shape" not in req and sorted(req) == ["data.0", "data.1", "data.2", "tensors"]
    assert json.loads(req["tensors"]) == [["features", "float32", [3, 6]], ["flag", "uint8", [3]], ["mask", "int64", [3, 6]]]
    got = wire.decode_named_request({k: bytearray(v) for k, v in req.items()})
    assert list(got) == list(x) and all(got[k].dtype == x[k].dtype and np.array_equal(got[k], x[k]) for k in x)
    with pytest.raises(wire.WireError, match="tensor 'mask': shape \\[3, 6\\] of int64 needs 144 bytes, got 8"):
        wire.decode_named_request({**req, "data.2": b"\0" * 8})
    with pytest.raises(wire.WireError, match="no 'data.1' entry"):
        wire.decode_named_request({k: v for k, v in req.items() if k != "data.1"})
    with pytest.raises(wire.WireError, match="unsupported dtype"):
        wire.encode_named_request({"s": np.array(["a"])})
    y = {"label": np.array([2, 0, 1], np.int64), "odd": np.array([[1], [2], [3]], np.uint8),
         "scores": rng.random((3, 3), dtype=np.float32)}
    body = wire.encode_named_response(y, 77, "torchserve 0.12.0")
    assert body[:4] == wire.NAMED_MAGIC
    out, ns, server = wire.decode_response(body)
    assert ns == 77 and server == "torchserve 0.12.0" and list(out) == list(y)
    for k, v in y.items():
        assert out[k].dtype == v.dtype and out[k].flags.aligned and np.array_equal(out[k], v)
    with pytest.raises(wire.WireError, match="response tensor 'scores'"):
        wire.decode_response(body[:-1])


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


# -- model files of one's own --------------------------------------------------------------------
# A TorchScript file (features float32 + mask int64 -> output_0 float32 [3] + output_1 int64 []),
# run by the torchscript backend, and an ONNX file (features + mask -> scores + label), run by the
# onnxruntime backend inside TorchServe's worker; the ONNX one with server-side batching.
TWO_TS = {"features": {"shape": [6], "dtype": "float32"}, "mask": {"shape": [6], "dtype": "int64", "range": [0, 2]}}


@pytest.fixture(scope="module")
def file_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("ts-files")
    import_model_file(make_torchscript(d / "two.pt", two=True), d / "models", "ts-two", TWO_TS)
    onnx = two_layer_onnx(d / "two.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    import_model_file(onnx, d / "models", "onnx-two", {"mask": {"range": [0, 2]}})
    srv = launcher.start("ts-two", instances=1, models_dir=d / "models",
                         extra_models={"onnx-two": {"batch_size": 3, "max_batch_delay_ms": 300}})
    try:
        yield srv, d / "models"
    finally:
        srv.stop()


def _named(batch: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"features": rng.random((batch, 6), dtype=np.float32), "mask": rng.integers(0, 2, (batch, 6), dtype=np.int64)}


@pytest.mark.parametrize("model, outputs", [("ts-two", ["output_0", "output_1"]), ("onnx-two", ["scores", "label"])])
def test_a_model_file_answers_named_tensors_like_its_reference(file_server, model, outputs):
    srv, models = file_server
    client = create_client("torchserve", srv.target, model, timeout_s=10.0)
    try:
        x = _named(5, 11)
        r = client.score(x)
        desc = client.describe()
    finally:
        client.close()
    assert r.server == SERVER_NAME and r.server_inference_ns > 0
    ref = reference_predictions(model, models, x)
    assert list(r.output) == outputs == list(ref)
    assert r.output[outputs[0]].dtype == np.float32 and r.output[outputs[0]].shape == (5, 3)
    np.testing.assert_allclose(r.output[outputs[0]], ref[outputs[0]], atol=1e-5, rtol=0)
    assert r.output[outputs[1]].dtype == np.int64 and np.array_equal(r.output[outputs[1]], ref[outputs[1]])
    # the handler describes the file's tensors, as imported (names, dtypes, item shapes)
    assert [(t["name"], t["dtype"], t["shape"]) for t in desc["inputs"]] == \
        [("features", "float32", [-1, 6]), ("mask", "int64", [-1, 6])]
    assert [(t["name"], t["dtype"], t["shape"]) for t in desc["outputs"]] == \
        [(outputs[0], "float32", [-1, 3]), (outputs[1], "int64", [-1])]
    assert desc["scorer"]["backend"] == ("torchscript" if model == "ts-two" else "onnxruntime")


@pytest.mark.parametrize("model", ["ts-two", "onnx-two"])
def test_a_model_file_refuses_what_does_not_fit_with_invalid_argument(file_server, model):
    srv, _ = file_server
    client = create_client("torchserve", srv.target, model, timeout_s=10.0)
    try:
        with pytest.raises(BadInputError, match="takes named inputs features, mask, got one unnamed tensor"):
            client.score(np.zeros((1, 6), np.float32))
        x = _named(2, 1)
        with pytest.raises(BadInputError, match="input mask: expected int64"):
            client.score({**x, "mask": x["mask"].astype(np.float32)})
        with pytest.raises(BadInputError, match="missing mask"):
            client.score({"features": x["features"]})
        assert client.score(x).output  # the worker is still there
    finally:
        client.close()


def test_named_requests_batched_server_side_with_a_bad_one(file_server):
    """Three named requests in one TorchServe batch (batch_size 3): the good ones scored in one
    call, concatenated input by input, and split back; the bad one answered with its error."""
    srv, models = file_server
    client = create_client("torchserve", srv.target, "onnx-two", timeout_s=10.0, max_in_flight=3)
    xs = [_named(1, 21), {"features": np.zeros((2, 5), np.float32), "mask": np.zeros((2, 5), np.int64)}, _named(3, 22)]
    try:
        futures = [client.score_async(x) for x in xs]
        cf.wait(futures, timeout=30)
    finally:
        client.close()
    with pytest.raises(BadInputError, match="input features: expected float32 \\[b>=1, 6\\]"):
        futures[1].result()
    for x, f in ((xs[0], futures[0]), (xs[2], futures[2])):
        got, ref = f.result().output, reference_predictions("onnx-two", models, x)
        np.testing.assert_allclose(got["scores"], ref["scores"], atol=1e-5, rtol=0)
        assert np.array_equal(got["label"], ref["label"])


def test_the_zoo_model_answers_a_named_request_by_name(torchserve):
    """A one-input model sent by name (experiments' named_tensors: true) answers by name."""
    client = create_client("torchserve", torchserve.target, "ffnn", timeout_s=10.0)
    try:
        x = _x(3, 8)
        r = client.score({"input_1": x})
    finally:
        client.close()
    assert list(r.output) == ["output"]
    np.testing.assert_allclose(r.output["output"], _ref(x), atol=1e-4, rtol=0)
