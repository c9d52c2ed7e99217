"""The extension points, proven: a new engine and a new model each take one module (or folder) and
one registry line, exactly as the checklists in the docstrings of ``sps_workers`` and
``serving.models`` say -- nothing else in the tree changes.

(a) A throwaway engine ``toy`` in a temporary package (a confluent-kafka loop on
    sps_workers.runtime: options class, ``read_settings``, one EngineInstance per process), registered
    with one line, passes the engine conformance checks of tests/support/conformance_engines.py and has its
    options checked by ``crayfish validate``.
(b) A throwaway model ``toy`` in a temporary module, registered with one line, is accepted by
    ``crayfish validate``, built by ``python -m serving.models build`` (weights, ONNX, a manifest that
    describes it) and scored by an embedded backend with the reference's predictions.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from typer.testing import CliRunner

from crayfish.host.paths import REPO_ROOT
from serving.embedded import create_scorer
from serving.models import MODELS, model_paths, reference_forward, register_model
from serving.models import __main__ as models_cli
from serving.models import registry as model_registry
from services.runner.cli import app as crayfish_app
from sps_workers import ENGINES, EngineSpec
from tests.support.conformance_engines import (
    EngineStarter,
    check_mp_instances_in_parallel,
    check_registration,
    check_scores_dead_letters_and_traces,
    check_scores_through_the_scoring_service,
)

# -- (a) the throwaway engine ----------------------------------------------------------------------

TOY_ENGINE = {
    "__init__.py": '''
        """Engine ``toy``: the smallest engine on sps_workers.runtime (a test's throwaway)."""
        ''',
    "options.py": '''
        from typing import ClassVar

        from pydantic import Field

        from sps_workers.options import EngineOptions


        class ToyOptions(EngineOptions):
            ENGINE: ClassVar[str] = "toy"

            poll_ms: int = Field(50, ge=1, description="Longest wait of one poll.")
        ''',
    "worker.py": '''
        import signal

        from confluent_kafka import Consumer, Producer

        from crayfish.kafka import consumer_config, poll_batch, produce, producer_config
        from sps_workers.runtime import EngineInstance, read_settings, run_processes
        from toy_engine.options import ToyOptions


        def run(settings, options, index):
            stop = []
            signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
            inst = EngineInstance(settings, engine="toy", index=index)
            consumer = Consumer(consumer_config(settings.bootstrap, settings.consumer_group))
            producer = Producer(producer_config(settings.bootstrap))
            consumer.subscribe([settings.input_topic])
            try:
                while not stop:
                    for m in poll_batch(consumer, settings.max_poll_records, options.poll_ms / 1000):
                        if m.error() is None:
                            out = inst.handle(m.value(), m.headers(), m.timestamp()[1], m.topic(), m.partition(),
                                              m.offset())
                            produce(producer, out.topic, out.value, m.key(), headers=out.headers)
                    producer.poll(0)
            finally:
                producer.flush(10)
                consumer.close()
                inst.close()


        def main():
            settings, options = read_settings(None, "python -m toy_engine", "A throwaway engine.", ToyOptions)
            n = settings.parallelism
            if n == 1:
                run(settings, options, 0)
            else:
                run_processes(run, [(settings, options, i) for i in range(n)], [f"toy-{i}" for i in range(n)],
                              "toy worker processes")
        ''',
    "__main__.py": '''
        from toy_engine.worker import main

        main()
        ''',
}


@pytest.fixture
def toy_engine(tmp_path_factory, monkeypatch):
    """Checklist steps 1-2 (a folder with options and ``__main__``, scoring with EngineInstance) in a
    temporary package on sys.path and PYTHONPATH, and step 5: its one registry line."""
    root = tmp_path_factory.mktemp("toy-engine")
    pkg = root / "toy_engine"
    pkg.mkdir()
    for name, text in TOY_ENGINE.items():
        (pkg / name).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))   # the worker process imports it too
    from toy_engine.options import ToyOptions

    monkeypatch.setitem(ENGINES, "toy", EngineSpec("toy", "toy_engine", ToyOptions))   # the one line
    yield "toy"
    for mod in [m for m in sys.modules if m == "toy_engine" or m.startswith("toy_engine.")]:
        del sys.modules[mod]


@pytest.fixture
def starter(kafka_bootstrap, models_dir, tmp_path):
    s = EngineStarter(kafka_bootstrap, models_dir, tmp_path)
    yield s
    s.close()


def validate(tmp_path, doc: dict):
    """``crayfish validate FILE`` in this process (the registrations above live here)."""
    path = tmp_path / f"exp-{len(list(tmp_path.glob('exp-*')))}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, CliRunner().invoke(crayfish_app, ["validate", str(path)])


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


BASE = {"name": "ext", "workload": {"type": "constant", "rate": 10, "duration_s": 1}}


def test_a_new_engine_is_registered_and_validated_with_one_line(toy_engine, tmp_path):
    check_registration(toy_engine, ENGINES[toy_engine], REPO_ROOT)
    path, r = validate(tmp_path, {**BASE, "engine": "toy", "engine_options": {"poll_ms": 5}})
    assert r.exit_code == 0 and f"{path}: ok (1 point(s))" in r.output, r.output
    path, r = validate(tmp_path, {**BASE, "engine": "toy", "engine_options": {"poll_ms": 0}})
    assert one_line_error(r) == (f"error: {path}: engine_options.poll_ms: Input should be greater than or "
                                 f"equal to 1")
    path, r = validate(tmp_path, {**BASE, "engine": "toy", "engine_options": {"bogus": 1}})
    assert one_line_error(r) == (f"error: {path}: engine_options.bogus: unknown option of the toy engine "
                                 f"(known: poll_ms)")


def test_a_new_engine_scores_dead_letters_and_traces(toy_engine, kafka_bootstrap, starter, models_dir, tmp_path):
    check_scores_dead_letters_and_traces(kafka_bootstrap, starter, models_dir, tmp_path, toy_engine)


def test_a_new_engine_runs_mp_instances_in_parallel(toy_engine, kafka_bootstrap, starter):
    check_mp_instances_in_parallel(kafka_bootstrap, starter, toy_engine)


def test_a_new_engine_scores_through_the_scoring_service(toy_engine, kafka_bootstrap, starter, models_dir, tmp_path):
    check_scores_through_the_scoring_service(kafka_bootstrap, starter, models_dir, tmp_path, toy_engine)


# -- (b) the throwaway model -----------------------------------------------------------------------

TOY_MODEL = '''
    """Model ``toy``: [b, 1, 4] -> Dense 4x3 -> [b, 3] (a test's throwaway)."""
    import numpy as np

    from serving.models.spec import ModelSpec

    SPEC = ModelSpec(name="toy", input_shape=(1, 4), input_dtype="float32", output_shape=(3,),
                     description="One dense layer.")
    PARAM_COUNT = 4 * 3 + 3


    def init_weights(seed):
        rng = np.random.default_rng([seed, 7])
        return {"dense.w": rng.standard_normal((4, 3)).astype(np.float32),
                "dense.b": rng.uniform(-0.1, 0.1, 3).astype(np.float32)}


    def to_onnx(weights, opset, doc=""):
        from onnx import TensorProto, helper, numpy_helper

        inp = helper.make_tensor_value_info(SPEC.input_name, TensorProto.FLOAT, ["batch", *SPEC.input_shape])
        out = helper.make_tensor_value_info(SPEC.output_name, TensorProto.FLOAT, ["batch", *SPEC.output_shape])
        nodes = [helper.make_node("Flatten", [SPEC.input_name], ["flat"], axis=1),
                 helper.make_node("Gemm", ["flat", "dense.w", "dense.b"], [SPEC.output_name])]
        inits = [numpy_helper.from_array(weights[k], k) for k in ("dense.w", "dense.b")]
        graph = helper.make_graph(nodes, "toy", [inp], [out], initializer=inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], doc_string=doc)


    def forward(weights, x):
        return (x.reshape(len(x), -1) @ weights["dense.w"] + weights["dense.b"]).astype(np.float32)
    '''


@pytest.fixture
def toy_model_module(tmp_path, monkeypatch):
    """Checklist step 1: the model's one module, in a temporary folder on sys.path. The registry is
    restored afterwards."""
    (tmp_path / "toy_model.py").write_text(textwrap.dedent(TOY_MODEL).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    models, modules = dict(MODELS), dict(model_registry._MODULES)
    yield "toy_model"
    MODELS.clear()
    MODELS.update(models)
    model_registry._MODULES.clear()
    model_registry._MODULES.update(modules)
    sys.modules.pop("toy_model", None)


def test_a_new_model_is_validated_built_and_scored_after_one_line(toy_model_module, tmp_path):
    doc = {**BASE, "model": "toy", "serving": {"backend": "onnxruntime"}}
    path, r = validate(tmp_path, doc)
    assert one_line_error(r) == f"error: {path}: model: unknown model 'toy'; known: ffnn, resnet50, or a file: {{path: my.onnx}}"

    spec = register_model(toy_model_module)                     # step 2: the one line
    path, r = validate(tmp_path, doc)                           # step 4: experiment files accept it
    assert r.exit_code == 0 and f"{path}: ok (1 point(s))" in r.output, r.output

    models_dir = tmp_path / "models"                            # step 3: build it
    assert models_cli.main(["build", "--model", "toy", "--dir", str(models_dir)]) == 0
    art = model_paths("toy", models_dir)
    assert art.exists()
    assert art.built_spec() == spec                             # the manifest describes it
    assert art.manifest["input_shape"] == ["batch", 1, 4] and art.manifest["output_shape"] == ["batch", 3]
    assert art.manifest["param_count"] == 15

    x = np.random.default_rng(3).random((5, 1, 4), dtype=np.float32)
    expected = reference_forward("toy", art.weights, x)
    assert expected.shape == (5, 3) and np.abs(expected).sum() > 0
    sess = ort.InferenceSession(str(art.onnx), providers=["CPUExecutionProvider"])
    [y] = sess.run(None, {spec.input_name: x})
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    scorer = create_scorer("onnxruntime", "toy", models_dir=models_dir)   # downstream: an embedded backend
    try:
        np.testing.assert_allclose(scorer.score(x), expected, rtol=1e-5, atol=1e-6)
    finally:
        scorer.close()
