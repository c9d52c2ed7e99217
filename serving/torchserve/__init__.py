"""TorchServe as an external model server (``serving.server: torchserve``, client kind ``torchserve``).

What runs
---------
The real TorchServe 0.12.0 (PyPI ``torchserve``; its last release, limited maintenance since):
its Java frontend (``model-server.jar``; TorchServe documents Java 17, which this machine has)
and one Python worker process per model instance, all from the ``torch`` environment
(``envs/torch``; built on first use, or ``crayfish env build torch``). It hosts the TorchScript
export of the models (:mod:`serving.models.export_torch`, the SAME seeded ``.npz`` as the ONNX
file) through our custom handler (:mod:`serving.torchserve.handler`, which runs the embedded
``torchscript`` backend), and a model file of one's own (``model: {path: ...}``, imported by
:mod:`serving.models.files`): a TorchScript file with the ``torchscript`` backend, an ONNX file
with the ``onnxruntime`` backend (ONNX Runtime is in the torch environment for this), with any
number of inputs and outputs (named tensors, each in its own dtype). Workers call it over
TorchServe's gRPC inference API (:mod:`serving.torchserve.client`).

Pieces
------
``launcher.py``
    ``start(model, instances, models_dir, log_dir, extra_models, **options) -> RunningServer``:
    builds what is missing (model ``.npz``/TorchScript, archives, client stubs), writes
    ``config.properties`` into a fresh run dir, starts the frontend as its own process (own
    session) and returns once every model has all its workers READY (asked through the gRPC
    management API: no fixed sleep). The :class:`serving.server.RunningServer`: ``target``
    (gRPC inference ``127.0.0.1:port``), ``server`` (``"torchserve 0.12.0"``), ``kind``
    (``"torchserve"``), ``info`` with ``management_target``, ``http`` (REST URLs),
    ``key_file``, ``run_dir``, ``info_path`` (the server record), ``models`` (per served name),
    ``version``; ``stop()``.
``client.py``
    The client (kind ``torchserve``) of TorchServe's gRPC inference API.
``__main__.py``
    ``python -m serving.torchserve RUN_DIR`` execs Java exactly as the ``torchserve`` script would,
    minus the script's machine-wide pid file (it refuses a second TorchServe on the machine) and
    its child-process indirection: the launched process *is* the frontend, its workers are its
    children in its process group, and ``stop()`` ends them all (SIGTERM, SIGKILL after
    ``stop_timeout_s``, then a sweep of the session).
``build.py``
    ``.mar`` archives with the real ``torch-model-archiver`` (serialized file
    ``<model>.torchscript.pt``, or the imported ``<name>.onnx`` / ``<name>.torchscript.pt`` of a
    model file, handler ``handler.py``, extra files ``crayfish.json`` and a model file's
    ``manifest.json``), cached in ``.cache/torchserve/model-store/<hash of models dir>/`` with an
    input-hash stamp.
``handler.py``
    The custom handler (function entry point ``handle``): decodes raw tensors
    (:mod:`serving.torchserve.wire`: little-endian bytes + a shape, not the text list the
    original Crayfish sent; named tensors each in its own dtype), scores them with the embedded
    backend, returns raw bytes with the model-call time and the name of the TorchServe it runs in
    (``torchserve 0.12.0``, what the client reports as the server that answered); answers
    TorchServe's customized describe with the tensor metadata.
``wire.py``
    That encoding (numpy only; shared by handler and client).
``grpc_stubs.py``
    Python stubs for TorchServe's gRPC APIs, generated at first use from the ``.proto`` files inside
    the installed ``model-server.jar`` into ``.cache/torchserve/grpc/`` (never copied into the
    repo); the client imports them from there, so it runs in the core environment too.

Security and listeners
----------------------
Every listener binds 127.0.0.1 on a free port, set in the generated ``config.properties``: REST
inference / management / metrics (``inference_address``, ``management_address``,
``metrics_address``) and gRPC inference / management (``grpc_*_address`` = 127.0.0.1,
``grpc_inference_port``, ``grpc_management_port``); the default 8080/8081/8082/7070/7071 are
never used. Token authorization, on by default since TorchServe 0.11, is KEPT ON (``auth="token"``):
TorchServe writes ``key_file.json`` (mode 600) into the run dir, the launcher records its path
(not the keys) in ``.cache/torchserve/servers/<host>_<port>.json``, and the client reads the
keys from it and sends ``authorization: Bearer <key>`` (inference key on inference calls,
management key on management calls). ``token_expiration_min`` is raised from TorchServe's 60 to
a week so that long runs keep working. ``auth="off"`` (``--disable-token-auth``) exists for
debugging; it is acceptable only because everything binds 127.0.0.1. The model-management API
(register / unregister / scale over HTTP or gRPC) stays OFF (``enable_model_api=false``, the
0.11+ default; models are loaded from ``load_models``/``models`` in the config): describe and
list still work. Config snapshots are off (``-ncs``); so is the per-minute system-metrics
collector (``disable_system_metrics``, it would add a Python process to the measurement).

Knobs (``start(..., **options)``, defaults in :data:`launcher.OPTIONS`)
-----------------------------------------------------------------------
``instances``
    Workers of the main model (TorchServe ``minWorkers`` = ``maxWorkers``): the paper's mp.
``extra_models``
    More served names, e.g. :data:`launcher.HUNG_MODELS` =
    ``{"ffnn-hung": {"model": "ffnn", "sleep_s": 5.0, "instances": 1}}`` (the deadline test's hung
    model); keys ``model``, ``sleep_s``, ``instances``, ``batch_size``, ``max_batch_delay_ms``.
Handler (per worker): ``threads`` (1; torch intra-op threads, also ``OMP_NUM_THREADS``),
    ``interop_threads`` (1), ``device`` (``cpu`` | ``cuda``), ``optimize`` (``freeze`` | ``none`` |
    ``inference``), ``warmup`` (True: score a zero batch 3x at load).
TorchServe: ``batch_size`` (1; server-side batching), ``max_batch_delay_ms`` (100),
    ``response_timeout_s`` (120; a longer call kills and restarts the worker), ``job_queue_size``
    (100 per model; full -> the client raises OverloadedError), ``netty_threads`` /
    ``netty_client_threads`` (0 = one per core), ``max_message_mb`` (256; the gRPC inbound limit,
    TorchServe's default 6.5 MB would refuse one ResNet50 batch of 32), ``system_metrics``
    (False), ``log_level`` (``warn``: TorchServe's own log4j2.xml with the frontend at WARN, no
    access/metrics logs, workers' Python logging at WARNING; ``info``; ``default``: the stock
    configuration, which logs ~12 lines per request at DEBUG/INFO and halves the request rate
    here), ``jvm_args`` (``-Xmx2g -XX:+UseG1GC -Djava.net.preferIPv4Stack=true``).
Launcher: ``auth`` (``token`` | ``off``), ``token_expiration_min`` (a week),
    ``ready_timeout_s`` (300), ``stop_timeout_s`` (10; SIGTERM -> SIGKILL: Java's shutdown
    waits for open gRPC calls, e.g. one on the hung model).

Files of one run (``log_dir``, default ``.cache/torchserve/logs``)::

    torchserve-<stamp>/config.properties   the generated configuration
    torchserve-<stamp>/launch.json         model store, JVM args, worker temp dir
    torchserve-<stamp>/key_file.json       TorchServe's tokens (auth="token"; removed by stop())
    torchserve-<stamp>/torchserve.log      the frontend's stdout/stderr (workers' output included)
    torchserve-<stamp>/logs/               TorchServe's own log files (access log, model log, ...)

Limits (TorchServe's, as of 0.12.0)
-----------------------------------
- No tensor-metadata API: ``describe`` asks the handler through the management API's customized
  describe (``DescribeModel(customized=true)``, served by a worker).
- Errors: a missing model comes back as ``INTERNAL "Model not found"`` and a full queue as
  ``INTERNAL "... has no worker to serve inference request"``; the client maps them by message.
  Inside a server-side batch TorchServe cannot fail one request with its own status, so the handler
  answers a bad request in a batch with an in-band error frame (the client raises BadInputError).
- The gRPC bidirectional ``StreamPredictions2`` is for sequence batching (stateful models);
  ``score_stream`` pipelines unary calls.

Environment
-----------
``envs/torch/requirements.txt``: torch 2.4.1 (the release TorchServe 0.12 was tested with),
torchserve 0.12.0, torch-model-archiver 0.12.0, PyYAML (the worker imports it, torchserve does not
declare it), grpcio-tools (stub generation), onnxruntime (an ONNX model file) and what our code
imports; Java 17 on the PATH (or
``JAVA_HOME``) for the frontend. PyPI's Linux x86_64 torch wheels are CUDA builds: the CUDA runtime
comes as ``nvidia-*-cu12`` wheels, ~2.7 GB to download, ~5.2 GB installed, ~3.5 min to build
(numbers in the requirements file).
"""

from serving.server import ServerSpec

SERVERS = (ServerSpec("torchserve", client="torchserve"),)
