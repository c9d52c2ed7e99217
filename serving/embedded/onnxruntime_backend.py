"""``onnxruntime``: the model's ONNX export in an ONNX Runtime session (the paper's embedded ONNX)."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.embedded.base import Option, Scorer, ScorerConfigError, non_negative

_OPT_LEVELS = ("disable", "basic", "extended", "all")


class OnnxRuntimeScorer(Scorer):
    """One ``InferenceSession`` per scorer, created once; sequential execution mode.

    Defaults follow the paper: 1 intra-op and 1 inter-op thread (0 = let ORT pick, i.e. one per
    core). ``device="cuda"`` uses ONNX Runtime's CUDA execution provider, which only the
    ``onnxruntime-gpu`` build has (PyPI's ``onnxruntime`` is CPU-only): without it the scorer
    refuses to start with a clear error rather than silently running on the CPU.

    Hot path: input/output names and the ``RunOptions`` are bound at construction and ``score``
    calls the session's C++ ``run`` directly (skipping the Python wrapper's per-call input-name
    validation, which :meth:`Scorer.score` has already done in stricter form); the only per-call
    allocations are the one-entry feed dict and ORT's output array.
    """

    name = "onnxruntime"
    OPTIONS = {
        "intra_op_threads": Option(int, 1, "ORT intra-op threads (0 = ORT default)", non_negative),
        "inter_op_threads": Option(int, 1, "ORT inter-op threads (0 = ORT default)", non_negative),
        "device": Option(str, "cpu", "execution device: cpu, or cuda (needs onnxruntime-gpu and a GPU)"),
        "graph_optimization": Option(str, "all", "ORT graph optimization level", choices=_OPT_LEVELS),
    }

    @classmethod
    def options_from(cls, *, threads: int = 1, inter_threads: int = 1, device: str = "cpu",
                     delay_ms: float | None = None) -> dict[str, Any]:
        return {"intra_op_threads": threads, "inter_op_threads": inter_threads, "device": device}

    def __init__(self, model, artifacts=None, **options: Any):
        super().__init__(model, artifacts, **options)
        device = self.options["device"].lower()
        if device not in ("cpu", "cuda"):
            raise ScorerConfigError(f"backend 'onnxruntime': device {self.options['device']!r}; use cpu or cuda")
        import onnxruntime as ort  # imported here so the registry imports without ORT installed

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ScorerConfigError(
                    "backend 'onnxruntime': device 'cuda' needs ONNX Runtime's CUDA execution provider "
                    f"(the onnxruntime-gpu package and an NVIDIA GPU); this onnxruntime {ort.__version__} "
                    f"has {ort.get_available_providers()}")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]

        path = self.artifacts.onnx
        if not path.is_file():
            raise ScorerConfigError(f"backend 'onnxruntime': no ONNX file at {path}; run "
                                    f"`python -m serving.models build --model {model.name}`")
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.options["intra_op_threads"]
        so.inter_op_num_threads = self.options["inter_op_threads"]
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.options["graph_optimization"]]
        so.log_severity_level = 3
        self._ort_version = ort.__version__
        self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        if device == "cuda" and self._session.get_providers()[0] != "CUDAExecutionProvider":
            raise ScorerConfigError("backend 'onnxruntime': the CUDA provider did not load (no usable GPU?)")
        inputs = sorted(i.name for i in self._session.get_inputs())
        outputs = {o.name for o in self._session.get_outputs()}
        want_in, want_out = sorted(t.name for t in model.inputs), [t.name for t in model.outputs]
        if inputs != want_in or not set(want_out) <= outputs:
            raise ScorerConfigError(
                f"backend 'onnxruntime': {path} has inputs {inputs} / outputs {sorted(outputs)}, "
                f"expected {want_in} / {want_out}")
        self._input_name = model.input_name
        self._output_names = want_out
        self._run_options = ort.RunOptions()
        # The C++ session's run(output_names, feed, run_options); fall back to the public wrapper.
        c_sess = getattr(self._session, "_sess", None)
        self._run = c_sess.run if c_sess is not None and hasattr(c_sess, "run") else self._session.run
        if model.named:
            self._score = self._score_named

    def _score(self, x: np.ndarray) -> np.ndarray:
        return self._run(self._output_names, {self._input_name: x}, self._run_options)[0]

    def _score_named(self, x):
        """Several inputs (a ``{name: array}`` dict) and/or several outputs (a dict back)."""
        feed = x if isinstance(x, dict) else {self._input_name: x}
        ys = self._run(self._output_names, feed, self._run_options)
        return dict(zip(self._output_names, ys)) if self.model.multi_output else ys[0]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(onnxruntime_version=self._ort_version, onnx=str(self.artifacts.onnx),
                 providers=self._session.get_providers() if self._session is not None else [])
        return d

    def close(self) -> None:
        self._session = None
        self._run = None
        super().close()


SCORERS = (OnnxRuntimeScorer,)
