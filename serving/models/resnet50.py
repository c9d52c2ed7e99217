"""ResNet50 v1.5 (torchvision / Keras layout) with batch norm folded into the conv biases.

Input ``[b, 224, 224, 3]`` float32 NHWC as the paper's Keras model; the ONNX graph transposes to
NCHW first. Output ``[b, 1000]`` logits (no softmax).

Architecture: 7x7/2 conv (64) + ReLU, 3x3/2 max pool (pad 1), bottleneck stages
``[3, 4, 6, 3]`` with widths 64/128/256/512 and expansion 4 (stride on the 3x3 conv: v1.5),
projection shortcut (1x1 conv, stride s) on the first block of every stage, global average pool,
dense 2048 -> 1000.

Weight keys (conv ``.w`` OIHW, dense ``.w`` ``[in, out]``, ``.b`` ``[out]``)::

    conv1
    layer{1..4}.{i}.conv1 / conv2 / conv3     # 1x1 -> 3x3 (stride) -> 1x1 (x4)
    layer{1..4}.0.downsample                  # 1x1 stride-s projection shortcut
    fc

Seeded initialisation keeps the signal bounded through all 16 residual blocks: He-normal kernels,
the last conv of every residual branch scaled by :data:`BRANCH_SCALE` and the projection
shortcuts variance-preserving (LeCun-normal), so logits are O(1) and differ across inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from serving.models.spec import ModelSpec

if TYPE_CHECKING:
    import onnx

SPEC = ModelSpec(
    name="resnet50",
    input_shape=(224, 224, 3),
    input_dtype="float32",
    output_shape=(1000,),
    description="ResNet50 v1.5, NHWC input (as the Keras model), batch norm folded into conv bias, logits "
                "output (no softmax).",
)
LAYOUT = {"input": "NHWC"}   # the manifest's layout entry, beside the default dense / conv layouts
STAGES: tuple[tuple[int, int, int], ...] = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
EXPANSION = 4
STEM_CHANNELS = 64
NUM_CLASSES = 1000
BRANCH_SCALE = 0.2
BIAS_STD = 0.02


@dataclass(frozen=True)
class Block:
    prefix: str        # "layer2.0"
    in_ch: int
    width: int
    out_ch: int
    stride: int
    downsample: bool


def blocks() -> Iterator[Block]:
    in_ch = STEM_CHANNELS
    for s, (width, n, stride) in enumerate(STAGES, start=1):
        for i in range(n):
            st = stride if i == 0 else 1
            out_ch = width * EXPANSION
            yield Block(f"layer{s}.{i}", in_ch, width, out_ch, st, i == 0)
            in_ch = out_ch


def conv_shapes() -> dict[str, tuple[int, int, int, int]]:
    """Every conv layer name -> OIHW kernel shape (``fc`` excluded)."""
    shapes = {"conv1": (STEM_CHANNELS, 3, 7, 7)}
    for b in blocks():
        shapes[f"{b.prefix}.conv1"] = (b.width, b.in_ch, 1, 1)
        shapes[f"{b.prefix}.conv2"] = (b.width, b.width, 3, 3)
        shapes[f"{b.prefix}.conv3"] = (b.out_ch, b.width, 1, 1)
        if b.downsample:
            shapes[f"{b.prefix}.downsample"] = (b.out_ch, b.in_ch, 1, 1)
    return shapes


FEATURES = STAGES[-1][0] * EXPANSION  # 2048
PARAM_COUNT = sum(o * i * kh * kw + o for o, i, kh, kw in conv_shapes().values()) \
    + FEATURES * NUM_CLASSES + NUM_CLASSES


def init_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 0x5E50])
    out: dict[str, np.ndarray] = {}
    for name, (o, i, kh, kw) in conv_shapes().items():
        fan_in = i * kh * kw
        if name.endswith(".conv3"):
            std = BRANCH_SCALE * np.sqrt(2.0 / fan_in)
        elif name.endswith(".downsample"):
            std = np.sqrt(1.0 / fan_in)
        else:
            std = np.sqrt(2.0 / fan_in)
        out[f"{name}.w"] = (rng.standard_normal((o, i, kh, kw), dtype=np.float32) * np.float32(std))
        out[f"{name}.b"] = (rng.standard_normal(o, dtype=np.float32) * np.float32(BIAS_STD))
    out["fc.w"] = rng.standard_normal((FEATURES, NUM_CLASSES), dtype=np.float32) \
        * np.float32(np.sqrt(1.0 / FEATURES))
    out["fc.b"] = rng.standard_normal(NUM_CLASSES, dtype=np.float32) * np.float32(BIAS_STD)
    return out


# --------------------------------------------------------------------------------------- ONNX

class _GraphBuilder:
    def __init__(self, weights: Mapping[str, np.ndarray], helper: Any, numpy_helper: Any):
        self.w = weights
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def _init(self, key: str) -> str:
        self.inits.append(self.numpy_helper.from_array(np.asarray(self.w[key], np.float32), key))
        return key

    def conv(self, x: str, name: str, stride: int, relu: bool) -> str:
        o, i, kh, kw = self.w[f"{name}.w"].shape
        pad = kh // 2
        y = f"{name}.out"
        self.nodes.append(self.helper.make_node(
            "Conv", [x, self._init(f"{name}.w"), self._init(f"{name}.b")], [y], name=name,
            kernel_shape=[kh, kw], strides=[stride, stride], pads=[pad, pad, pad, pad]))
        if relu:
            self.nodes.append(self.helper.make_node("Relu", [y], [f"{name}.relu"], name=f"{name}/relu"))
            return f"{name}.relu"
        return y


def to_onnx(weights: Mapping[str, np.ndarray], opset: int, doc: str = "") -> onnx.ModelProto:
    # onnx only to export: scorers import this module in environments without onnx (triton)
    from onnx import TensorProto, helper, numpy_helper

    g = _GraphBuilder(weights, helper, numpy_helper)
    g.nodes.append(helper.make_node("Transpose", [SPEC.input_name], ["nchw"], perm=[0, 3, 1, 2],
                                    name="to_nchw"))
    x = g.conv("nchw", "conv1", 2, relu=True)
    g.nodes.append(helper.make_node("MaxPool", [x], ["maxpool"], name="maxpool", kernel_shape=[3, 3],
                                    strides=[2, 2], pads=[1, 1, 1, 1]))
    x = "maxpool"
    for b in blocks():
        h = g.conv(x, f"{b.prefix}.conv1", 1, relu=True)
        h = g.conv(h, f"{b.prefix}.conv2", b.stride, relu=True)
        h = g.conv(h, f"{b.prefix}.conv3", 1, relu=False)
        sc = g.conv(x, f"{b.prefix}.downsample", b.stride, relu=False) if b.downsample else x
        g.nodes.append(helper.make_node("Add", [h, sc], [f"{b.prefix}.add"], name=f"{b.prefix}/add"))
        g.nodes.append(helper.make_node("Relu", [f"{b.prefix}.add"], [f"{b.prefix}.out"],
                                        name=f"{b.prefix}/relu"))
        x = f"{b.prefix}.out"
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="avgpool"))
    g.nodes.append(helper.make_node("Flatten", ["gap"], ["features"], axis=1, name="flatten"))
    g.nodes.append(helper.make_node("Gemm", ["features", g._init("fc.w"), g._init("fc.b")],
                                    [SPEC.output_name], name="fc"))
    inp = helper.make_tensor_value_info(SPEC.input_name, TensorProto.FLOAT, ["batch", *SPEC.input_shape])
    outp = helper.make_tensor_value_info(SPEC.output_name, TensorProto.FLOAT, ["batch", *SPEC.output_shape])
    graph = helper.make_graph(g.nodes, "crayfish_resnet50", [inp], [outp], initializer=g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name="crayfish-mesh", doc_string=doc)


# -------------------------------------------------------------------------------------- numpy

def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int) -> np.ndarray:
    """NHWC conv with OIHW kernel, 'same'-style padding k//2 (as the ONNX graph), via im2col."""
    n, _, _, c = x.shape
    o, i, kh, kw = w.shape
    if kh == 1 and kw == 1:
        xs = x[:, ::stride, ::stride, :] if stride > 1 else x
        ho, wo = xs.shape[1], xs.shape[2]
        cols = xs.reshape(-1, c)
    else:
        p = kh // 2
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        win = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]  # n,ho,wo,c,kh,kw
        ho, wo = win.shape[1], win.shape[2]
        cols = win.reshape(n * ho * wo, c * kh * kw)
    y = cols @ w.reshape(o, -1).T
    y += b
    return y.reshape(n, ho, wo, o)


def _maxpool3x3s2(x: np.ndarray) -> np.ndarray:
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    win = sliding_window_view(xp, (3, 3), axis=(1, 2))[:, ::2, ::2]
    return win.max(axis=(-2, -1))


def forward(weights: Mapping[str, np.ndarray], x: np.ndarray, *, trace: dict | None = None) -> np.ndarray:
    """float32 numpy forward pass (NHWC throughout): ``[b, 224, 224, 3]`` -> ``[b, 1000]``.

    ``trace``, if given, receives the RMS of every stage's output (used to tune the init).
    """
    w = weights
    h = np.asarray(x, dtype=np.float32)
    h = np.maximum(_conv(h, w["conv1.w"], w["conv1.b"], 2), 0.0)
    h = _maxpool3x3s2(h)
    for b in blocks():
        p = b.prefix
        r = np.maximum(_conv(h, w[f"{p}.conv1.w"], w[f"{p}.conv1.b"], 1), 0.0)
        r = np.maximum(_conv(r, w[f"{p}.conv2.w"], w[f"{p}.conv2.b"], b.stride), 0.0)
        r = _conv(r, w[f"{p}.conv3.w"], w[f"{p}.conv3.b"], 1)
        sc = _conv(h, w[f"{p}.downsample.w"], w[f"{p}.downsample.b"], b.stride) if b.downsample else h
        h = np.maximum(r + sc, 0.0)
        if trace is not None:
            trace[p] = float(np.sqrt(np.mean(h.astype(np.float64) ** 2)))
    feats = h.mean(axis=(1, 2), dtype=np.float32)
    out = feats @ w["fc.w"] + w["fc.b"]
    return out.astype(np.float32, copy=False)
