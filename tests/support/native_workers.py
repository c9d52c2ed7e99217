"""What the tests of the non-Python workers (Kafka Streams in Java, the Go worker) share: starting
one on fresh topics, and the byte-for-byte check of their dead letters against the Python operator.

The engine conformance suite (services/conformance) checks what every adapter must do; the check
here is stricter and only for workers that claim the project's own contract: for the same
malformed record, the same DeadLetter (reason, detail, ids, source) as sps_workers.scoring_op.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
from confluent_kafka import Producer

from crayfish.codec import get_codec
from crayfish.host.procs import Service, wait_file
from crayfish.kafka import RunTopics, create_topics, delete_topics, producer_config
from crayfish.tensor import from_tensor, to_tensor
from crayfish.v1 import batch_pb2
from serving.models import model_paths, reference_forward
from sps_workers import ENGINES
from sps_workers.scoring_op import ScoringOperator
from sps_workers.settings import WorkerSettings
from tests.support.kafka_io import read_topics


class WorkerStarter:
    """``start(partitions, env, **settings)`` -> (service, topics, settings) of one worker of
    ``engine``, ready (group assigned and ready file written); :meth:`close` stops them all."""

    def __init__(self, engine: str, bootstrap: str, models_dir, tmp_path, ready_what: str):
        self.engine, self.bootstrap, self.models_dir, self.tmp_path = engine, bootstrap, models_dir, tmp_path
        self.ready_what = ready_what
        self.started: list[tuple[Service, RunTopics]] = []

    def __call__(self, partitions=2, env=None, **over):
        spec = ENGINES[self.engine]
        run_id = uuid.uuid4().hex[:8]
        topics = RunTopics.for_run(run_id)
        create_topics(self.bootstrap, topics, partitions=partitions)
        over = {"model": "ffnn", "models_dir": str(self.models_dir), **over}
        ws = WorkerSettings(bootstrap=self.bootstrap, input_topic=topics.input, output_topic=topics.output,
                            dead_letter_topic=topics.dead_letter, consumer_group=f"w-{run_id}",
                            worker_id=self.engine, ready_file=str(self.tmp_path / f"{run_id}.ready"), **over)
        cfg = self.tmp_path / f"{run_id}.json"
        cfg.write_text(ws.model_dump_json())
        svc = Service(f"{self.engine}-worker", ["-m", spec.module, "--config", f"@{cfg}"],
                      self.tmp_path / f"{run_id}.log", env=env)
        self.started.append((svc, topics))
        spec.wait_ready(ws, partitions, [svc], timeout_s=240)
        wait_file(self.tmp_path / f"{run_id}.ready", [svc], timeout_s=60, what=self.ready_what)
        return svc, topics, ws

    def close(self) -> None:
        for svc, topics in self.started:
            svc.stop()
            delete_topics(self.bootstrap, topics)


def read_n(bootstrap, topics, n, timeout_s=90):
    return read_topics(bootstrap, topics, lambda got: len(got) >= n, timeout_s)


def make_batch(run_id, seq, x, model="ffnn", batch_id=None):
    b = batch_pb2.DataBatch(batch_id=f"{run_id}-{seq}" if batch_id is None else batch_id, run_id=run_id,
                            sequence=seq, intended_ns=time.time_ns() - 5, created_ns=time.time_ns(), model=model)
    b.attributes["k"] = "v"
    to_tensor(x, b.input)
    return b


def check_dead_letters_match_the_python_operator(bootstrap, start_worker, models_dir, engine: str) -> None:
    """Malformed records of every kind and one good record without an id, on one partition: each
    dead letter equals the Python operator's for the same record; the output carries the ids the
    Python operator gives (topic/partition/offset), the attributes and the stamps."""
    svc, topics, _ws = start_worker(partitions=1)
    rng = np.random.default_rng(1)
    run_id = uuid.uuid4().hex[:6]
    records = {}
    short = make_batch(run_id, 1, rng.random((1, 1, 784), dtype=np.float32))
    short.input.data = short.input.data[:-3]
    records["short-data"] = short.SerializeToString()
    odd = make_batch(run_id, 2, rng.random((1, 1, 784), dtype=np.float32))
    odd.input.dtype = 99
    records["unknown-dtype"] = odd.SerializeToString()
    neg = make_batch(run_id, 3, rng.random((1, 1, 784), dtype=np.float32))
    neg.input.shape[:] = [1, -784]
    records["negative-dim"] = neg.SerializeToString()
    records["bad-shape"] = make_batch(run_id, 4, rng.random((3, 784), dtype=np.float32)).SerializeToString()
    records["bad-dtype"] = make_batch(run_id, 5, np.ones((1, 1, 784), dtype=np.int32)).SerializeToString()
    records["unknown-model"] = make_batch(run_id, 6, rng.random((1, 1, 784), dtype=np.float32),
                                          model="resnet50").SerializeToString()
    records["garbage"] = b"\x08\x96\x01\xff\xff"
    x_good = rng.random((2, 1, 784), dtype=np.float32)
    records["good-no-id"] = make_batch(run_id, 7, x_good, batch_id="").SerializeToString()

    p = Producer(producer_config(bootstrap))
    for key, value in records.items():
        p.produce(topics.input, value, key.encode(), partition=0)
    p.flush(10)
    msgs = read_n(bootstrap, [topics.output, topics.dead_letter], len(records))
    assert len(msgs) == len(records), svc.log_tail()

    py = ScoringOperator(get_codec("protobuf"), None, "ffnn", (1, 784), "py", engine=engine, backend="onnxruntime")
    for m in msgs:
        key = m.key().decode()
        if m.topic() == topics.output:
            assert key == "good-no-id"
            s = batch_pb2.ScoredBatch.FromString(m.value())
            assert s.batch_id == f"{topics.input}/0/{len(records) - 1}"  # topic/partition/offset, as Python
            assert s.run_id == run_id and s.sequence == 7 and dict(s.attributes) == {"k": "v"}
            assert s.model == "ffnn" and s.input_append_ms > 0
            assert s.facts.engine == engine and s.facts.worker_id == f"{engine}-0"
            assert s.facts.backend == "onnxruntime"
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
        assert got.input_append_ms > 0 and got.facts.engine == engine
        assert got.facts.backend == "onnxruntime" and got.facts.worker_send_ns >= got.facts.worker_receive_ns


# -- named tensors (DataBatch.inputs, ScoredBatch.outputs) ----------------------------------------

def masked_model(tmp_path):
    """features float32 [b, 6] + mask int64 [b, 6] -> scores float32 [b, 3] + label int64 [b], imported
    as "masked" into tmp_path/models."""
    from serving.models import import_model_file
    from tests.support.model_files import two_layer_onnx

    model = two_layer_onnx(tmp_path / "masked.onnx", n_in=6, n_out=3, extra_input=True, extra_output=True)
    import_model_file(model, tmp_path / "models", "masked", {"mask": {"range": [0, 2]}})
    return tmp_path / "models"


def named_batch(run_id, seq, arrays, model="masked"):
    b = batch_pb2.DataBatch(batch_id=f"{run_id}-{seq}", run_id=run_id, sequence=seq, intended_ns=time.time_ns() - 5,
                            created_ns=time.time_ns(), model=model)
    for name, a in arrays.items():
        to_tensor(a, b.inputs[name])
    return b


def check_named_batches_match_the_python_operator(kafka_bootstrap, start_worker, tmp_path, engine: str) -> None:
    """A model with two inputs of different dtypes and two outputs, embedded: every output by name
    with its dtype, right against ONNX Runtime on the file; a named batch that does not fit the model
    (an input missing or unknown, a wrong dtype, rows that disagree, one unnamed tensor) gets the
    same DeadLetter as sps_workers.scoring_op."""
    from serving.models import reference_predictions, resolve_spec
    from sps_workers.scoring_op import ScoringOperator

    models = masked_model(tmp_path)
    svc, topics, _ = start_worker(partitions=1, model="masked", models_dir=str(models))
    rng = np.random.default_rng(3)
    x = rng.random((4, 6), dtype=np.float32)
    mask = rng.integers(0, 2, (4, 6), dtype=np.int64)
    run_id = uuid.uuid4().hex[:6]
    records = {
        "good": named_batch(run_id, 0, {"features": x, "mask": mask}),
        "missing-mask": named_batch(run_id, 1, {"features": x}),
        "unknown-input": named_batch(run_id, 2, {"features": x, "mask": mask, "extra": mask}),
        "mask-int32": named_batch(run_id, 3, {"features": x, "mask": mask.astype(np.int32)}),
        "rows-differ": named_batch(run_id, 4, {"features": x, "mask": mask[:3]}),
        "unnamed": make_batch(run_id, 5, x, model="masked"),
    }
    records = {k: v.SerializeToString() for k, v in records.items()}
    p = Producer(producer_config(kafka_bootstrap))
    for key, value in records.items():
        p.produce(topics.input, value, key.encode(), partition=0)
    p.flush(10)
    msgs = read_n(kafka_bootstrap, [topics.output, topics.dead_letter], len(records))
    assert len(msgs) == len(records), svc.log_tail()

    py = ScoringOperator(get_codec("protobuf"), None, "masked", resolve_spec("masked", models), "py",
                         engine=engine, backend="onnxruntime")
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
            assert s.facts.backend == "onnxruntime" and s.facts.inference_ns > 0
            continue
        got = batch_pb2.DeadLetter.FromString(m.value())
        want = batch_pb2.DeadLetter.FromString(py.prepare(records[key], None, got.input_append_ms, got.source_topic,
                                                          got.source_partition, got.source_offset).dead_letter)
        assert (got.reason, got.detail) == (want.reason, want.detail), key
        for f in ("batch_id", "run_id", "created_ns", "intended_ns", "payload", "source_offset"):
            assert getattr(got, f) == getattr(want, f), (key, f)
        reasons[key] = got.reason
    assert reasons == {"missing-mask": "bad_shape", "unknown-input": "bad_shape", "mask-int32": "bad_dtype",
                       "rows-differ": "bad_shape", "unnamed": "bad_shape"}


def check_every_dtype_goes_through_onnx_runtime_by_name(kafka_bootstrap, start_worker, tmp_path) -> None:
    """One input and one output per dtype a model file may take (Neg / Not / Identity of each): every
    tensor is fed with its own dtype and comes back with it, values intact."""
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
    p.produce(topics.input, named_batch("dt", 0, x, model="dtypes").SerializeToString(), b"dt-0")
    p.flush(10)
    [m] = read_n(kafka_bootstrap, [topics.output, topics.dead_letter], 1) or [None]
    assert m is not None and m.topic() == topics.output, svc.log_tail()
    s = batch_pb2.ScoredBatch.FromString(m.value())
    for d, a in x.items():
        y = from_tensor(s.outputs[f"out_{d}"])
        want = ~a if d == "bool" else a if d == "uint8" else -a
        assert y.dtype == a.dtype and y.shape == (2, 3), d
        np.testing.assert_array_equal(y, want, err_msg=d)


# -- stop and failures ----------------------------------------------------------------------------

def check_sigterm_stops_cleanly(bootstrap, start_worker, engine_options: dict, is_the_worker) -> None:
    """30 batches scored, then SIGTERM: the process the launcher exec()ed (``is_the_worker(proc)``)
    listened on no TCP port at all (stricter than "every listener binds 127.0.0.1"), exits 0 within a
    few seconds, and its stop-time commit stored every offset (``engine_options`` set the periodic
    commit to a minute, so only that commit can have)."""
    import psutil
    from confluent_kafka import Consumer, TopicPartition

    from crayfish.kafka import consumer_config
    from tests.support.procs import listening

    svc, topics, ws = start_worker(partitions=2, engine_options=engine_options)
    codec = get_codec("protobuf")
    p = Producer(producer_config(bootstrap))
    n = 30
    for i in range(n):
        value, _ = codec.encode_batch(make_batch("stop", i, np.zeros((1, 1, 784), dtype=np.float32)))
        p.produce(topics.input, value, str(i).encode(), partition=i % 2)
    p.flush(10)
    assert len(read_n(bootstrap, [topics.output], n)) == n
    proc = psutil.Process(svc.proc.pid)
    assert is_the_worker(proc), proc.cmdline()[:3]
    assert listening(svc.proc.pid) == [], f"{proc.name()} opened a listening socket"
    t0 = time.monotonic()
    code = svc.stop(timeout_s=60)
    assert code == 0, svc.log_tail()   # a stop that needed SIGKILL returns -9
    assert time.monotonic() - t0 < 10, "the stop took longer than a few seconds"
    c = Consumer(consumer_config(bootstrap, ws.consumer_group))
    committed = c.committed([TopicPartition(topics.input, 0), TopicPartition(topics.input, 1)], timeout=10)
    c.close()
    assert sorted(tp.offset for tp in committed) == [n // 2, n // 2]


def check_unreachable_scoring_server_is_dead_lettered(bootstrap, start_worker) -> None:
    """External serving at a port nothing listens on: after the retries the batch is dead-lettered
    with the client's error (refused at once, or still reconnecting at the deadline: both retried)
    and the worker goes on."""
    import socket

    from sps_workers.settings import ExternalSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ext = ExternalSettings(client="scoring", target=f"127.0.0.1:{port}", timeout_s=0.5, retries=1, backoff_s=0.01)
    svc, topics, _ = start_worker(partitions=1, external=ext)
    value, _ = get_codec("protobuf").encode_batch(make_batch("ext", 0, np.zeros((1, 1, 784), dtype=np.float32)))
    p = Producer(producer_config(bootstrap))
    p.produce(topics.input, value, b"ext-0")
    p.flush(10)
    msgs = read_n(bootstrap, [topics.dead_letter], 1)
    assert msgs, svc.log_tail()
    d = batch_pb2.DeadLetter.FromString(msgs[0].value())
    assert d.reason == "scoring_error" and d.batch_id == "ext-0"
    assert d.detail.startswith((f"scoring at 127.0.0.1:{port} after 2 attempt(s): UnavailableError: ",
                                f"scoring at 127.0.0.1:{port} after 2 attempt(s): DeadlineExceededError: ")), d.detail
    assert d.facts.backend == "scoring"
    assert svc.alive()


# -- config errors --------------------------------------------------------------------------------

def offline_settings(engine: str, **over) -> WorkerSettings:
    """Settings that fail before any broker is reached (bootstrap 127.0.0.1:1)."""
    base = {"bootstrap": "127.0.0.1:1", "input_topic": "i", "output_topic": "o", "dead_letter_topic": "d",
            "consumer_group": "g", "model": "ffnn", "worker_id": engine}
    return WorkerSettings(**{**base, **over})


def check_missing_model_files_are_config_errors(module: str, engine: str, tmp_path, models_dir) -> None:
    """No manifest: the model is not built there (the worker reads the model's shapes from it); a
    manifest without an ONNX file: named too. Both exit 2 before anything starts."""
    import shutil
    import subprocess
    import sys

    from crayfish.host.paths import REPO_ROOT

    def launch():
        config = offline_settings(engine, models_dir=str(tmp_path)).model_dump_json()
        return subprocess.run([sys.executable, "-m", module, "--config", config], capture_output=True, text=True,
                              cwd=REPO_ROOT, timeout=600, check=False)

    r = launch()
    assert r.returncode == 2 and f"model: 'ffnn' is not built in {tmp_path}" in r.stderr, r.stderr
    (tmp_path / "ffnn").mkdir()
    shutil.copy(models_dir / "ffnn" / "manifest.json", tmp_path / "ffnn" / "manifest.json")
    r = launch()
    assert r.returncode == 2 and "no ONNX file at" in r.stderr, r.stderr
