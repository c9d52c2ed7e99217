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

Backends shipped (:data:`BACKENDS`):

``onnxruntime``
    The model's ONNX export (``serving.models``) in one ONNX Runtime session; options
    ``intra_op_threads=1``, ``inter_op_threads=1`` (the paper's setting), ``device="cpu"``
    (anything else is rejected for now), ``graph_optimization="all"``.
``noop``
    Returns zeros of the output shape without touching a model: the floor of the measurement
    (pipeline, codec and Kafka cost only). Needs no built model.
``sleep``
    ``delay_ms`` (required, >= 0) per call, then zeros: a known cost that must come out of the
    measurement unchanged (50 ms in -> 50 ms latency). Needs no built model.

Adding a backend
----------------
1. Subclass :class:`Scorer` in a module of this package (or anywhere importable)::

       from serving.embedded.base import Option, Scorer, ScorerConfigError, non_negative
       from serving.embedded.registry import register_backend

       @register_backend
       class TorchScriptScorer(Scorer):
           name = "torchscript"                 # the backend name in configs / CLI
           needs_artifacts = True               # False if it never reads model files
           OPTIONS = {                          # every option it accepts, nothing else
               "threads": Option(int, 1, "torch.set_num_threads", non_negative),
               "device": Option(str, "cpu", choices=("cpu", "cuda")),
           }

           def __init__(self, model, artifacts=None, **options):
               super().__init__(model, artifacts, **options)   # validates + fills self.options
               import torch                                    # heavy imports inside, not at top
               ...                                             # load once, from artifacts.model_dir
               # (exporters put their files next to artifacts.weights / artifacts.onnx)

           def _score(self, x):                  # x already checked: float32 [b, *input_shape]
               return self._module(torch.from_numpy(x)).numpy()

           def close(self):
               self._module = None
               super().close()

2. Make it reachable from :func:`create_scorer`: import the module in ``registry.py`` next to the
   shipped backends (keep the heavy library import *inside* ``__init__`` so that registering
   costs nothing for workers that never use the backend, and an environment without the
   library can still list it). Registering a second class under a taken name raises.

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
  weights -- add the backend to ``tests/test_scorers.py``'s parametrisation (skipped when its
  library is missing) to check it.
"""

from serving.embedded.base import Option, Scorer, ScorerConfigError, ScoringError
from serving.embedded.onnxruntime_backend import OnnxRuntimeScorer
from serving.embedded.registry import BACKENDS, create_scorer, register_backend
from serving.embedded.simple import NoopScorer, SleepScorer

__all__ = [
    "BACKENDS", "Option", "Scorer", "ScorerConfigError", "ScoringError", "OnnxRuntimeScorer",
    "NoopScorer", "SleepScorer", "create_scorer", "register_backend",
]
