"""The named-tensor contract below the broker: a model file with two inputs of different dtypes
and two outputs, from its signature through the feed checks, the embedded scorer, the Scoring
core (with dynamic batching), the scoring operator and the prediction checker."""

from __future__ import annotations

import numpy as np
import pytest

from crayfish.codec import CodecError, get_codec
from crayfish.payloads import named_input_pool
from crayfish.tensor import arrays_from, fill_named, from_tensor, to_tensor
from crayfish.v1 import batch_pb2
from serving.core import ScoringCore
from serving.core.settings import CoreSettings
from serving.embedded import create_scorer
from serving.errors import BadInputError
from serving.models import import_model_file, reference_predictions, resolve_spec
from serving.models.files import ModelFileError, read_signature, spec_from_signature
from serving.models.spec import FeedError, ModelSpec, check_feeds
from services.collector.checker import PredictionChecker
from services.generator.generator import BatchFactory
from services.generator.settings import GeneratorSettings, input_tensors
from sps_workers.scoring_op import BAD_DTYPE, BAD_SHAPE, ScoringOperator
from tests.support.model_files import forward, two_layer_onnx

OVERRIDES = {"mask": {"range": [0, 2]}}


@pytest.fixture
def models(tmp_path):
    path = two_layer_onnx(tmp_path / "masked.onnx", extra_input=True, extra_output=True)
    import_model_file(path, tmp_path / "models", "masked", OVERRIDES)
    return tmp_path / "models"


def _feeds(rows=3, seed=0):
    rng = np.random.default_rng(seed)
    return {"features": rng.random((rows, 6), dtype=np.float32),
            "mask": rng.integers(0, 2, (rows, 6), dtype=np.int64)}


def test_the_spec_lists_every_tensor_and_survives_the_manifest(models):
    spec = resolve_spec("masked", models)
    assert spec.named and spec.multi_input and spec.multi_output
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("features", "float32", (6,)), ("mask", "int64", (6,))]
    assert [(t.name, t.dtype, t.shape) for t in spec.outputs] == [("scores", "float32", (3,)), ("label", "int64", ())]
    assert (spec.inputs[1].low, spec.inputs[1].high) == (0, 2)
    assert ModelSpec.from_manifest(spec.manifest_fields()) == spec
    ffnn = resolve_spec("ffnn")
    assert not ffnn.named and ffnn.inputs[0].name == "input_1"


def test_input_overrides_are_checked_and_named(tmp_path):
    sig = read_signature(two_layer_onnx(tmp_path / "m.onnx", extra_input=True))
    spec = spec_from_signature(sig, "m", {"mask": {"vocab": 30}, "features": {}})
    assert (spec.inputs[1].low, spec.inputs[1].high, spec.inputs[1].fill) == (0, 30, "random")
    assert spec_from_signature(sig, "m", {"mask": {"fill": "ones"}}).inputs[1].fill == "ones"
    for given, message in [({"features": {"vocab": 9}}, r"inputs.features: range/vocab is for integer inputs"),
                           ({"mask": {"range": [5, 5]}}, r"inputs.mask: value range \[5, 5\) is empty"),
                           ({"mask": {"fill": "zeros"}}, r"inputs.mask.fill: 'zeros'; use random or ones")]:
        with pytest.raises(ModelFileError, match=message):
            spec_from_signature(sig, "m", given)


def test_check_feeds_names_what_does_not_fit(models):
    spec = resolve_spec("masked", models)
    x = _feeds()
    assert list(check_feeds(spec, x)) == ["features", "mask"]
    cases = [({"features": x["features"]}, "bad_shape", r"missing mask"),
             ({**x, "extra": x["mask"]}, "bad_shape", r"unknown extra"),
             ({**x, "mask": x["mask"].astype(np.int32)}, "bad_dtype", r"input mask: expected int64 \[b>=1, 6\], got int32"),
             ({**x, "mask": x["mask"][:2]}, "bad_shape", r"input mask has 2 rows, features has 3"),
             ({**x, "features": x["features"][:, :5]}, "bad_shape", r"input features: expected float32 \[b>=1, 6\]"),
             (x["features"], "bad_shape", r"takes named inputs features, mask, got one unnamed tensor")]
    for given, reason, message in cases:
        with pytest.raises(FeedError, match=message) as err:
            check_feeds(spec, given)
        assert err.value.reason == reason
    ffnn = resolve_spec("ffnn")
    one = np.zeros((2, 1, 784), np.float32)
    assert check_feeds(ffnn, {"input_1": one}) is one        # one input sent by name: unwrapped


def test_the_embedded_scorer_feeds_every_input_and_returns_every_output(models, tmp_path):
    x = _feeds(5)
    with create_scorer("onnxruntime", "masked", models) as scorer:
        y = scorer.score(x)
        assert set(y) == {"scores", "label"}
        assert np.allclose(y["scores"], forward(tmp_path / "masked.onnx", x["features"], x["mask"]), atol=1e-5)
        assert np.array_equal(y["label"], np.argmax(y["scores"], axis=1))
        with pytest.raises(ValueError, match="missing mask"):
            scorer.score({"features": x["features"]})
    with create_scorer("noop", "masked", models) as noop:
        zeros = noop.score(x)
        assert zeros["scores"].shape == (5, 3) and zeros["label"].shape == (5,) and zeros["label"].dtype == np.int64


@pytest.mark.parametrize("batching", [None, {"max_batch_size": 8, "max_queue_delay_us": 2000}])
def test_the_scoring_core_scores_named_feeds_alone_and_batched(models, batching):
    settings = CoreSettings(models=[{"name": "masked", "backend": "onnxruntime"}], models_dir=str(models),
                            batching=batching)
    with ScoringCore(settings) as core:
        from concurrent.futures import ThreadPoolExecutor

        feeds = [_feeds(2, seed) for seed in range(6)]
        with ThreadPoolExecutor(6) as ex:
            results = list(ex.map(lambda f: core.score("masked", f), feeds))
        for f, r in zip(feeds, results):
            ref = reference_predictions("masked", models, f)
            assert np.allclose(r.output["scores"], ref["scores"], atol=1e-5)
            assert np.array_equal(r.output["label"], ref["label"])
        with pytest.raises(BadInputError, match="input mask: expected int64"):
            core.score("masked", {**feeds[0], "mask": feeds[0]["mask"].astype(np.float32)})
        assert [t["name"] for t in core.describe("masked")["inputs"]] == ["features", "mask"]


def _batch(spec_inputs: dict | None = None, single=None, model="masked") -> bytes:
    b = batch_pb2.DataBatch(batch_id="b1", run_id="r", model=model)
    if spec_inputs is not None:
        fill_named(b.inputs, spec_inputs)
    if single is not None:
        to_tensor(single, b.input)
    return b.SerializeToString()


def test_the_operator_scores_named_batches_and_dead_letters_what_does_not_fit(models):
    spec = resolve_spec("masked", models)
    with create_scorer("onnxruntime", "masked", models) as scorer:
        op = ScoringOperator(get_codec("protobuf"), scorer, "masked", spec, "w", engine="test")
        x = _feeds(4)
        res = op.process(_batch(x), [], 0, "in", 0, 0)
        out = batch_pb2.ScoredBatch.FromString(res.value)
        assert not out.HasField("output") and set(out.outputs) == {"scores", "label"}
        ref = reference_predictions("masked", models, x)
        assert np.allclose(from_tensor(out.outputs["scores"]), ref["scores"], atol=1e-5)
        for value, reason, detail in [
                (_batch({"features": x["features"]}), BAD_SHAPE, "missing mask"),
                (_batch({**x, "mask": x["mask"].astype(np.float64)}), BAD_DTYPE, "input mask: expected int64"),
                (_batch(single=x["features"]), BAD_SHAPE, "takes named inputs")]:
            dead = op.process(value, [], 0, "in", 0, 1)
            assert dead.value is None and dead.reason == reason
            assert detail in batch_pb2.DeadLetter.FromString(dead.dead_letter).detail


def test_a_one_input_model_sent_by_name_answers_by_name():
    spec = resolve_spec("ffnn")
    with create_scorer("noop", "ffnn") as scorer:
        op = ScoringOperator(get_codec("protobuf"), scorer, "ffnn", spec, "w", engine="test")
        x = np.zeros((2, 1, 784), np.float32)
        named = batch_pb2.ScoredBatch.FromString(op.process(_batch({"input_1": x}, model="ffnn"), [], 0, "in", 0, 0).value)
        assert list(named.outputs) == ["output"] and from_tensor(named.outputs["output"]).shape == (2, 10)
        single = batch_pb2.ScoredBatch.FromString(op.process(_batch(single=x, model="ffnn"), [], 0, "in", 0, 1).value)
        assert not single.outputs and from_tensor(single.output).shape == (2, 10)


def test_crayfish_json_refuses_named_tensors():
    b = batch_pb2.DataBatch(batch_id="b", model="m")
    fill_named(b.inputs, _feeds(1))
    with pytest.raises(CodecError, match="crayfish-json carries one unnamed tensor.*named inputs features, mask"):
        get_codec("crayfish-json").encode_batch(b)


def test_named_pools_are_seeded_and_follow_range_and_fill(models, tmp_path):
    spec = resolve_spec("masked", models)
    tensors = input_tensors(spec)
    a, b = named_input_pool(tensors, 4, 3, seed=5), named_input_pool(tensors, 4, 3, seed=5)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
    assert a[0]["features"].dtype == np.float32 and a[0]["mask"].dtype == np.int64
    masks = np.stack([e["mask"] for e in a])
    assert set(np.unique(masks)) == {0, 1}
    ones = named_input_pool([t.model_copy(update={"fill": "ones"}) if t.name == "mask" else t for t in tensors], 4, 2, 5)
    assert all((e["mask"] == 1).all() for e in ones)
    rec = tmp_path / "rec.npz"
    np.savez(rec, features=np.arange(30, dtype=np.float64).reshape(5, 6), mask=np.ones((5, 6), np.int64))
    replay = named_input_pool(tensors, 2, 1, seed=0, replay_path=rec)
    assert len(replay) == 3 and replay[0]["features"].dtype == np.float32
    assert np.array_equal(replay[2]["features"][1], np.arange(6, dtype=np.float32))   # wraps to row 0


def test_the_generator_sends_named_inputs_and_the_checker_checks_every_output(models):
    spec = resolve_spec("masked", models)
    gs = GeneratorSettings(bootstrap="unused:1", topic="t", run_id="r", model="masked", item_shape=[6],
                           tensors=input_tensors(spec), batch_size=3,
                           workload={"type": "constant", "rate": 1, "duration_s": 1})
    factory = BatchFactory(gs)
    _, value, _ = factory.build(2, 10, 11)
    sent = batch_pb2.DataBatch.FromString(value)
    assert sent.sequence == 2 and not sent.HasField("input")
    x = arrays_from(sent.inputs)
    assert all(np.array_equal(x[k], factory.pool_arrays[2][k]) for k in x)
    checker = PredictionChecker(gs, models, sample_rate=1.0)
    ref = reference_predictions("masked", models, x)
    assert checker.check(2, dict(ref)) is True
    wrong_label = {**ref, "label": (ref["label"] + 1) % 3}
    assert checker.check(2, wrong_label) is False
    assert checker.check(2, {"scores": ref["scores"]}) is False          # an output missing
    assert checker.report()["wrong"] == 2


def test_parquet_replay_gives_one_column_per_input(models, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rec = tmp_path / "rec.parquet"
    features = [[float(r * 6 + c) for c in range(6)] for r in range(3)]
    pq.write_table(pa.table({"mask": [[1] * 6, [0] * 6, [1, 0] * 3], "features": features}), rec)
    pool = named_input_pool(input_tensors(resolve_spec("masked", models)), 3, 1, seed=0, replay_path=rec)
    assert len(pool) == 1 and pool[0]["features"].shape == (3, 6) and pool[0]["mask"].dtype == np.int64
    assert np.array_equal(pool[0]["features"], np.array(features, np.float32))
    assert pool[0]["mask"][2].tolist() == [1, 0, 1, 0, 1, 0]
    with pytest.raises(KeyError, match="no column 'ids'"):
        named_input_pool([input_tensors(resolve_spec("masked", models))[0].model_copy(update={"name": "ids"})],
                         3, 1, seed=0, replay_path=rec)
