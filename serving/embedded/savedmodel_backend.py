"""``savedmodel``: the model's TensorFlow SavedModel, run by TensorFlow inside the worker.

Needs the ``tensorflow`` environment (``envs/tensorflow``: TensorFlow 2.21; a worker using this
backend runs there) and the exported model: ``python -m serving.models.export_tf --model NAME``
(:mod:`serving.models.export_tf`; same ``.npz`` weights as the ONNX file, so predictions match
the ``onnxruntime`` backend and :func:`serving.models.reference_forward` within 1e-4).

Options:

``runtime`` (default ``session``)
    ``session``: the SavedModel's ``serve`` MetaGraph in a ``tf.compat.v1.Session`` of its own,
    called through ``Session.make_callable`` -- what TF Serving itself does (SavedModelBundle +
    ``Session::Run``) and the fastest Python path (FFNN batch 1: ~0.14 ms vs ~1.1 ms for
    ``eager``, idle 2-core machine, same process). ``eager``: ``tf.saved_model.load`` and a call
    of the signature's concrete function with an eager tensor (the TF2 way).
``intra_op_threads`` (default 1), ``inter_op_threads`` (default 1)
    0 = TensorFlow's default (one per core). ``session``: the session's ``ConfigProto``, with
    ``use_per_session_threads`` so each instance has an inter-op pool of its own; TensorFlow's
    CPU device keeps **one intra-op pool per process**, sized by the first session, so a later
    scorer asking for another ``intra_op_threads`` is rejected. ``eager``: both pools are
    process-wide (``tf.config.threading``) and fixed once TensorFlow's runtime starts; a later
    scorer asking for other values is rejected. Either way the rejection is a
    :class:`ScorerConfigError` naming the values.
``device`` (default ``cpu``)
    ``cpu`` (GPUs hidden from the session / ops pinned to ``/CPU:0``) or ``cuda`` (``/GPU:0``,
    memory growth on). ``cuda`` needs a CUDA-enabled TensorFlow (the ``tensorflow`` wheel is;
    ``tensorflow-cpu`` is not), the NVIDIA libraries (``tensorflow[and-cuda]``) and a visible GPU;
    without one the scorer is rejected with a :class:`ScorerConfigError` saying which is missing.
``signature`` (default ``serving_default``)
    The signature to call; its one input key is read from the signature (export default
    ``input_1``), its output must be ``output``. A user's SavedModel (``model: {path: folder}``,
    serving.models.files) is called with every key of its signature, inputs and outputs by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.embedded.base import Option, Scorer, ScorerConfigError, non_negative
from serving.models.export_tf import OUTPUT_KEY, load_signature, quiet_tensorflow

_PROCESS_THREADS: dict[str, int] = {}   # intra-op pool size fixed by the first session of the process


class SavedModelScorer(Scorer):
    """One SavedModel per scorer, loaded once; see the module docstring for the options."""

    name = "savedmodel"
    environment = "tensorflow"
    exporter = "serving.models.export_tf"
    OPTIONS = {
        "runtime": Option(str, "session", "TF1 session (as TF Serving) or TF2 eager signature call",
                          choices=("session", "eager")),
        "intra_op_threads": Option(int, 1, "TF intra-op threads (0 = TF default)", non_negative),
        "inter_op_threads": Option(int, 1, "TF inter-op threads (0 = TF default)", non_negative),
        "device": Option(str, "cpu", "execution device", choices=("cpu", "cuda")),
        "signature": Option(str, "serving_default", "SavedModel signature to call"),
    }

    @classmethod
    def options_from(cls, *, threads: int = 1, inter_threads: int = 1, device: str = "cpu",
                     delay_ms: float | None = None) -> dict[str, Any]:
        return {"intra_op_threads": threads, "inter_op_threads": inter_threads, "device": device}

    def __init__(self, model, artifacts=None, **options: Any):
        super().__init__(model, artifacts, **options)
        path = self.artifacts.model_dir / "savedmodel"
        if not (path / "saved_model.pb").is_file():
            raise ScorerConfigError(
                f"backend 'savedmodel': no SavedModel at {path}; run `python -m serving.models.export_tf "
                f"--model {model.name} --dir {self.artifacts.model_dir.parent}` in the tensorflow "
                f"environment")
        quiet_tensorflow()
        try:
            import tensorflow as tf  # the tensorflow environment only: every environment lists this backend
        except ImportError as exc:
            raise ScorerConfigError(f"backend 'savedmodel' needs TensorFlow (the 'tensorflow' "
                                    f"environment: `crayfish env build tensorflow`): {exc}") from None
        self._tf_version = tf.__version__
        self._path = path
        self._output_key = OUTPUT_KEY
        self._session = None
        self._loaded = None
        cuda = self.options["device"] == "cuda"
        if cuda and not tf.config.list_physical_devices("GPU"):
            raise ScorerConfigError(
                "backend 'savedmodel': device 'cuda' asked for, but TensorFlow sees no GPU "
                f"(TensorFlow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}); "
                "use device='cpu', or a CUDA-enabled TensorFlow with the NVIDIA libraries on a "
                "machine with an NVIDIA GPU")
        self._device = "/GPU:0" if cuda else "/CPU:0"
        # A user's SavedModel (serving.models.files): every key of its signature, in the spec's order.
        self._file = self.artifacts.is_file_model()
        if self._file and self.options["runtime"] != "session":
            raise ScorerConfigError("backend 'savedmodel': a model file runs with runtime 'session'")
        if self.options["runtime"] == "session":
            self._load_session(tf, path, cuda)
        else:
            self._load_eager(tf, path)

    # -- runtimes ------------------------------------------------------------------------------
    def _check_threads(self, kind: str, n: int, have: int | None) -> None:
        if have is not None and have != n:
            raise ScorerConfigError(
                f"backend 'savedmodel': {kind}_op_threads={n}, but TensorFlow in this process "
                f"already runs with {have} (runtime {self.options['runtime']!r}: that pool is "
                f"process-wide and fixed once TensorFlow starts; give every savedmodel scorer of "
                f"a process the same value)")

    def _load_session(self, tf, path, cuda: bool) -> None:
        intra, inter = self.options["intra_op_threads"], self.options["inter_op_threads"]
        self._check_threads("intra", intra, _PROCESS_THREADS.get("intra"))
        v1 = tf.compat.v1
        config = v1.ConfigProto(intra_op_parallelism_threads=intra,
                                inter_op_parallelism_threads=inter,
                                use_per_session_threads=True,
                                device_count={"GPU": 1 if cuda else 0},
                                allow_soft_placement=False)
        if cuda:
            config.gpu_options.allow_growth = True
        graph = tf.Graph()
        session = v1.Session(graph=graph, config=config)
        try:
            with graph.as_default(), tf.device(self._device):
                meta = _quiet_v1_loader(tf)(session, [tf.saved_model.SERVING], str(path))
            sig_name = self.options["signature"]
            if sig_name not in meta.signature_def:
                raise ScorerConfigError(f"backend 'savedmodel': {path}: no signature {sig_name!r}; "
                                        f"has {sorted(meta.signature_def)}")
            sig = meta.signature_def[sig_name]
            if self._file:
                self._bind_file(sig, graph, session)
                _PROCESS_THREADS.setdefault("intra", intra)
                self._session = session
                return
            if len(sig.inputs) != 1 or self._output_key not in sig.outputs:
                raise ScorerConfigError(
                    f"backend 'savedmodel': {path} signature {sig_name!r} has inputs "
                    f"{sorted(sig.inputs)} / outputs {sorted(sig.outputs)}, expected one input and "
                    f"{self._output_key!r}")
            self._input_key = next(iter(sig.inputs))
            fetch = graph.get_tensor_by_name(sig.outputs[self._output_key].name)
            feed = graph.get_tensor_by_name(sig.inputs[self._input_key].name)
            self._call = session.make_callable(fetch, feed_list=[feed])
        except BaseException:
            session.close()
            raise
        _PROCESS_THREADS.setdefault("intra", intra)
        self._session = session

    def _load_eager(self, tf, path) -> None:
        threading = tf.config.threading
        for kind, setter, getter in (
                ("intra", threading.set_intra_op_parallelism_threads, threading.get_intra_op_parallelism_threads),
                ("inter", threading.set_inter_op_parallelism_threads, threading.get_inter_op_parallelism_threads)):
            n = self.options[f"{kind}_op_threads"]
            try:
                setter(n)
            except RuntimeError:
                self._check_threads(kind, n, getter())
        with tf.device(self._device):
            try:
                self._loaded, fn, self._input_key, outputs = load_signature(path, self.options["signature"])
            except (KeyError, ValueError) as exc:
                raise ScorerConfigError(f"backend 'savedmodel': {exc}") from None
        if self._output_key not in outputs:
            raise ScorerConfigError(f"backend 'savedmodel': {path} signature "
                                    f"{self.options['signature']!r} has outputs {outputs}, expected "
                                    f"{self._output_key!r}")
        constant, device, key, out_key, dev = tf.constant, tf.device, self._input_key, self._output_key, self._device

        def call(x: np.ndarray) -> np.ndarray:
            with device(dev):
                return fn(**{key: constant(x)})[out_key].numpy()

        self._call = call

    def _bind_file(self, sig, graph, session) -> None:
        ins, outs = [t.name for t in self.model.inputs], [t.name for t in self.model.outputs]
        if sorted(sig.inputs) != sorted(ins) or not set(outs) <= set(sig.outputs):
            raise ScorerConfigError(f"backend 'savedmodel': {self._path} has inputs {sorted(sig.inputs)} / outputs "
                                    f"{sorted(sig.outputs)}, expected {sorted(ins)} / {outs}")
        feeds = [graph.get_tensor_by_name(sig.inputs[k].name) for k in ins]
        fetches = [graph.get_tensor_by_name(sig.outputs[k].name) for k in outs]
        call = session.make_callable(fetches, feed_list=feeds)

        def score(x):
            ys = call(*([x[k] for k in ins] if isinstance(x, dict) else [x]))
            return dict(zip(outs, ys)) if self.model.multi_output else ys[0]

        self._call = score

    # -- scoring -------------------------------------------------------------------------------
    def _score(self, x: np.ndarray) -> np.ndarray:
        return self._call(x)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(tensorflow_version=self._tf_version, savedmodel=str(self._path),
                 input_key=getattr(self, "_input_key", None), tf_device=self._device)
        return d

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._loaded = None
        self._call = None
        super().close()


def _quiet_v1_loader(tf):
    """``tf.compat.v1.saved_model.loader.load`` without its deprecation warning in every log."""
    # tensorflow: only in the tensorflow environment
    from tensorflow.python.saved_model import loader_impl

    return getattr(loader_impl.load, "__wrapped__", None) or tf.compat.v1.saved_model.loader.load


SCORERS = (SavedModelScorer,)
