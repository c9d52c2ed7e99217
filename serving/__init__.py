"""Everything that runs the models.

- ``serving.models``: the model zoo -- seeded FFNN and ResNet50, canonical ``.npz`` weights, ONNX
  export, numpy reference forward passes (``python -m serving.models build``).
- ``serving.embedded``: in-process scorers for the SPS workers (``onnxruntime``, ``torchscript``,
  ``savedmodel``, ``noop``, ``sleep``) behind one registry, ``create_scorer(backend, model)``;
  each backend declares its options, environment and exporter (checklist: adding a backend).
- ``serving.core``: the transport-agnostic scoring core (instance pools, queues, deadlines,
  dynamic batching) every protocol adapter of ours sits on.
- ``serving.server``: what a server package declares (``ServerSpec``) and what every launcher
  returns (``RunningServer``); ``serving.external``: the registry of servers, one line per
  package (checklist: adding a server); ``serving.clients``: the client base class and
  ``create_client(kind, ...)``.
- One folder per external server, each holding its server, launcher and client: ``scoring``
  (ours, ``crayfish.v1.Scoring``), ``tfserving``, ``triton``, ``torchserve``, ``rayserve``.
"""
