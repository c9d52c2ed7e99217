"""SavedModel folders "trained elsewhere", written by the tensorflow environment:
``.envs/tensorflow/bin/python -m tests.support.savedmodel_files OUT_DIR [--two]``
(``make_savedmodel`` runs it from the core environment).

One input: ``x`` float32 [b, 6] -> dense(3) -> relu -> ``y`` [b, 3]. ``--two``: ``features``
float32 [b, 6] and ``mask`` int64 [b, 6] -> ``scores`` float32 [b, 3], ``label`` int64 [b].
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def make_savedmodel(path: Path, two: bool = False) -> Path:
    from crayfish.host.envs import python_for

    subprocess.run([python_for("tensorflow"), "-m", "tests.support.savedmodel_files", str(path),
                    *(["--two"] if two else [])], check=True)
    return Path(path)


def _write(path: str, two: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(9)
    w = tf.constant(rng.normal(0, 0.5, (6, 3)).astype(np.float32))
    b = tf.constant(rng.normal(0, 0.1, (3,)).astype(np.float32))

    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="features"),
                                      tf.TensorSpec([None, 6], tf.int64, name="mask")])
        def serve(self, features, mask):
            scores = tf.matmul(features * tf.cast(mask, tf.float32), w) + b
            return {"scores": scores, "label": tf.argmax(scores, axis=1, output_type=tf.int64)}

    class One(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.nn.relu(tf.matmul(x, w) + b)}

    m = Two() if two else One()
    tf.saved_model.save(m, path, signatures=m.serve.get_concrete_function())


if __name__ == "__main__":
    _write(sys.argv[1], "--two" in sys.argv[2:])
