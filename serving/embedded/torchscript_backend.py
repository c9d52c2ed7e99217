"""``torchscript``: the model's TorchScript export run in-process by libtorch (the ``torch`` env).

The file is ``<models_dir>/<name>/<name>.torchscript.pt``, written by
:mod:`serving.models.export_torch` from the same seeded ``.npz`` as the ONNX model (export it with
``.envs/torch/bin/python -m serving.models.export_torch``). Options:

``threads`` (default 1)
    ``torch.set_num_threads``: libtorch's intra-op pool (0 = leave torch's default, one per core).
``interop_threads`` (default 1)
    ``torch.set_num_interop_threads`` (0 = leave torch's default). Both pools are PROCESS-WIDE in
    torch, and the inter-op count can only be set once, before any parallel work: a second scorer
    in the same process asking for another inter-op count raises :class:`ScorerConfigError`.
``device`` (``cpu`` | ``cuda``, default ``cpu``)
    ``cuda`` moves the module to the first GPU and copies every batch there and back; it raises
    :class:`ScorerConfigError` when ``torch.cuda.is_available()`` is False.
``optimize`` (``none`` | ``freeze`` | ``inference``, default ``freeze``)
    ``freeze``: ``torch.jit.freeze`` (weights become constants, attribute lookups and dead code
    go; no numerical change). ``inference``: ``torch.jit.optimize_for_inference`` (freeze plus
    oneDNN layout conversion of convolutions on CPU). ``none``: the scripted module as saved.
``allow_tf32`` (default False)
    With ``cuda``: let cuDNN convolutions and matmuls use TF32 (``torch.backends.cudnn.allow_tf32``
    / ``torch.backends.cuda.matmul.allow_tf32``, process-wide). Off by default: TF32 keeps only 10
    mantissa bits, so ResNet50 would drift past the 1e-4 agreement with the reference (checked
    on an H200, torch 2.11+cu130: max error 7e-7 without TF32, 6.7e-4 with it; FFNN b32 1.2e-6
    vs 1.7e-3).
``path`` (default ``""``)
    Load this ``.pt`` file instead of the one next to the model's weights (TorchServe's handler
    uses it for the copy inside its model archive).

Hot path: ``torch.from_numpy`` (no copy) -> module under ``torch.inference_mode`` -> ``.numpy()``
(no copy on CPU). The module's parameters do not require grad and nothing records autograd.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from serving.embedded.base import Option, Scorer, ScorerConfigError, non_negative

_OPTIMIZE = ("none", "freeze", "inference")


class TorchScriptScorer(Scorer):
    """One ``torch.jit.load``-ed module per scorer, loaded (and optimized) once."""

    name = "torchscript"
    needs_artifacts = True
    environment = "torch"
    exporter = "serving.models.export_torch"
    OPTIONS = {
        "threads": Option(int, 1, "torch.set_num_threads (0 = torch default)", non_negative),
        "interop_threads": Option(int, 1, "torch.set_num_interop_threads (0 = torch default)",
                                  non_negative),
        "device": Option(str, "cpu", "cpu or cuda", choices=("cpu", "cuda")),
        "optimize": Option(str, "freeze", "none | freeze | inference (optimize_for_inference)",
                           choices=_OPTIMIZE),
        "allow_tf32": Option(bool, False, "cuda: TF32 convolutions / matmuls (process-wide)"),
        "path": Option(str, "", "the .pt file (default <model_dir>/<name>.torchscript.pt)"),
    }

    @classmethod
    def options_from(cls, *, threads: int = 1, inter_threads: int = 1, device: str = "cpu",
                     delay_ms: float | None = None) -> dict[str, Any]:
        return {"threads": threads, "interop_threads": inter_threads, "device": device}

    def __init__(self, model, artifacts=None, **options: Any):
        super().__init__(model, artifacts, **options)
        import torch  # imported here so the registry imports without torch installed

        self._torch = torch
        path = Path(self.options["path"]) if self.options["path"] else \
            self.artifacts.model_dir / f"{model.name}.torchscript.pt"
        if not path.is_file():
            raise ScorerConfigError(
                f"backend 'torchscript': no TorchScript file at {path}; run "
                f"`.envs/torch/bin/python -m serving.models.export_torch --model {model.name}`")
        device = self.options["device"]
        if device == "cuda" and not torch.cuda.is_available():
            raise ScorerConfigError(
                f"backend 'torchscript': device 'cuda' requested but torch.cuda.is_available() is "
                f"False (torch {torch.__version__}, built for CUDA {torch.version.cuda}; "
                f"{torch.cuda.device_count()} GPU(s) visible)")
        self._set_threads(torch)
        if device == "cuda":
            torch.backends.cudnn.allow_tf32 = self.options["allow_tf32"]
            torch.backends.cuda.matmul.allow_tf32 = self.options["allow_tf32"]
        # torch.from_numpy warns once about read-only arrays (inputs decoded from a message
        # buffer); the module never writes its input.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self._device = torch.device(device)
        module = torch.jit.load(str(path), map_location=self._device)
        module.eval()
        optimize = self.options["optimize"]
        if optimize == "freeze":
            module = torch.jit.freeze(module)
        elif optimize == "inference":
            module = torch.jit.optimize_for_inference(module)
        self._module = module
        self._path = path
        self._inference_mode = torch.inference_mode
        self._from_numpy = torch.from_numpy
        self._cuda = device == "cuda"
        if model.named or model.input_dtype != "float32" or model.outputs[0].dtype != "float32":
            self._score = self._score_named

    def _set_threads(self, torch: Any) -> None:
        threads, interop = self.options["threads"], self.options["interop_threads"]
        if threads:
            torch.set_num_threads(threads)
        if interop and torch.get_num_interop_threads() != interop:
            try:
                torch.set_num_interop_threads(interop)
            except RuntimeError as exc:
                raise ScorerConfigError(
                    f"backend 'torchscript': interop_threads={interop} cannot be set: torch's "
                    f"inter-op pool is process-wide, fixed at {torch.get_num_interop_threads()} "
                    f"once used or set ({exc})") from None

    def _score(self, x: np.ndarray) -> np.ndarray:
        with self._inference_mode():
            if self._cuda:
                y = self._module(self._from_numpy(x).to(self._device, non_blocking=True))
                return y.cpu().numpy()
            return self._module(self._from_numpy(x)).numpy()

    def _score_named(self, x):
        """A model file's signature (serving.models.framework): ``forward`` takes the inputs in the
        spec's order; a tuple or dict of outputs comes back as ``{output name: array}``."""
        feeds = [x[t.name] for t in self.model.inputs] if isinstance(x, dict) else [x]
        with self._inference_mode():
            out = self._module(*[self._from_numpy(a).to(self._device) for a in feeds])
        if isinstance(out, dict):
            out = list(out.values())
        arrays = [o.cpu().numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]
        if not self.model.multi_output:
            return arrays[0]
        return {t.name: a for t, a in zip(self.model.outputs, arrays)}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        torch = self._torch
        d.update(torch_version=torch.__version__, torchscript=str(self._path),
                 intra_op_threads=torch.get_num_threads(),
                 inter_op_threads=torch.get_num_interop_threads(),
                 cuda_device=torch.cuda.get_device_name(0) if self._cuda else None)
        return d

    def close(self) -> None:
        self._module = None
        super().close()


SCORERS = (TorchScriptScorer,)
