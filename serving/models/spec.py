"""Model specifications: the per-item tensor contract every serving backend must honour."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """What one model takes and returns, per item (the batch dimension is always free).

    ``input_name`` / ``output_name`` are the tensor names in every exported format (ONNX graph
    inputs/outputs, TF Serving signature keys, ...). ``input_1`` is the key the original
    Crayfish used with TF Serving.
    """

    name: str
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    input_name: str = "input_1"
    output_name: str = "output"
    description: str = ""

    def batch_input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.input_shape)

    def batch_output_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.output_shape)


MODELS: dict[str, ModelSpec] = {
    "ffnn": ModelSpec(
        name="ffnn",
        input_shape=(1, 784),
        input_dtype="float32",
        output_shape=(10,),
        description="Crayfish FFNN: 784-32-32-32-32-10, ReLU hidden layers, linear output "
                    "(28,618 parameters).",
    ),
    "resnet50": ModelSpec(
        name="resnet50",
        input_shape=(224, 224, 3),
        input_dtype="float32",
        output_shape=(1000,),
        description="ResNet50 v1.5, NHWC input (as the Keras model), batch norm folded into "
                    "conv bias, logits output (no softmax).",
    ),
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
