"""Ray Serve as an external serving path: the paper's Ray Serve setup, over HTTP (as the paper)
and over Ray Serve's gRPC proxy speaking our ``crayfish.v1.Scoring`` contract.

Quick start
-----------
::

    .venv/bin/crayfish env build ray          # once: .envs/ray (ray[serve] 2.60, ORT, ...)

    from serving.rayserve import launcher
    from serving.clients import create_client

    srv = launcher.start("ffnn", instances=2)            # the paper's mp = 2 replicas
    c = create_client("ray-serve", srv.targets["ray-serve"], "ffnn")          # HTTP
    g = create_client("ray-serve-grpc", srv.targets["ray-serve-grpc"], "ffnn")  # gRPC
    c.score(x).output; g.score_stream([x1, x2, ...])
    srv.stop()

In an experiment: ``serving.kind: external``, ``serving.backend: ray-serve`` (or
``ray-serve-grpc``).

What runs
---------
:func:`launcher.start` starts ``python -m serving.rayserve.app --config <json>`` with the ``ray``
environment's interpreter (``crayfish.host.envs.python_for("ray")``), as its own
process (own session, log file under ``log_dir``). That *driver* (:mod:`serving.rayserve.app`):

1. ``ray.init(address="local", num_cpus=..., include_dashboard=False, _temp_dir=.cache/ray, ...)``
   -- always a fresh single-node Ray instance (never joins another: ``RAY_ADDRESS`` is cleared),
   which starts gcs_server, raylet, the log monitor, a minimal dashboard head (no UI), the
   dashboard/runtime-env agents and worker processes as children of the driver.
2. ``serve.start`` with the HTTP proxy on ``127.0.0.1:<http_port>`` and the gRPC proxy on
   ``127.0.0.1:<grpc_port>`` with ``grpc_servicer_functions =
   ["crayfish.v1.scoring_pb2_grpc.add_ScoringServicer_to_server"]``.
3. One Serve *application per served model*, named after the model, route prefix
   ``/models/<name>``, whose single (ingress) deployment :class:`app.ModelServer` has
   ``num_replicas = instances``. Each replica is a Ray actor holding one scorer
   (``serving.embedded.create_scorer``: by default ONNX Runtime, 1 intra-op / 1 inter-op thread,
   as the paper), warmed up at start, that scores **one request at a time** on its own scoring
   thread (the replica's asyncio loop stays free to receive requests and answer health /
   metadata meanwhile). So ``instances`` has the paper's meaning: that many model instances
   scoring in parallel; Serve's proxy spreads requests over them (power-of-two-choices on queue
   length). A request whose caller gave up (deadline, disconnect) before its turn is cancelled by
   Serve and never scored.
4. Writes a ready file (ports, versions, start-up times), then waits for SIGTERM/SIGINT:
   ``serve.shutdown()`` and ``ray.shutdown()``.

The launcher returns once the ready file exists **and** every served model answers its HTTP
health route and a gRPC ``DescribeModel`` through the proxies (real readiness, no fixed sleeps).
It returns a :class:`serving.server.RunningServer` (``targets``: one per client kind, the
``protocol`` option's first); its ``stop()`` sends SIGTERM to the driver, waits
``stop_timeout_s``, then SIGKILLs whatever is left of its process tree and session: nothing
survives it.

HTTP protocol (client kind ``ray-serve``)
-----------------------------------------
Per served model ``<m>`` (wire details in :mod:`serving.rayserve.wire`):

``POST /models/<m>/score``
    Request body: the input batch as raw little-endian float32 in C order,
    ``Content-Type: application/octet-stream``, its shape in ``X-Crayfish-Shape: 1,1,784``
    (optional ``X-Crayfish-Dtype: float32``). Answer ``200``: the output as raw float32, with
    ``X-Crayfish-Shape``, ``X-Crayfish-Dtype``, ``X-Crayfish-Inference-Ns`` (backend time in the
    replica), ``X-Crayfish-Queue-Ns`` (wait for the replica's scorer) and ``X-Crayfish-Server``
    (``ray-serve 2.60.0``). The original Crayfish posted a text list of numbers and parsed a
    text list back: the raw body is smaller (4 bytes per value instead of ~10-20 characters)
    and costs no formatting or parsing on either side. A dtype other than float32 is named in
    ``X-Crayfish-Dtype`` (both ways).

    Named tensors (several inputs or outputs; serving.models.spec): the body is every tensor's
    raw bytes one after the other and ``X-Crayfish-Tensors`` (JSON ``[[name, dtype, shape],
    ...]``, in body order) replaces ``X-Crayfish-Shape``. The replica checks the inputs against
    the model's (``check_feeds``); the answer is named (same layout) when the request was, or
    when the model has several outputs -- named in, named out, as on the Scoring server.
``GET /models/<m>/metadata``
    JSON: ``{"model", "backend", "server", "inputs": [{"name", "dtype", "shape"}], "outputs":
    [...], "scorer": {...}}`` with ``-1`` for the batch axis.
``GET /models/<m>/health``
    ``200 {"status": "ok", ...}`` once the replica holds its model (answered by a replica, not
    by the proxy).

Errors: the replica maps every failure with :func:`serving.errors.grpc_status` (the serving
layer's one error mapping) and turns the status into HTTP with the one table
``wire.HTTP_FOR_STATUS``; the answer is ``text/plain`` with the message and
``X-Crayfish-Error: <status name>``. Bad shape / dtype / body size -> ``400``
(``BadInputError`` at the client); an unknown model has no route, so Ray's proxy answers
``404`` (``ModelNotFoundError``); backend failure -> ``500``. The client (stdlib
``http.client``, one keep-alive connection per calling thread) goes back through the same table
and :func:`serving.errors.error_from_status`; a socket timeout -> ``DeadlineExceededError``.

gRPC protocol (client kind ``ray-serve-grpc``)
----------------------------------------------
Ray Serve's gRPC proxy hosts our ``crayfish.v1.Scoring`` service; the deployment implements
``Score``, ``DescribeModel`` and the bidi ``ScoreStream`` (Ray Serve 2.60 proxies client- and
bidi-streaming: the method gets the request stream as an async iterator and yields answers).
Named tensors travel in ``ScoreRequest.inputs`` / ``ScoreResponse.outputs`` (named in, named
out; a model with several outputs always answers in ``outputs``).
Ray routes on the call's ``application`` metadata, which the client
(:class:`serving.rayserve.client.RayServeGrpcClient`, a subclass of the Scoring client) adds to
every call; an unknown application is Ray's ``NOT_FOUND`` (``ModelNotFoundError``). Errors are
``grpc_status(exc)`` set on the call's context (one mapping, :mod:`serving.errors`).
``ScoreStream`` scores a stream's requests in order on one replica (a stream is pinned to the
replica it was routed to, so it does not spread over ``instances``); the first failure ends the
stream with ``request_id=<id>:`` leading the message, as on the crayfish-scoring server.
Ray's proxy does not implement ``grpc.health.v1``: health is ``DescribeModel`` on the model's
application.

Knobs
-----
``launcher.start(model="ffnn", instances=1, models_dir=None, log_dir=.cache/rayserve/logs,
extra_models=None, **options)``:

``model`` / ``instances``
    The served model (a name in ``serving.models.MODELS``, built beforehand) and its replica
    count, the paper's mp.
``models_dir``
    Where the model artifacts are (default ``$CRAYFISH_MODELS_DIR`` or ``.cache/models``).
``extra_models``
    More applications: ``{served_name: {"model": base model (default: served_name), "backend",
    "options", "instances" (default 1), "replica_cpus", "max_ongoing_requests", "warmup"}}``.
    :data:`launcher.HUNG_MODELS` is ``ffnn-hung``: the ``sleep`` backend with a 5 s delay, the
    conformance suite's hung model.
``backend`` (``"onnxruntime"``) / ``backend_options``
    Embedded backend of every replica and its options (default for onnxruntime:
    ``intra_op_threads=1, inter_op_threads=1``); see :mod:`serving.embedded`.
``protocol`` (``"http"``)
    Which endpoint ``RunningServer.target`` / ``.kind`` name; both are always served and both
    are in ``RunningServer.targets``.
``max_ongoing_requests`` (5, Ray's default)
    Requests one replica accepts at once (they queue on its scoring thread); more wait in the
    proxy.
``replica_cpus`` (1.0) / ``num_cpus`` (max(cpu count, total replica CPUs))
    Ray logical CPUs each replica reserves / Ray's logical CPU total. Logical only: the real
    threads are the backend's (1 ORT thread per replica by default).
``object_store_mb`` (256)
    Ray's shared-memory object store (large request bodies pass through it between proxy and
    replica).
``http_port`` / ``grpc_port`` (0 = a free port), ``request_timeout_s`` (None: Ray proxies'
end-to-end timeout), ``keep_alive_timeout_s`` (60: idle HTTP keep-alive of the proxy)
``access_log`` (False), ``serve_log_level`` (``"WARNING"``)
    Ray Serve's per-request access log costs every call time in the proxy and the replica: off
    unless asked for.
``temp_dir`` (``.cache/ray``)
    Ray's session directory (logs of every Ray process under ``session_*/logs``). Kept short:
    Ray's unix socket paths live there and must stay under ~107 bytes.
``ready_timeout_s`` (180), ``stop_timeout_s`` (30)

Keeping Ray local and quiet
---------------------------
- Every listener is on loopback: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray keep
  127.0.0.1 as the node address (on Linux it otherwise swaps loopback for the host's routable
  IP, and its agents listen there), and a worker-process setup hook
  (:func:`app._bind_loopback`) rewrites the ``[::]`` that Serve 2.60 hard-codes for the gRPC
  proxy and the replicas' internal gRPC servers to 127.0.0.1.
- Ray 2.60 turns token authentication on for a new local cluster and would write a token to
  ``~/.ray/auth_token``; the launcher instead puts a fresh random token in the driver's
  environment (``RAY_AUTH_TOKEN``; inherited by Ray's processes, never written or logged).
- ``RAY_USAGE_STATS_ENABLED=0``: no usage reporting. No dashboard UI.

Costs (2-core machine): start-up ~11-20 s when the machine is quiet (``ray.init`` ~5 s, Serve +
applications ~6-15 s), up to ~45 s under load; about 1.4 GB RSS in all with one replica
(12 processes), ~0.19 GB per further replica; stop 3-6 s. Sequential unary FFNN batch-1 calls
from one Python client: ~120/s over HTTP, ~150-190/s over gRPC (the Ray proxy hop dominates;
the ORT call itself is ~0.1 ms).
"""

from serving.server import ServerSpec

SERVERS = (ServerSpec("ray-serve", client="ray-serve"),            # HTTP, as the paper
           ServerSpec("ray-serve-grpc", client="ray-serve-grpc"))  # our Scoring contract via Serve's gRPC proxy
