"""Everything that runs the models.

- ``serving.models``: the model zoo -- seeded FFNN and ResNet50, canonical ``.npz`` weights, ONNX
  export, numpy reference forward passes (``python -m serving.models build``).
- ``serving.embedded``: in-process scorers for the SPS workers (``onnxruntime``, ``noop``,
  ``sleep``) behind one registry, ``create_scorer(backend, model)``.
"""
