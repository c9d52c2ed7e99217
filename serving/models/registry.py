"""The model registry: one module per model, one line per module in :data:`MODEL_MODULES`.

A model module (see ``serving/models/ffnn.py``) provides:

``SPEC``
    its :class:`~serving.models.spec.ModelSpec` (name, per-item input shape and dtype, output
    shape, tensor names, a description);
``PARAM_COUNT``
    the number of parameters :func:`init_weights` must produce (guards the architecture tables);
``init_weights(seed) -> dict[str, np.ndarray]``
    the seeded weights (saved as the canonical ``.npz``);
``to_onnx(weights, opset, doc="") -> onnx.ModelProto``
    the ONNX graph, batch axis named ``"batch"`` (import onnx inside it: scorers import the module
    in environments without onnx);
``forward(weights, x) -> np.ndarray``
    the numpy float32 reference every backend's predictions are checked against;
``LAYOUT`` (optional)
    weight and input layouts recorded in the manifest (default :data:`DEFAULT_LAYOUT`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from serving.models.spec import MODELS, ModelSpec

# The registry: one line per model module, in the order models are listed and built.
MODEL_MODULES: tuple[str, ...] = (
    "serving.models.ffnn",
    "serving.models.resnet50",
)

DEFAULT_LAYOUT = {"dense": "[in, out]", "conv": "OIHW"}
REQUIRED = ("SPEC", "PARAM_COUNT", "init_weights", "to_onnx", "forward")

_MODULES: dict[str, ModuleType] = {}


def register_model(module: ModuleType | str) -> ModelSpec:
    """Add the model of ``module`` (a module, or its dotted name) to :data:`MODELS`; returns its spec.
    A second module under a taken name raises."""
    if isinstance(module, str):
        module = importlib.import_module(module)
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"model module {module.__name__} lacks {', '.join(missing)} (see serving.models.registry)")
    spec = module.SPEC
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"{module.__name__}.SPEC is a {type(spec).__name__}, not a ModelSpec")
    other = _MODULES.get(spec.name)
    if other is not None and other is not module:
        raise ValueError(f"model name {spec.name!r} is taken by {other.__name__}")
    _MODULES[spec.name] = module
    MODELS[spec.name] = spec
    return spec


def model_module(name: str) -> ModuleType:
    """The module of a registered model (its weights, ONNX graph and reference forward)."""
    try:
        return _MODULES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None


def layout(name: str) -> dict[str, str]:
    """The manifest's ``layout`` entry of a model."""
    return {**DEFAULT_LAYOUT, **getattr(model_module(name), "LAYOUT", {})}


for _name in MODEL_MODULES:
    register_model(_name)
