"""Model specifications: the per-item tensor contract every serving backend must honour.

Each model module declares its own :class:`ModelSpec` (``SPEC``); :mod:`serving.models.registry`
collects them into :data:`MODELS`. The built model's ``manifest.json`` carries the same description
(:meth:`ModelSpec.manifest_fields`), so readers outside Python (the Java worker) or without the
registry read it there (:meth:`ModelSpec.from_manifest`).

Single and named tensors
------------------------
A model with one input and one output travels in the single-tensor contract (``DataBatch.input``,
``ScoredBatch.output``) and is fed a numpy array. A model with several inputs or outputs (a
transformer's ``input_ids`` + ``attention_mask``, a tree model's ``label`` + ``probabilities``)
travels in the named-tensor contract (``DataBatch.inputs`` / ``ScoredBatch.outputs``) and is fed a
``{input name: array}`` dict; a scorer of a model with several outputs returns a
``{output name: array}`` dict. :func:`check_feeds` is the one place that says what input fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

@dataclass(frozen=True)
class TensorSpec:
    """One tensor per item: name, numpy dtype name, shape without the batch axis.

    For the synthetic inputs of integer tensors: values uniform in ``[low, high)`` (token ids below
    a vocabulary size), or ``fill="ones"`` (attention masks)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    low: int | None = None
    high: int | None = None
    fill: str = "random"

    def manifest_fields(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": ["batch", *self.shape]}
        if self.low is not None:
            d["range"] = [self.low, self.high]
        if self.fill != "random":
            d["fill"] = self.fill
        return d

    @classmethod
    def from_manifest(cls, d: Mapping[str, Any]) -> TensorSpec:
        low, high = d.get("range") or (None, None)
        return cls(d["name"], d["dtype"], tuple(d["shape"][1:]), low, high, d.get("fill", "random"))


@dataclass(frozen=True)
class ModelSpec:
    """What one model takes and returns, per item (the batch dimension is always free).

    ``input_name`` / ``output_name`` are the tensor names in every exported format (ONNX graph
    inputs/outputs, TF Serving signature keys, ...). ``input_1`` is the key the original
    Crayfish used with TF Serving. Outputs of the built-in models are float32.

    ``inputs`` / ``outputs`` list every tensor (filled from the single fields when not given); the
    single fields describe the first of each. Build a model with several with :meth:`of_tensors`.
    """

    name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    input_name: str = "input_1"
    output_name: str = "output"
    description: str = field(default="", compare=False)
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def __post_init__(self):
        if not self.inputs:
            object.__setattr__(self, "inputs", (TensorSpec(self.input_name, self.input_dtype,
                                                           tuple(self.input_shape)),))
        if not self.outputs:
            object.__setattr__(self, "outputs", (TensorSpec(self.output_name, "float32",
                                                            tuple(self.output_shape)),))

    @classmethod
    def of_tensors(cls, name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                   description: str = "") -> ModelSpec:
        first_in, first_out = inputs[0], outputs[0]
        return cls(name=name, input_shape=tuple(first_in.shape), input_dtype=first_in.dtype,
                   output_shape=tuple(first_out.shape), input_name=first_in.name,
                   output_name=first_out.name, description=description,
                   inputs=tuple(inputs), outputs=tuple(outputs))

    @property
    def multi_input(self) -> bool:
        return len(self.inputs) > 1

    @property
    def multi_output(self) -> bool:
        return len(self.outputs) > 1

    @property
    def named(self) -> bool:
        """True when the model needs the named-tensor contract (several inputs or outputs)."""
        return self.multi_input or self.multi_output

    def batch_input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.input_shape)

    def batch_output_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.output_shape)

    def zeros(self, rows: int, tensors: Sequence[TensorSpec] | None = None):
        """Zero feeds (``tensors``: the inputs by default) of ``rows`` items: an array for a single
        tensor, a ``{name: array}`` dict for several."""
        tensors = self.inputs if tensors is None else tensors
        arrays = {t.name: np.zeros((rows, *t.shape), dtype=t.dtype) for t in tensors}
        return next(iter(arrays.values())) if len(arrays) == 1 else arrays

    def manifest_fields(self) -> dict[str, Any]:
        """The description as written into manifest.json (the batch axis named ``"batch"``)."""
        return {"name": self.name, "input_name": self.input_name, "output_name": self.output_name,
                "input_shape": ["batch", *self.input_shape], "input_dtype": self.input_dtype,
                "output_shape": ["batch", *self.output_shape],
                "inputs": [t.manifest_fields() for t in self.inputs],
                "outputs": [t.manifest_fields() for t in self.outputs]}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ModelSpec:
        """The description a built model's manifest.json carries (see :meth:`manifest_fields`)."""
        try:
            inputs = tuple(TensorSpec.from_manifest(t) for t in manifest.get("inputs", ()))
            outputs = tuple(TensorSpec.from_manifest(t) for t in manifest.get("outputs", ()))
            return cls(name=manifest["name"], input_shape=tuple(manifest["input_shape"][1:]),
                       input_dtype=manifest["input_dtype"], output_shape=tuple(manifest["output_shape"][1:]),
                       input_name=manifest["input_name"], output_name=manifest["output_name"],
                       inputs=inputs, outputs=outputs)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"manifest: no valid model description ({type(exc).__name__}: {exc})") from None


class FeedError(ValueError):
    """Input that does not fit a model; ``reason`` is a dead-letter reason (bad_dtype / bad_shape)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _check_one(spec: ModelSpec, t: TensorSpec, x: Any, rows: int | None) -> np.ndarray:
    try:
        dt, shape = x.dtype, x.shape
    except AttributeError:
        raise FeedError("bad_dtype", f"{spec.name}: input {t.name}: expected a numpy array, got "
                        f"{type(x).__name__}") from None
    if dt != t.dtype:
        raise FeedError("bad_dtype", _expected(spec, t, x))
    if shape[1:] != t.shape or not shape or shape[0] < 1:
        raise FeedError("bad_shape", _expected(spec, t, x))
    if rows is not None and shape[0] != rows:
        raise FeedError("bad_shape", f"{spec.name}: input {t.name} has {shape[0]} rows, "
                        f"{spec.inputs[0].name} has {rows}: every input shares the batch axis")
    return x


def _expected(spec: ModelSpec, t: TensorSpec, x: np.ndarray) -> str:
    return (f"{spec.name}: input {t.name}: expected {t.dtype} [b>=1, {', '.join(map(str, t.shape))}], "
            f"got {x.dtype} {list(x.shape)}")


def check_feeds(spec: ModelSpec, x: Any):
    """``x`` as the model's scorer takes it (an array for one input, a dict in the model's input
    order for several), or :class:`FeedError` naming the input. A model with one input also
    accepts ``{its name: array}``."""
    if isinstance(x, Mapping):
        if not spec.multi_input and len(x) == 1 and spec.input_name in x:     # one input, by name
            return _check_one(spec, spec.inputs[0], x[spec.input_name], None)
        names = [t.name for t in spec.inputs]
        missing, extra = [n for n in names if n not in x], sorted(set(x) - set(names))
        if missing or extra:
            raise FeedError("bad_shape", f"{spec.name}: inputs {sorted(x)} do not match the model's "
                            f"{names}" + (f" (missing {', '.join(missing)})" if missing else "")
                            + (f" (unknown {', '.join(extra)})" if extra else ""))
        if not spec.multi_input:
            return _check_one(spec, spec.inputs[0], x[names[0]], None)
        first = _check_one(spec, spec.inputs[0], x[names[0]], None)
        out = {names[0]: first}
        for t in spec.inputs[1:]:
            out[t.name] = _check_one(spec, t, x[t.name], first.shape[0])
        return out
    if spec.multi_input:
        raise FeedError("bad_shape", f"{spec.name}: takes named inputs "
                        f"{', '.join(t.name for t in spec.inputs)}, got one unnamed tensor")
    return _check_one(spec, spec.inputs[0], x, None)


# name -> spec of every registered model, in registration order; filled by serving.models.registry
# (imported by serving/models/__init__.py, so it is complete whenever serving.models is imported).
MODELS: dict[str, ModelSpec] = {}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
