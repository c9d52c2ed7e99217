"""TF Serving as an external serving path: the ``tensorflow.serving.PredictionService`` protocol.

The Crayfish paper calls TensorFlow Serving over gRPC (``PredictionService.Predict``, input key
``input_1``). This package makes that path real in two ways; every result says which server
answered (``ClientResult.server``, the run record):

``crayfish-scoring (tf-serving protocol)`` -- here, and in CI
    TF Serving's server (``tensorflow_model_server``) is published only as a Docker image and a
    Google apt repository, neither reachable here. So our own Scoring server
    (:mod:`serving.scoring.server`) also speaks TF Serving's protocol: the servicer in
    :mod:`serving.tfserving.servicer` is a protocol hook on the same gRPC server and port as
    ``crayfish.v1.Scoring``, over the same :class:`serving.core.ScoringCore` (instances,
    queueing, deadlines, batching, errors all identical to the Scoring protocol). By default the
    model runs on the ``savedmodel`` backend -- TensorFlow executing the exported SavedModel in a
    session, as TF Serving does.
``tf-serving`` -- a real TensorFlow Serving (e.g. a Docker compose stack)
    The same client (kind ``tf-serving``) talks to it unchanged; mount
    ``<models_dir>/<name>/savedmodel`` as ``/models/<name>/1``.

The client (:mod:`serving.tfserving.client`) tells them apart by gRPC trailing metadata:
our servicer sets ``crayfish-server: crayfish-scoring (tf-serving protocol)`` (plus
``crayfish-inference-ns``, ``crayfish-queue-ns``, ``crayfish-backend``) on every Predict answer;
real TF Serving sets none, so the client reports ``tf-serving`` and server timings 0.

What is served (TF Serving semantics)
-------------------------------------
- ``PredictionService.Predict``: ``model_spec.name`` = the model (``ffnn``, ``resnet50``, or an
  extra model name, below); ``model_spec.version`` absent or 1 (the only version; another
  version or any ``version_label`` is NOT_FOUND); ``signature_name`` empty or
  ``serving_default`` (anything else INVALID_ARGUMENT); exactly the model's inputs, keyed by
  their names (``input_1`` for the zoo's models), each a TensorProto ``[b, *item]`` of the
  input's DataType (``DT_FLOAT`` for float32; a model with several inputs -- named tensors,
  serving.models.spec -- e.g. ``features`` DT_FLOAT + ``mask`` DT_INT64) with raw
  ``tensor_content`` (the typed value lists accepted too); ``output_filter`` empty or outputs of
  the model. The answer: every output (or those of ``output_filter``) by name, e.g.
  ``outputs["output"]`` DT_FLOAT ``[b, *output_shape]``, each in its own DataType in
  ``tensor_content``, ``model_spec`` echoed with ``version = 1`` and the signature name.
- ``PredictionService.GetModelMetadata`` with ``metadata_field: ["signature_def"]``: a
  ``SignatureDefMap`` (packed in ``Any``) with ``serving_default``: method
  ``tensorflow/serving/predict``, inputs/outputs as TensorInfo (dtype, shape with -1 batch).
- ``ModelService.GetModelStatus``: version 1, ``AVAILABLE`` once the core is loaded
  (``LOADING`` before) -- TF Serving's own readiness probe; ``grpc.health.v1`` also reports
  ``tensorflow.serving.PredictionService`` / ``ModelService`` (NOT_SERVING until loaded).
- Classify / Regress / MultiInference: UNIMPLEMENTED.
- Errors come from :func:`serving.errors.grpc_status` (the one mapping): unknown model / version
  NOT_FOUND, bad dtype / shape / key INVALID_ARGUMENT, deadline passed while queued
  DEADLINE_EXCEEDED, queue full RESOURCE_EXHAUSTED, backend failure INTERNAL.

Running it
----------
:func:`serving.tfserving.launcher.start` (what the runner and the tests use) starts
``python -m serving.tfserving --config @FILE`` in the ``tensorflow`` environment
(``python_for("tensorflow")``; the stubs need it), exports the SavedModel first when it is
missing or stale, waits for the ready file and for gRPC health, and returns a
:class:`serving.server.RunningServer` (``targets={"tf-serving": host:port}``). Knobs (``start``
keywords):

``model`` (``ffnn``; a model file imported into ``models_dir`` too, on a backend other than
``savedmodel``: the protocol layer serves named tensors, but experiments keep the TF Serving
path to the built-in models), ``instances`` (1; the paper's mp: scorer instances, i.e. TF
sessions), ``models_dir``, ``log_dir``;
``backend`` (``savedmodel``; ``onnxruntime`` works too) and ``backend_options`` (savedmodel:
``runtime`` session|eager, ``intra_op_threads``/``inter_op_threads`` 1/1, ``device`` cpu|cuda,
``signature``; see :mod:`serving.embedded.savedmodel_backend`);
``extra_models``: more served names, each its own core: ``{"ffnn-hung": {"model": "ffnn",
"backend": "sleep", "options": {"delay_ms": 5000}}}`` (keys ``model``, ``backend``,
``options``, ``instances`` (1), ``warmup``, ``max_queue``) -- the conformance suite's hung model;
``batching`` (``{"max_batch_size", "max_queue_delay_us"}``, like TF Serving's
``--enable_batching``), ``export`` (True: export a missing/stale SavedModel before starting),
``timeout_s`` (readiness, 300), and any other :class:`serving.scoring.settings.ScoringSettings`
field (``max_queue``, ``max_workers``, ``tls``, ``port``, ...).

The config file is ``{"scoring": {ScoringSettings...}, "extra_models": {...}}``. To add the
protocol to a plain Scoring server instead (no extra models): ``ScoringSettings(protocols=
["serving.tfserving:add_tfserving"])`` -- in the ``tensorflow`` environment.

Modules: :mod:`~serving.tfserving.servicer` (the protocol over the core),
:mod:`~serving.tfserving.wire` (stubs + TensorProto codec, shared with the client),
:mod:`~serving.tfserving.launcher`, ``__main__`` (the server entry),
:mod:`~serving.tfserving.client` (client kind ``tf-serving``),
:mod:`~serving.tfserving.remote_client` (drive the ``tf-serving`` client, which needs the
``tensorflow`` environment, from another environment: how the core-env tests use it).
Importing this package imports neither grpc nor the stubs (the launcher runs in the core env).
"""

from __future__ import annotations

from typing import Any

from serving.scoring import SERVER_NAME as SCORING_SERVER_NAME
from serving.server import ServerSpec

# what our server's answers carry (real TF Serving names nobody: its answers read "tf-serving")
SERVER_NAME = f"{SCORING_SERVER_NAME} (tf-serving protocol)"

# the client needs the TF Serving stubs: a worker using it runs in the tensorflow environment
SERVERS = (ServerSpec("tf-serving", client="tf-serving", worker_env="tensorflow"),)


def add_tfserving(server: Any, core: Any, extra_models: Any = None) -> list[str]:
    """Protocol hook (``"serving.tfserving:add_tfserving"``); see
    :func:`serving.tfserving.servicer.add_tfserving`."""
    from serving.tfserving.servicer import add_tfserving as hook  # grpc + the TF Serving stubs: the tensorflow env

    return hook(server, core, extra_models)


__all__ = ["SERVER_NAME", "SERVERS", "add_tfserving"]
