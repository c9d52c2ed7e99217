"""The transport-agnostic scoring core: model pools, bounded queues, deadlines, dynamic batching.

Every network protocol the mesh serves is a *thin adapter* over one :class:`ScoringCore` (the
MLServer layout): the adapter decodes its wire format into a numpy array, calls
:meth:`ScoringCore.score` (or :meth:`ScoringCore.describe`), encodes the result, and turns any
:class:`serving.errors.ServingError` into its protocol's status with
:func:`serving.errors.grpc_status` -- the one error mapping of the serving layer. Queueing,
back-pressure, deadlines, batching, timing and the choice of instance all live here, so they
behave the same whichever protocol a request came through.

Using the core directly (no gRPC needed; this module never imports it)::

    from serving.core import CoreSettings, ScoringCore

    core = ScoringCore(CoreSettings(models=["ffnn"], instances=2))   # loads + warms up
    r = core.score("ffnn", x)               # x: float32 [b, 1, 784]; blocks; thread-safe
    r.output, r.inference_ns, r.queue_ns, r.backend, r.instance
    core.describe("ffnn")                   # {"model", "backend", "inputs", "outputs", ...}
    core.stats()                            # per-model counters (requests, backend_calls, ...)
    core.close()

Adding a protocol adapter (TF Serving ``PredictionService``, KServe v2 ``GRPCInferenceService``,
HTTP/JSON, ...)
------------------------------------------------------------------------------------------------
1. Write a servicer / handler that holds the core and, per request:

   - decodes the input to a numpy array (a decoding failure is a :class:`BadInputError`);
   - computes an absolute deadline on the ``time.monotonic()`` clock from whatever the protocol
     carries (gRPC: ``time.monotonic() + context.time_remaining()``; HTTP: a timeout header),
     or ``None``;
   - calls ``core.score(model, x, deadline)`` -- thread-safe, blocking; it validates the model
     name and the input, so adapters don't;
   - encodes ``ScoreResult.output`` (and the timings if the protocol has room for them);
   - on ``except Exception as exc``: ``code, message = grpc_status(exc)`` and reports that
     (gRPC: ``context.abort(code, message)``; HTTP: translate the gRPC code to an HTTP status
     in one table next to the HTTP adapter -- still starting from ``grpc_status``).

2. For a gRPC protocol, register it on the same server as ``crayfish.v1.Scoring`` with a hook
   ``add_protocol(server, core)`` passed to :func:`serving.scoring.server.build_server`
   (``protocols=[...]``) or named in ``ScoringSettings.protocols``; see that module's docstring.
   The adapter never touches scorers, pools or threads of its own. Its settings extend
   :class:`CoreSettings` with the transport's own fields (as
   :class:`serving.scoring.settings.ScoringSettings` does).

Modules: :mod:`~serving.core.settings` (:class:`CoreSettings`), :mod:`~serving.core.pools`
(:class:`ScoreResult`, the pool without batching), :mod:`~serving.core.batching` (the pool with
dynamic batching), :mod:`~serving.core.scoring_core` (:class:`ScoringCore`: loading, lifecycle,
validation, stats). The core imports no transport: it never imports grpc or a server's settings.

Semantics
---------
- *Models*: ``settings.models`` names models of :data:`serving.models.MODELS`; an entry may
  also be a :class:`serving.core.settings.ModelEntry` to serve a model under another name
  and/or on another backend (e.g. ``{"name": "ffnn-hung", "model": "ffnn", "backend": "sleep",
  "backend_options": {"delay_ms": 10000}}`` next to the real ``ffnn``). Requests name the
  served name.
- *Instances* (``settings.instances``, the paper's mp): each served model has that many scorer
  objects (:func:`serving.embedded.create_scorer`, each its own backend session with the
  configured threads), created in parallel and warmed up (one zero row) by :meth:`load`;
  :attr:`ready` turns true only when all of them are loaded.
- *Without batching*: a request takes a free instance, or waits for one in FIFO order. At most
  ``max_queue`` requests of a model wait; one more is rejected at once with
  :class:`OverloadedError`. A request whose deadline passes while it waits (or before its turn
  comes) gets :class:`DeadlineExceededError` and never reaches the backend. ``queue_ns`` is the
  wait for an instance, ``inference_ns`` the backend call.
- *With batching* (``settings.batching``): requests go to a per-model queue (bounded by
  ``max_queue``). One batcher thread per instance; one batch forms at a time: the batcher takes
  the oldest request, adds queued requests while the rows stay within ``max_batch_size`` and
  ``max_queue_delay_us`` has not passed since the first one *arrived*, concatenates them on
  axis 0, scores once, and gives every caller exactly its own rows of the output. Requests
  whose deadline already passed are dropped from the batch (DeadlineExceededError). A request
  larger than ``max_batch_size`` is scored alone. ``queue_ns`` = arrival -> batch start;
  ``inference_ns`` = the whole batch's backend call (shared by its requests).
- Errors a caller can get: :class:`ModelNotFoundError`, :class:`BadInputError` (not an
  ndarray, not float32, shape not ``[b>=1, *spec.input_shape]``), :class:`OverloadedError`,
  :class:`DeadlineExceededError`, :class:`UnavailableError` (not loaded yet / closed),
  :class:`BackendError` (the backend raised; logged here with its traceback).
"""

from serving.core.pools import ScoreResult
from serving.core.scoring_core import ScoringCore
from serving.core.settings import (
    BatchingSettings,
    CoreSettings,
    ModelEntry,
    ServedModel,
)

__all__ = ["ScoringCore", "ScoreResult", "CoreSettings", "BatchingSettings", "ModelEntry", "ServedModel"]
