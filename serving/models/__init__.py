"""The model zoo: seeded, reproducible models in every format the serving backends need.

Two models, as in the Crayfish paper (each module declares its per-item tensor contract, ``SPEC``;
:data:`MODELS` lists them):

- ``ffnn``: ``[b, 1, 784] -> [b, 10]``, 784-32-32-32-32-10 with ReLU, 28,618 parameters.
- ``resnet50``: ``[b, 224, 224, 3]`` (NHWC) ``-> [b, 1000]`` logits, ResNet50 v1.5 with batch norm
  folded into conv biases, 25,530,472 parameters.

Weights are not downloaded: they are drawn from a seed (:func:`build_model`), saved as a
reproducible ``.npz`` -- the canonical weights every later format loads -- and exported to ONNX
(opset 17, dynamic ``batch`` axis, input ``input_1``, output ``output``). The build writes the
model's description (tensor names, dtypes, shapes) into its ``manifest.json``: readers without the
registry -- the Java worker of sps_workers/kafka_streams, services reading a built model -- take it
from there (:meth:`ModelArtifacts.built_spec`), never from a copy.
:func:`reference_forward` is a plain numpy implementation of each model used to check predictions
of any backend. Layout conventions of the ``.npz`` are in :mod:`serving.models.weights`; the files
on disk are described in :mod:`serving.models.build`.

CLI: ``python -m serving.models build [--model NAME|all] [--dir DIR] [--seed N] [--force]``
and ``python -m serving.models list [--dir DIR]``.

How to add a model (tests/integration/sps_workers/test_extension_engines.py does exactly these steps with a throwaway
model in a temporary package)
--------------------------------------------------------------------------------------------
1. Write one module, ``serving/models/<name>.py``, with what :mod:`serving.models.registry` lists:
   ``SPEC = ModelSpec(name="<name>", input_shape=..., input_dtype="float32", output_shape=...)``,
   ``PARAM_COUNT``, ``init_weights(seed)``, ``to_onnx(weights, opset, doc)`` (onnx imported inside
   it) and the numpy reference ``forward(weights, x)``; ``LAYOUT`` if the manifest should say more.
2. Register it with one line: its dotted name in ``MODEL_MODULES`` of
   :mod:`serving.models.registry` (a module outside this package: ``register_model("<module>")``).
3. Build it: ``python -m serving.models build --model <name>`` (``crayfish models build``; the
   runner builds the model of an experiment itself): ``.npz``, ``.onnx`` whose predictions equal
   ``forward``, and ``manifest.json`` with the description.
4. Use it: ``model: <name>`` in an experiment file; ``crayfish validate`` accepts it, the generator
   makes inputs of its shape and every engine -- the Java one reading the manifest -- serves it.
   The TorchScript and SavedModel exporters (serving/models/export_torch.py, export_tf.py) need a
   graph of it only for the ``torchscript`` / ``savedmodel`` backends and their servers.
"""

from serving.models.registry import MODEL_MODULES, model_module, register_model  # noqa: I001 - first: fills MODELS
from serving.models.build import (
    BUILDER_VERSION,
    IR_VERSION,
    OPSET,
    ModelArtifacts,
    build_all,
    build_model,
    default_models_dir,
    known_model,
    model_facts,
    model_paths,
    reference_forward,
    reference_of,
    reference_predictions,
    resolve_spec,
)
from serving.models.files import ModelFileError, import_model_file, read_signature
from serving.models.spec import MODELS, ModelSpec, get_spec
from serving.models.weights import load_weights, param_count

__all__ = [
    "MODELS", "MODEL_MODULES", "register_model", "model_module", "ModelSpec", "ModelArtifacts", "get_spec",
    "build_model", "build_all", "model_paths", "reference_forward", "default_models_dir", "load_weights", "param_count", "OPSET", "IR_VERSION",
    "BUILDER_VERSION", "resolve_spec", "known_model", "model_facts", "reference_of", "reference_predictions", "ModelFileError", "import_model_file",
    "read_signature",
]
