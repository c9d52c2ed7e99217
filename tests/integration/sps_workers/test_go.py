"""Go engine (native) beyond the shared conformance suite: its build cache, its Go unit tests,
config errors named in one line, byte-for-byte agreement with the Python scoring operator, the
named-tensor contract, external-serving failures dead-lettered after retries, and a clean SIGTERM
stop with offsets committed and no listening socket.

Needs Go >= 1.26 and a C compiler (cgo): without them every test here fails saying what to install."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from crayfish.codec import get_codec
from crayfish.host.procs import Service, wait_file
from crayfish.kafka import (
    RunTopics,
    consumer_config,
    create_topics,
    delete_topics,
    producer_config,
)
from crayfish.tensor import from_tensor, to_tensor
from crayfish.v1 import batch_pb2
from sps_workers import ENGINES
from sps_workers.go import build
from sps_workers.settings import ExternalSettings, WorkerSettings
from tests.support.kafka_io import read_topics
from tests.support.procs import listening

SPEC = ENGINES["go"]


@pytest.fixture(scope="module", autouse=True)
def go_toolchain():
    """Every test of this file builds or runs the Go worker: no Go or no C compiler is a failure
    that names what to install, never a skip."""
    missing = [tool for tool in ("go", "gcc") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"go tests: {' and '.join(missing)} not found on PATH; install Go >= 1.26 (https://go.dev/dl) "
                    f"and gcc (cgo)", pytrace=False)


def _launcher(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "sps_workers.go", *args], capture_output=True, text=True,
                          cwd=build.REPO_ROOT, timeout=timeout, check=False)


# -- build ---------------------------------------------------------------------------------------

def _files_of(build_dir):
    return sorted((str(p.relative_to(build_dir)), p.stat().st_ino, p.stat().st_mtime_ns)
                  for p in [build_dir, *build_dir.rglob("*")])


def test_build_is_cached_and_keyed_by_its_sources(tmp_path, monkeypatch):
    binary = build.ensure_built()
    assert binary.is_file() and os.access(binary, os.X_OK) and build.is_built()
    assert binary.parent.name == build.source_hash()
    before = _files_of(binary.parent)
    # A current build must not run Go again: with no go on PATH, build.go() raises BuildError, so
    # getting the binary back proves the toolchain was not invoked, and nothing was rewritten.
    with monkeypatch.context() as m:
        m.setenv("PATH", os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                                         if d and not (Path(d) / "go").exists()))
        assert shutil.which("go") is None
        with pytest.raises(build.BuildError, match="Go toolchain"):
            build.go()
        assert build.ensure_built() == binary
    assert _files_of(binary.parent) == before, "a current build must not be rebuilt"

    # The key covers go.mod, go.sum, the Go sources (not their tests) and the .proto contracts.
    mod, protos = tmp_path / "mod", tmp_path / "protos"
    mod.mkdir()
    for p in [build.MODULE_DIR / "go.mod", build.MODULE_DIR / "go.sum", *build.MODULE_DIR.glob("*.go")]:
        shutil.copy(p, mod / p.name)
    shutil.copytree(build.PROTOS_DIR / "crayfish", protos / "crayfish")
    base = build.source_hash(mod, protos)
    assert base == build.source_hash()
    (mod / "README.md").write_text("docs do not rebuild")
    (mod / "operator_test.go").write_text("package main\n// tests do not rebuild\n")
    assert build.source_hash(mod, protos) == base
    main = mod / "main.go"
    main.write_text(main.read_text() + "\n// changed\n")
    changed_src = build.source_hash(mod, protos)
    assert changed_src != base
    proto = protos / "crayfish/v1/batch.proto"
    proto.write_text(proto.read_text() + "\n// changed\n")
    assert build.source_hash(mod, protos) not in (base, changed_src)


def test_go_unit_tests(tmp_path):
    log = tmp_path / "go-test.log"
    rc = build.go_test(log, tmp_path / "work")
    out = log.read_text()
    assert rc == 0, out[-4000:]
    assert "--- PASS: TestSingleTensorReasonsAndDetails" in out and "--- FAIL" not in out, out[-4000:]


# -- config --------------------------------------------------------------------------------------

def _settings(**over) -> WorkerSettings:
    base = {"bootstrap": "127.0.0.1:1", "input_topic": "i", "output_topic": "o", "dead_letter_topic": "d",
            "consumer_group": "g", "model": "ffnn", "worker_id": "go"}
    base.update(over)
    return WorkerSettings(**base)


@pytest.mark.parametrize("over, field", [
    ({"codec": "crayfish-json"}, "go worker: bad config: codec: 'crayfish-json' is not supported by the go engine"),
    ({"engine_options": {"parallelism_per_host": 2}},
     ("go worker: bad config: engine_options.parallelism_per_host: unknown option of the go engine (known: "
      "commit_interval_ms, fetch_max_wait_ms, warmup_rounds)")),
    ({"engine_options": {"fetch_max_wait_ms": 5}},
     "engine_options.fetch_max_wait_ms: Input should be greater than or equal to 10"),
    ({"backend": "torchscript"}, "backend: 'torchscript' is not available in the go engine"),
    ({"external": ExternalSettings(client="triton", target="127.0.0.1:1")}, "external.client: 'triton'"),
    ({"external": ExternalSettings(client="scoring", target="127.0.0.1:1", call_mode="pipelined")},
     "external.call_mode: 'pipelined'"),
    # Checked by the Go worker itself (after the build), in the same one-line form.
    ({"backend_options": {"threads": 2}}, "go worker: backend_options: backend 'onnxruntime' has no option 'threads'"),
    ({"backend": "sleep"}, "backend_options: backend 'sleep': option 'delay_ms' is required"),
])
def test_bad_config_fails_naming_the_field(models_dir, over, field):
    r = _launcher("--config", _settings(models_dir=str(models_dir), **over).model_dump_json(), timeout=600)
    assert r.returncode == 2, r.stderr
    assert field in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_config_from_the_settings_env_var(models_dir, tmp_path):
    cfg = tmp_path / "worker.json"
    cfg.write_text(_settings(models_dir=str(models_dir), codec="crayfish-json").model_dump_json())
    r = subprocess.run([sys.executable, "-m", "sps_workers.go"], capture_output=True, text=True, cwd=build.REPO_ROOT,
                       env=dict(os.environ, CRAYFISH_WORKER_SETTINGS=str(cfg)), timeout=300, check=False)
    assert r.returncode == 2 and "codec: 'crayfish-json'" in r.stderr, r.stderr


def test_missing_model_files_are_config_errors(tmp_path, models_dir):
    r = _launcher("--config", _settings(models_dir=str(tmp_path)).model_dump_json(), timeout=600)
    assert r.returncode == 2 and f"model: 'ffnn' is not built in {tmp_path}" in r.stderr, r.stderr
    (tmp_path / "ffnn").mkdir()
    shutil.copy(models_dir / "ffnn" / "manifest.json", tmp_path / "ffnn" / "manifest.json")
    r = _launcher("--config", _settings(models_dir=str(tmp_path)).model_dump_json(), timeout=600)
    assert r.returncode == 2 and "no ONNX file at" in r.stderr, r.stderr


# -- against the broker --------------------------------------------------------------------------

@pytest.fixture
def start_worker(kafka_bootstrap, models_dir, tmp_path):
    started = []

    def start(partitions=2, env=None, **over):
        run_id = uuid.uuid4().hex[:8]
        topics = RunTopics.for_run(run_id)
        create_topics(kafka_bootstrap, topics, partitions=partitions)
        over = {"model": "ffnn", "models_dir": str(models_dir), **over}
        ws = WorkerSettings(bootstrap=kafka_bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}",
                            worker_id="go", ready_file=str(tmp_path / f"{run_id}.ready"), **over)
        cfg = tmp_path / f"{run_id}.json"
        cfg.write_text(ws.model_dump_json())
        svc = Service("go-worker", ["-m", SPEC.module, "--config", f"@{cfg}"], tmp_path / f"{run_id}.log", env=env)
        started.append((svc, topics))
        SPEC.wait_ready(ws, partitions, [svc], timeout_s=240)
        wait_file(tmp_path / f"{run_id}.ready", [svc], timeout_s=60, what="ready file (written on assignment)")
        return svc, topics, ws

    yield start
    for svc, topics in started:
        svc.stop()
        delete_topics(kafka_bootstrap, topics)


def _read(bootstrap, topics, n, timeout_s=90):
    return read_topics(bootstrap, topics, lambda got: len(got) >= n, timeout_s)


def _batch(run_id, seq, x, model="ffnn", batch_id=None):
    b = batch_pb2.DataBatch(batch_id=f"{run_id}-{seq}" if batch_id is None else batch_id, run_id=run_id,
                            sequence=seq, intended_ns=time.time_ns() - 5, created_ns=time.time_ns(), model=model)
    b.attributes["k"] = "v"
    to_tensor(x, b.input)
    return b


def test_dead_letters_and_outputs_match_the_python_operator(kafka_bootstrap, start_worker, models_dir):
    """The Go worker on the contract: the same DeadLetter (reason, detail, ids, source) as
    sps_workers.scoring_op for the same record, and the ScoredBatch fields carried over."""
    from serving.models import model_paths, reference_forward
    from sps_workers.scoring_op import ScoringOperator

    svc, topics, _ws = start_worker(partitions=1)
    rng = np.random.default_rng(1)
    run_id = uuid.uuid4().hex[:6]
    records = {}
    short = _batch(run_id, 1, rng.random((1, 1, 784), dtype=np.float32))
    short.input.data = short.input.data[:-3]
    records["short-data"] = short.SerializeToString()
    odd = _batch(run_id, 2, rng.random((1, 1, 784), dtype=np.float32))
    odd.input.dtype = 99
    records["unknown-dtype"] = odd.SerializeToString()
    neg = _batch(run_id, 3, rng.random((1, 1, 784), dtype=np.float32))
    neg.input.shape[:] = [1, -784]
    records["negative-dim"] = neg.SerializeToString()
    records["bad-shape"] = _batch(run_id, 4, rng.random((3, 784), dtype=np.float32)).SerializeToString()
    records["bad-dtype"] = _batch(run_id, 5, np.ones((1, 1, 784), dtype=np.int32)).SerializeToString()
    records["unknown-model"] = _batch(run_id, 6, rng.random((1, 1, 784), dtype=np.float32),
                                      model="resnet50").SerializeToString()
    records["garbage"] = b"\x08\x96\x01\xff\xff"
    x_good = rng.random((2, 1, 784), dtype=np.float32)
    records["good-no-id"] = _batch(run_id, 7, x_good, batch_id="").SerializeToString()

    p = Producer(producer_config(kafka_bootstrap))
    for key, value in records.items():
        p.produce(topics.input, value, key.encode(), partition=0)
    p.flush(10)
    msgs = _read(kafka_bootstrap, [topics.output, topics.dead_letter], len(records))
    assert len(msgs) == len(records), svc.log_tail()

    py = ScoringOperator(get_codec("protobuf"), None, "ffnn", (1, 784), "py", engine="go", backend="onnxruntime")
    for m in msgs:
        key = m.key().decode()
        if m.topic() == topics.output:
            assert key == "good-no-id"
            s = batch_pb2.ScoredBatch.FromString(m.value())
            assert s.batch_id == f"{topics.input}/0/{len(records) - 1}"  # topic/partition/offset, as Python
            assert s.run_id == run_id and s.sequence == 7 and dict(s.attributes) == {"k": "v"}
            assert s.model == "ffnn" and s.input_append_ms > 0
            assert s.facts.engine == "go" and s.facts.worker_id == "go-0" and s.facts.backend == "onnxruntime"
            assert s.facts.decode_ns > 0 and s.facts.inference_ns > 0 and s.facts.encode_ns > 0
            ref = reference_forward("ffnn", model_paths("ffnn", models_dir).weights, x_good)
            np.testing.assert_allclose(from_tensor(s.output), ref, rtol=1e-4, atol=1e-5)
            continue
        got = batch_pb2.DeadLetter.FromString(m.value())
        want = batch_pb2.DeadLetter.FromString(py.prepare(records[key], None, got.input_append_ms, got.source_topic,
                                                          got.source_partition, got.source_offset).dead_letter)
        assert got.reason == want.reason, key
        if key == "garbage":  # the protobuf libraries word their parse errors differently
            assert got.detail.startswith("not a crayfish.v1.DataBatch: ")
        else:
            assert got.detail == want.detail, key
            assert got.facts.error == want.facts.error
        for f in ("batch_id", "run_id", "created_ns", "intended_ns", "payload", "source_topic",
                  "source_partition", "source_offset"):
            assert getattr(got, f) == getattr(want, f), (key, f)
        assert got.input_append_ms > 0 and got.facts.engine == "go"
        assert got.facts.backend == "onnxruntime" and got.facts.worker_send_ns >= got.facts.worker_receive_ns


def test_sigterm_stops_cleanly_with_offsets_committed(kafka_bootstrap, start_worker):
    svc, topics, ws = start_worker(partitions=2, engine_options={"commit_interval_ms": 60000})
    codec = get_codec("protobuf")
    p = Producer(producer_config(kafka_bootstrap))
    n = 30
    for i in range(n):
        value, _ = codec.encode_batch(_batch("stop", i, np.zeros((1, 1, 784), dtype=np.float32)))
        p.produce(topics.input, value, str(i).encode(), partition=i % 2)
    p.flush(10)
    assert len(_read(kafka_bootstrap, [topics.output], n)) == n
    # The launcher exec()s the Go binary (same pid); it only opens client connections: no listener.
    assert "crayfish-go-worker" in psutil.Process(svc.proc.pid).cmdline()[0]
    assert listening(svc.proc.pid) == [], "the Go worker opened a listening socket"
    t0 = time.monotonic()
    code = svc.stop(timeout_s=60)
    assert code == 0, svc.log_tail()
    assert time.monotonic() - t0 < 10, "the stop took longer than a few seconds"
    # The commit interval is a minute here: only the stop-time commit can have stored these.
    c = Consumer(consumer_config(kafka_bootstrap, ws.consumer_group))
    committed = c.committed([TopicPartition(topics.input, 0), TopicPartition(topics.input, 1)], timeout=10)
    c.close()
    assert sorted(tp.offset for tp in committed) == [n // 2, n // 2]


def test_unreachable_scoring_server_is_dead_lettered_after_retries(kafka_bootstrap, start_worker):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ext = ExternalSettings(client="scoring", target=f"127.0.0.1:{port}", timeout_s=0.5, retries=1, backoff_s=0.01)
    svc, topics, _ = start_worker(partitions=1, external=ext)
    value, _ = get_codec("protobuf").encode_batch(_batch("ext", 0, np.zeros((1, 1, 784), dtype=np.float32)))
    p = Producer(producer_config(kafka_bootstrap))
    p.produce(topics.input, value, b"ext-0")
    p.flush(10)
    msgs = _read(kafka_bootstrap, [topics.dead_letter], 1)
    assert msgs, svc.log_tail()
    d = batch_pb2.DeadLetter.FromString(msgs[0].value())
    assert d.reason == "scoring_error" and d.batch_id == "ext-0"
    assert d.detail.startswith((f"scoring at 127.0.0.1:{port} after 2 attempt(s): UnavailableError: ",
                                f"scoring at 127.0.0.1:{port} after 2 attempt(s): DeadlineExceededError: ")), d.detail
    assert d.facts.backend == "scoring"
    assert svc.alive()


# -- named tensors (DataBatch.inputs, ScoredBatch.outputs) ----------------------------------------

def _named(run_id, seq, arrays, model="masked"):
    b = batch_pb2.DataBatch(batch_id=f"{run_id}-{seq}", run_id=run_id, sequence=seq, intended_ns=time.time_ns() - 5,
                            created_ns=time.time_ns(), model=model)
    for name, a in arrays.items():
        to_tensor(a, b.inputs[name])
    return b


def test_named_batches_are_scored_and_dead_lettered_as_the_python_operator(kafka_bootstrap, start_worker, tmp_path):
    """Two inputs of different dtypes and two outputs, embedded: every output by name with its dtype,
    right against ONNX Runtime on the file; named batches that do not fit get the Python DeadLetter."""
    from serving.models import import_model_file, reference_predictions, resolve_spec
    from sps_workers.scoring_op import ScoringOperator
    from tests.support.model_files import two_layer_onnx

    model = two_layer_onnx(tmp_path / "masked.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    models = tmp_path / "models"
    import_model_file(model, models, "masked", {"mask": {"range": [0, 2]}})
    svc, topics, _ = start_worker(partitions=1, model="masked", models_dir=str(models))
    rng = np.random.default_rng(3)
    x = rng.random((4, 6), dtype=np.float32)
    mask = rng.integers(0, 2, (4, 6), dtype=np.int64)
    run_id = uuid.uuid4().hex[:6]
    records = {
        "good": _named(run_id, 0, {"features": x, "mask": mask}),
        "missing-mask": _named(run_id, 1, {"features": x}),
        "unknown-input": _named(run_id, 2, {"features": x, "mask": mask, "extra": mask}),
        "mask-int32": _named(run_id, 3, {"features": x, "mask": mask.astype(np.int32)}),
        "rows-differ": _named(run_id, 4, {"features": x, "mask": mask[:3]}),
        "unnamed": _batch(run_id, 5, x, model="masked"),
    }
    records = {k: v.SerializeToString() for k, v in records.items()}
    p = Producer(producer_config(kafka_bootstrap))
    for key, value in records.items():
        p.produce(topics.input, value, key.encode(), partition=0)
    p.flush(10)
    msgs = _read(kafka_bootstrap, [topics.output, topics.dead_letter], len(records))
    assert len(msgs) == len(records), svc.log_tail()

    py = ScoringOperator(get_codec("protobuf"), None, "masked", resolve_spec("masked", models), "py",
                         engine="go", backend="onnxruntime")
    reasons = {}
    for m in msgs:
        key = m.key().decode()
        if m.topic() == topics.output:
            assert key == "good"
            s = batch_pb2.ScoredBatch.FromString(m.value())
            assert not s.HasField("output") and set(s.outputs) == {"scores", "label"}
            ref = reference_predictions("masked", models, {"features": x, "mask": mask})
            scores, label = from_tensor(s.outputs["scores"]), from_tensor(s.outputs["label"])
            assert scores.dtype == np.float32 and label.dtype == np.int64 and label.shape == (4,)
            np.testing.assert_allclose(scores, ref["scores"], rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(label, ref["label"])
            continue
        got = batch_pb2.DeadLetter.FromString(m.value())
        want = batch_pb2.DeadLetter.FromString(py.prepare(records[key], None, got.input_append_ms, got.source_topic,
                                                          got.source_partition, got.source_offset).dead_letter)
        assert (got.reason, got.detail) == (want.reason, want.detail), key
        reasons[key] = got.reason
    assert reasons == {"missing-mask": "bad_shape", "unknown-input": "bad_shape", "mask-int32": "bad_dtype",
                       "rows-differ": "bad_shape", "unnamed": "bad_shape"}


def test_every_dtype_goes_through_onnx_runtime_by_name(kafka_bootstrap, start_worker, tmp_path):
    """One input and one output per dtype a model file may take: each fed with its own dtype and
    coming back with it, values intact."""
    from onnx import TensorProto, helper

    from serving.models import import_model_file

    kinds = {"float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16, "int32": TensorProto.INT32,
             "int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "bool": TensorProto.BOOL}
    op = {"float64": "Neg", "float16": "Neg", "int32": "Neg", "int8": "Neg", "uint8": "Identity", "bool": "Not"}
    graph = helper.make_graph(
        [helper.make_node(op[d], [d], [f"out_{d}"]) for d in kinds], "dtypes",
        [helper.make_tensor_value_info(d, t, ["batch", 3]) for d, t in kinds.items()],
        [helper.make_tensor_value_info(f"out_{d}", t, ["batch", 3]) for d, t in kinds.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "dtypes.onnx").write_bytes(model.SerializeToString())
    import_model_file(tmp_path / "dtypes.onnx", tmp_path / "models", "dtypes")

    svc, topics, _ = start_worker(partitions=1, model="dtypes", models_dir=str(tmp_path / "models"))
    rng = np.random.default_rng(6)
    x = {d: (rng.random((2, 3)) > 0.5 if d == "bool" else (rng.random((2, 3)) * 100).astype(d)) for d in kinds}
    p = Producer(producer_config(kafka_bootstrap))
    p.produce(topics.input, _named("dt", 0, x, model="dtypes").SerializeToString(), b"dt-0")
    p.flush(10)
    [m] = _read(kafka_bootstrap, [topics.output, topics.dead_letter], 1) or [None]
    assert m is not None, svc.log_tail()
    assert m.topic() == topics.output, batch_pb2.DeadLetter.FromString(m.value()).detail
    s = batch_pb2.ScoredBatch.FromString(m.value())
    for d, a in x.items():
        y = from_tensor(s.outputs[f"out_{d}"])
        want = ~a if d == "bool" else a if d == "uint8" else -a
        assert y.dtype == a.dtype and y.shape == (2, 3), d
        np.testing.assert_array_equal(y, want, err_msg=d)
