"""TorchScript model files "trained elsewhere", written by the torch environment:
``.envs/torch/bin/python -m tests.support.torchscript_files OUT.pt [--two]`` (``make_torchscript``
runs it from the core environment).

One input: ``x`` float32 [b, 6] -> Linear(6, 3) -> ReLU -> [b, 3]. ``--two``: ``features`` float32
[b, 6] and ``mask`` int64 [b, 6] -> (scores float32 [b, 3], label int64 [b]).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def make_torchscript(path: Path, two: bool = False) -> Path:
    from crayfish.host.envs import python_for

    subprocess.run([python_for("torch"), "-m", "tests.support.torchscript_files", str(path),
                    *(["--two"] if two else [])], check=True)
    return Path(path)


def _write(path: str, two: bool) -> None:
    import torch

    class One(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(6, 3)

        def forward(self, x):
            return torch.relu(self.dense(x))

    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(6, 3)

        def forward(self, features, mask):
            scores = self.dense(features * mask.to(features.dtype))
            return scores, torch.argmax(scores, dim=1)

    torch.manual_seed(5)
    torch.jit.script(Two() if two else One()).save(path)


if __name__ == "__main__":
    _write(sys.argv[1], "--two" in sys.argv[2:])
