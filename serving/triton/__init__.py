"""Triton Inference Server as an external serving path (KServe v2 protocol over gRPC).

What runs
---------
::

    core env (runner / worker / test)            triton env (.envs/triton)
    ---------------------------------            ----------------------------------------------
    launcher.start("ffnn", instances=2) -------> python -m serving.triton.server --config C.json
      writes C.json, waits for the ready file      PyTriton 0.7.0 (nvidia-pytriton) starts the
      and for ServerReady + ModelReady +           tritonserver 2.51 binary its wheel bundles,
      ModelMetadata of every model over gRPC       binds one Python callable per model instance
                                                   (each its own ONNX Runtime session) and serves
    serving.triton.client.TritonClient   <======>  gRPC (KServe v2 GRPCInferenceService) on
      (tritonclient.grpc, kind "triton")           127.0.0.1:<free port>

Process tree (one session, started by :class:`crayfish.host.procs.Service`):
``server.py`` -> ``tritonserver`` -> one ``triton_python_backend_stub`` per model instance (each
forwards its requests to its callable in ``server.py`` over ZeroMQ/shared memory: PyTriton's
proxy) plus PyTriton's small helper processes. The launcher returns a
:class:`serving.server.RunningServer` (``targets={"triton": host:port}``, ``info``: the ready file,
``workdir``). ``RunningServer.stop()`` sends SIGTERM to
``server.py`` (PyTriton then stops Triton, unloads the models, removes its workspace and shared
memory), waits ``stop_timeout_s``, then SIGKILLs whatever is left of the session and removes the
work directory and any ``/dev/shm/pytrtion<pid>-*`` region: no orphan process, file or segment.

Models
------
A served model binds every input and output of its spec (:func:`serving.models.resolve_spec`:
the zoo's, or an imported model file's manifest) by name, each with its own datatype and shape
``[-1, *item]`` -- the FFNN: ``input_1`` FP32 ``[-1, 1, 784]`` -> ``output`` FP32 ``[-1, 10]``;
a model file of two inputs: ``features`` FP32 + ``mask`` INT64 -> ``scores`` FP32 + ``label``
INT64 (the batch dimension is Triton's, so ``max_batch_size`` > 0). A tensor of no item axis
(``[b]``) is bound as dims ``[1]`` with ``reshape: {shape: []}`` (Triton wants non-empty dims;
PyTriton has no reshape field, so ``server.py`` adds it to the config PyTriton generates): the
model sees ``[b]``, the wire carries ``[b, 1]``, the client hands back ``[b]``. A model of one
FP32 input and one FP32 output runs the single-tensor callable; any other the named one
(several inputs as a ``{name: array}`` dict to the scorer, several outputs back by name). Each instance's callable (``server.py``) runs one embedded
scorer (:func:`serving.embedded.create_scorer`: the very code the workers run), on one of the
backends whose library the ``triton`` environment has:

``onnxruntime`` (default)
    The model's ONNX export (``serving.models``; built by the launcher when missing) in one ONNX
    Runtime session per instance, sequential execution, ``intra_op_threads`` /
    ``inter_op_threads`` (default 1 / 1, the paper's setting), ``graph_optimization`` ("all"),
    warmed up with one zero row.
``sleep``
    ``delay_ms`` of sleep, then zeros: a known cost, and the conformance suite's hung model.
``noop``
    Zeros at once: the floor of the server path (gRPC + Triton + PyTriton proxy).

``instances`` (the paper's mp) is Triton's ``instance_group [{count: instances, kind: KIND_CPU}]``:
PyTriton binds that many callables, so up to ``instances`` requests of the model run at once,
each on its own ORT session; more wait in Triton's scheduler queue (FIFO).
``RunningServer.stats()`` says what the callables saw (``server.py`` rewrites ``stats.json`` in
the work dir every 0.5 s): per model ``executions``, ``rows``, ``max_batch_rows`` (rows of the
largest execution: requests Triton's dynamic batcher concatenated) and
``peak_concurrent_executions`` (instances that really ran at once).

Knobs of :func:`serving.triton.launcher.start`
----------------------------------------------
``model`` / ``instances`` / ``models_dir`` / ``log_dir``
    The main model (served under its own name), its instance count, where the zoo's files are
    (default ``.cache/models``), where the config, ready file and server log go (default
    ``.cache/triton/logs``; the log is ``triton-<stamp>.log``, Triton's own lines included).
``extra_models``
    ``{served name: {"model", "backend", "options", "instances", "max_batch_size", "batching"}}``
    more models on the same server, e.g. :data:`serving.triton.launcher.HUNG_MODELS`
    (``ffnn-hung``: the FFNN contract, 5 s sleep; what the tests' deadline check calls).
``backend`` / ``backend_options``
    The main model's backend (above) and its options (default for onnxruntime:
    ``{"intra_op_threads": 1, "inter_op_threads": 1}``).
``max_batch_size`` (1024)
    Triton's ``max_batch_size``: the largest batch one request may carry (larger is rejected with
    INVALID_ARGUMENT -> BadInputError).
``batching`` (None)
    None: no dynamic batching -- every request runs alone on a free instance (Triton's default
    scheduler). ``{"max_batch_size": n, "max_queue_delay_us": us, "preferred_batch_size": [..]}``:
    Triton's dynamic batcher merges queued requests up to n rows (then n is also the request
    limit), waiting at most ``us`` for more; the callable concatenates and splits (PyTriton's
    ``@batch``).
``grpc_port`` (0 = a free port), ``http`` (False) / ``http_port``, ``metrics`` (False) /
``metrics_port``
    Every listener binds 127.0.0.1. Triton's HTTP/REST and Prometheus endpoints can bind loopback
    (``--http-address`` / ``--metrics-address``) but are off by default: the client speaks gRPC,
    and fewer ports mean fewer port races. SageMaker / Vertex AI endpoints are always off.
    PyTriton protects the shared-memory, model-repository, statistics, trace and logging
    endpoints with a random per-launch token; health, metadata and inference are open.
``log_verbose`` (0), ``exit_timeout_s`` (5: Triton's wait for in-flight requests at exit),
``ready_timeout_s`` (180), ``stop_timeout_s`` (30), ``python`` (interpreter; default: the
``triton`` environment, built on first use by :func:`crayfish.host.envs.python_for`)

The ``triton`` environment
--------------------------
``envs/triton/requirements.txt``: nvidia-pytriton (bundles tritonserver, its Python backend stub
for 3.8-3.12, and pins numpy<2), tritonclient (PyTriton's own management calls), onnxruntime.
``server.py`` imports only :mod:`serving.embedded` of the repository (which needs neither onnx
nor pydantic nor our gRPC stubs), so none of those is needed there. Two details the server takes care of: the backend stub links libpython
dynamically, so ``server.py`` puts its own interpreter's ``LIBDIR`` first on
``LD_LIBRARY_PATH`` (otherwise Debian's libpython is picked and the stub dies with
``'_thread.RLock' object has no attribute '_recursion_count'``); and Triton's ``--id`` is
``pytriton-<version>`` so that clients can report ``triton 2.51.0 (pytriton 0.7.0)``.
The PyPI ``tritonserver`` package is a placeholder (it does not build); PyTriton's wheel is the
way to a Triton binary without containers.
"""

from serving.server import ServerSpec

SERVERS = (ServerSpec("triton", client="triton"),)
