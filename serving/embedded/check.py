"""Does a backend predict what the model is? Its scores against the numpy reference forward pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serving.embedded.registry import create_scorer
from serving.models.build import model_paths, reference_forward
from serving.models.spec import get_spec

TOLERANCE = 1e-4


def check(backend: str, model: str, models_dir: Path | str | None = None, batches: tuple[int, ...] = (1,),
          seed: int = 0, **scorer_options: Any) -> dict[str, float]:
    """Score random inputs of each batch size with ``backend`` (``scorer_options``: its options)
    and compare with :func:`serving.models.reference_forward`; returns ``{"batch=<b>": max abs
    error}`` and raises ``AssertionError`` past :data:`TOLERANCE` (or on a wrong shape / dtype)."""
    spec = get_spec(model)
    weights = model_paths(model, models_dir).weights
    rng = np.random.default_rng(seed)
    xs = {b: rng.random((b, *spec.input_shape), dtype=np.float32) for b in batches}
    errors: dict[str, float] = {}
    with create_scorer(backend, model, models_dir, **scorer_options) as scorer:
        for b, x in xs.items():
            y = scorer.score(x)
            ref = reference_forward(model, weights, x)
            if y.shape != ref.shape or y.dtype != np.float32:
                raise AssertionError(f"{model} batch {b}: got {y.dtype} {list(y.shape)}, "
                                     f"expected float32 {list(ref.shape)}")
            err = float(np.max(np.abs(y - ref)))
            errors[f"batch={b}"] = err
            if not err <= TOLERANCE:
                raise AssertionError(f"{model} batch {b}: max abs error {err:.3g} > {TOLERANCE}")
    return errors
