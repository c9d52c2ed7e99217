"""Model specifications: the per-item tensor contract every serving backend must honour.

Each model module declares its own :class:`ModelSpec` (``SPEC``); :mod:`serving.models.registry`
collects them into :data:`MODELS`. The built model's ``manifest.json`` carries the same description
(:meth:`ModelSpec.manifest_fields`), so readers outside Python (the Java worker) or without the
registry read it there (:meth:`ModelSpec.from_manifest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class ModelSpec:
    """What one model takes and returns, per item (the batch dimension is always free).

    ``input_name`` / ``output_name`` are the tensor names in every exported format (ONNX graph
    inputs/outputs, TF Serving signature keys, ...). ``input_1`` is the key the original
    Crayfish used with TF Serving. Outputs are float32.
    """

    name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    input_name: str = "input_1"
    output_name: str = "output"
    description: str = field(default="", compare=False)

    def batch_input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.input_shape)

    def batch_output_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.output_shape)

    def manifest_fields(self) -> dict[str, Any]:
        """The description as written into manifest.json (the batch axis named ``"batch"``)."""
        return {"name": self.name, "input_name": self.input_name, "output_name": self.output_name,
                "input_shape": ["batch", *self.input_shape], "input_dtype": self.input_dtype,
                "output_shape": ["batch", *self.output_shape]}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ModelSpec:
        """The description a built model's manifest.json carries (see :meth:`manifest_fields`)."""
        try:
            return cls(name=manifest["name"], input_shape=tuple(manifest["input_shape"][1:]),
                       input_dtype=manifest["input_dtype"], output_shape=tuple(manifest["output_shape"][1:]),
                       input_name=manifest["input_name"], output_name=manifest["output_name"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"manifest: no valid model description ({type(exc).__name__}: {exc})") from None


# name -> spec of every registered model, in registration order; filled by serving.models.registry
# (imported by serving/models/__init__.py, so it is complete whenever serving.models is imported).
MODELS: dict[str, ModelSpec] = {}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
