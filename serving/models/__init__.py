"""The model zoo: seeded, reproducible models in every format the serving backends need.

Two models, as in the Crayfish paper (see :data:`MODELS` for the per-item tensor contract):

- ``ffnn``: ``[b, 1, 784] -> [b, 10]``, 784-32-32-32-32-10 with ReLU, 28,618 parameters.
- ``resnet50``: ``[b, 224, 224, 3]`` (NHWC) ``-> [b, 1000]`` logits, ResNet50 v1.5 with batch norm
  folded into conv biases, 25,530,472 parameters.

Weights are not downloaded: they are drawn from a seed (:func:`build_model`), saved as a
reproducible ``.npz`` -- the canonical weights every later format loads -- and exported to ONNX
(opset 17, dynamic ``batch`` axis, input ``input_1``, output ``output``).
:func:`reference_forward` is a plain numpy implementation of each model used to check predictions
of any backend. Layout conventions of the ``.npz`` are in :mod:`serving.models.weights`; the files
on disk are described in :mod:`serving.models.build`.

CLI: ``python -m serving.models build [--model ffnn|resnet50|all] [--dir DIR] [--seed N] [--force]``
and ``python -m serving.models list [--dir DIR]``.
"""

from serving.models.build import (
    BUILDER_VERSION,
    IR_VERSION,
    OPSET,
    ModelArtifacts,
    build_all,
    build_model,
    default_models_dir,
    model_paths,
    reference_forward,
)
from serving.models.spec import MODELS, ModelSpec, get_spec
from serving.models.weights import load_weights, param_count

__all__ = [
    "MODELS", "ModelSpec", "ModelArtifacts", "get_spec", "build_model", "build_all", "model_paths",
    "reference_forward", "default_models_dir", "load_weights", "param_count", "OPSET", "IR_VERSION",
    "BUILDER_VERSION",
]
