"""The zoo's small transformer text classifier: a BERT-like encoder, seeded weights, exported to ONNX.

Runs in the ``torch`` environment (envs/torch), as
``python -m serving.models.zoo_transformer --out DIR --seed S``; :mod:`serving.models.zoo` calls it
and imports the result like any model file of a user's.

- **Model.** Token + position embeddings, ``LAYERS`` post-norm encoder layers (multi-head
  self-attention with the padding mask, GELU feed-forward, LayerNorm), the first token's state
  through a linear head to ``CLASSES`` logits. ``VOCAB`` tokens, width ``WIDTH``, ``HEADS`` heads;
  about 0.2 M parameters. Weights from ``torch.manual_seed(seed)`` (no training, no download).
- **Export.** ``torch.onnx.export`` (opset 17) with inputs ``input_ids`` and ``attention_mask``,
  both int64 ``[batch, sequence]`` with both axes free: the sequence length is a setting of the
  experiment (``model: {zoo: text-encoder, seq_len: N}``, up to ``MAX_LEN``); output ``logits``
  float32 ``[batch, 2]``.
- **Framework check.** ``<name>.check.npz`` holds token batches (with padding) and PyTorch's own
  logits; the import compares ONNX Runtime on the file against them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serving.models.zoo import builder_main

NAME = "text-encoder"
VOCAB, WIDTH, HEADS, LAYERS, FFN, MAX_LEN, CLASSES = 1000, 64, 4, 2, 128, 512, 2


def _module(seed: int):
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
            self.proj = nn.Linear(WIDTH, WIDTH)
            self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            self.ffn = nn.Sequential(nn.Linear(WIDTH, FFN), nn.GELU(), nn.Linear(FFN, WIDTH))

        def forward(self, h, bias):
            b, s, _ = h.shape
            q, k, v = self.qkv(h).view(b, s, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
            att = torch.softmax(q @ k.transpose(-1, -2) / (WIDTH // HEADS) ** 0.5 + bias, dim=-1)
            h = self.norm1(h + self.proj((att @ v).transpose(1, 2).reshape(b, s, WIDTH)))
            return self.norm2(h + self.ffn(h))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens, self.positions = nn.Embedding(VOCAB, WIDTH), nn.Embedding(MAX_LEN, WIDTH)
            self.norm = nn.LayerNorm(WIDTH)
            self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
            self.head = nn.Linear(WIDTH, CLASSES)

        def forward(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            h = self.norm(self.tokens(input_ids) + self.positions(pos))
            # padding (mask 0) gets a large negative score: no attention to it
            bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -1e4
            for layer in self.layers:
                h = layer(h, bias)
            return self.head(h[:, 0])

    torch.manual_seed(seed)
    return Encoder().eval()


def token_batches(seed: int, rows: int = 64, seq_len: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Seeded token ids and masks: each row a random length, padded with id 0 and mask 0."""
    rng = np.random.default_rng([seed, 0x7E47])
    ids = rng.integers(1, VOCAB, (rows, seq_len), dtype=np.int64)
    lengths = rng.integers(4, seq_len + 1, rows)
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


def build(out_dir: Path, seed: int) -> Path:
    import torch

    model = _module(seed)
    ids, mask = token_batches(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
        logits = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.savez(out_dir / f"{NAME}.check.npz", **{"in.input_ids": ids, "in.attention_mask": mask, "out.logits": logits})
    params = sum(p.numel() for p in model.parameters())
    facts = {"framework": f"PyTorch {torch.__version__}, torch.onnx.export (opset 17)",
             "architecture": {"vocab": VOCAB, "width": WIDTH, "heads": HEADS, "layers": LAYERS, "ffn": FFN,
                              "max_len": MAX_LEN, "classes": CLASSES, "parameters": params},
             "weights": f"torch.manual_seed({seed}), untrained"}
    (out_dir / f"{NAME}.facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    return path


if __name__ == "__main__":
    builder_main(build, __doc__)
