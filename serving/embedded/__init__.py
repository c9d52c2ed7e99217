"""Embedded scorers: the model runs inside the stream-processing worker's own process.

A worker asks for a scorer once and then calls it for every batch::

    from serving.embedded import create_scorer, ScoringError

    scorer = create_scorer("onnxruntime", "ffnn", intra_op_threads=1, inter_op_threads=1)
    scorer.warmup(batch_size=1)
    try:
        y = scorer.score(x)          # x: float32 [b, *spec.input_shape] -> [b, *spec.output_shape]
    except ScoringError as exc:      # wrong shape / dtype: dead-letter the record with str(exc)
        ...
    scorer.close()                   # or: with create_scorer(...) as scorer: ...

What the runner and the experiment schema ask of a backend (:func:`backend`)::

    from serving.embedded import backend

    b = backend("torchscript")                     # the Scorer class; ScorerConfigError if unknown
    b.environment                                  # "torch": where a worker using it runs
    b.options_from(threads=1, inter_threads=1, device="cpu", delay_ms=None)   # experiment -> options
    b.export("ffnn", models_dir, seed=42)          # its model files (no-op for onnxruntime)

Backends shipped (:data:`BACKENDS`; ``torchscript`` and ``savedmodel`` are documented in their
modules):

``onnxruntime``
    The model's ONNX export (``serving.models``) in one ONNX Runtime session; options
    ``intra_op_threads=1``, ``inter_op_threads=1`` (the paper's setting), ``device="cpu"``
    (``cuda`` needs onnxruntime-gpu), ``graph_optimization="all"``.
``noop``
    Returns zeros of the output shape without touching a model: the floor of the measurement
    (pipeline, codec and Kafka cost only). Needs no built model.
``sleep``
    ``delay_ms`` (required, >= 0) per call, then zeros: a known cost that must come out of the
    measurement unchanged (50 ms in -> 50 ms latency). Needs no built model.

Adding a backend
----------------
1. Write one module (in this package, or anywhere importable) with a :class:`Scorer` subclass
   and list it in the module's ``SCORERS``::

       from serving.embedded.base import Option, Scorer, ScorerConfigError, non_negative

       class TorchScriptScorer(Scorer):
           name = "torchscript"                 # the backend name in configs / experiment files
           needs_artifacts = True               # False if it never reads model files
           environment = "torch"                # envs/<name>: where its library is ("core": ours)
           exporter = "serving.models.export_torch"   # writes its model files (None: none needed)
           OPTIONS = {                          # every option it accepts, nothing else
               "threads": Option(int, 1, "torch.set_num_threads", non_negative),
               "device": Option(str, "cpu", choices=("cpu", "cuda")),
           }

           @classmethod
           def options_from(cls, *, threads=1, inter_threads=1, device="cpu", delay_ms=None):
               return {"threads": threads, "device": device}   # experiment fields -> OPTIONS

           def __init__(self, model, artifacts=None, **options):
               super().__init__(model, artifacts, **options)   # validates + fills self.options
               import torch                                    # its library: inside, see below
               ...                                             # load once, from artifacts.model_dir
               # (exporters put their files next to artifacts.weights / artifacts.onnx)

           def _score(self, x):                  # x already checked: float32 [b, *input_shape]
               return self._module(torch.from_numpy(x)).numpy()

           def close(self):
               self._module = None
               super().close()

       SCORERS = (TorchScriptScorer,)

   Import the backend's library *inside* ``__init__`` (with a comment saying so) when it is not in
   every environment: every environment imports every backend module to list the backends.
2. Add the module's name to ``BACKEND_MODULES`` in :mod:`serving.embedded.registry`: one line.
   :func:`create_scorer`, :func:`backend` and :data:`BACKENDS` see it from then on; the runner
   and the experiment schema ask :func:`backend` for ``environment``, ``options_from`` and
   ``export``, so nothing else names the backend. Two classes under one name raise.
3. If it has an environment of its own: ``envs/<environment>/requirements.txt``; if it has an
   exporter: a module with ``python -m <exporter> --model M --dir D --seed S``.
4. Prove it: predictions equal :func:`serving.models.reference_forward` within 1e-4
   (:func:`serving.embedded.check.check`), in ``tests/unit/serving/test_scorers.py`` or its environment's
   test file. ``tests/integration/serving/test_extension_serving.py`` does steps 1-2 with a throwaway backend in a
   temporary package and scores through :func:`create_scorer` and through our Scoring server.

Contract every backend keeps:

- ``__init__(model: ModelSpec, artifacts: ModelArtifacts | None, **options)``: all expensive work
  (loading, compiling, session creation) happens here, never lazily in the first ``score`` call.
  Option names not in ``OPTIONS`` are rejected with the name in the message
  (:meth:`Scorer.resolve_options` does it, also for :func:`create_scorer` before any file is
  read); unsupported values raise :class:`ScorerConfigError` (a ``ValueError``).
- ``_score(x)`` is the hot path: no validation (``score`` did it), no logging, no per-call
  allocation beyond what the engine itself makes; return a float32 array
  ``[b, *model.output_shape]``. Raise :class:`ScoringError` only for input problems the worker
  should dead-letter; anything else is a crash and should propagate.
- ``close()`` releases resources, is idempotent and ends with ``super().close()``; scoring
  afterwards raises ``RuntimeError``.
- ``describe()`` returns JSON-able metadata (backend, model, options, engine version) for the
  run record; extend it with ``d = super().describe(); d.update(...)``.
- Predictions must match :func:`serving.models.reference_forward` within 1e-4 for the same
  weights (:func:`serving.embedded.check.check`).
"""

from serving.embedded.base import Option, Scorer, ScorerConfigError, ScoringError
from serving.embedded.onnxruntime_backend import OnnxRuntimeScorer
from serving.embedded.registry import BACKENDS, backend, check_scorer, create_scorer
from serving.embedded.simple import NoopScorer, SleepScorer

__all__ = [
    "BACKENDS", "Option", "Scorer", "ScorerConfigError", "ScoringError", "OnnxRuntimeScorer",
    "NoopScorer", "SleepScorer", "backend", "check_scorer", "create_scorer",
]
