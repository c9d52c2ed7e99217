"""The zoo's tabular fraud-scoring model: gradient-boosted trees on seeded synthetic transactions.

Runs in the ``zoo`` environment (envs/zoo: scikit-learn + skl2onnx), as
``python -m serving.models.zoo_trees --out DIR --seed S``; :mod:`serving.models.zoo` calls it and
imports the result like any model file of a user's.

- **Data.** ``ROWS`` transactions with ``FEATURES`` (amount, hour, merchant category, distance from
  home, ...), drawn from a seeded generator; a transaction is fraud with a probability that rises
  with a nonlinear mix of them (large amounts at night far from home, bursts of transactions, new
  merchants online), about 5 % of rows.
- **Model.** scikit-learn's ``GradientBoostingClassifier`` (100 trees of depth 3), trained on 80 %
  of the rows; the holdout AUC goes into the build facts.
- **Export.** skl2onnx's converter, ``zipmap=False`` so both outputs are tensors: ``label`` int64
  ``[b]`` and ``probabilities`` float32 ``[b, 2]``, from one input ``features`` float32 ``[b, 12]``.
- **Framework check.** ``<name>.check.npz`` holds holdout rows and scikit-learn's own answers
  (``predict``, ``predict_proba``); the import compares ONNX Runtime on the file against them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serving.models.zoo import builder_main

NAME = "fraud-gbt"
FEATURES = ("amount", "hour", "weekday", "merchant_category", "distance_km", "minutes_since_last",
            "txns_24h", "card_present", "foreign", "amount_vs_avg", "new_merchant", "online")
ROWS = 20_000
CHECK_ROWS = 512


def transactions(seed: int, rows: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Seeded synthetic transactions ``[rows, 12]`` float32 and their fraud labels ``[rows]``."""
    rng = np.random.default_rng([seed, 0x7EE5])
    amount = rng.lognormal(3.5, 1.2, rows)
    hour = rng.integers(0, 24, rows)
    weekday = rng.integers(0, 7, rows)
    category = rng.integers(0, 20, rows)
    distance = rng.exponential(15.0, rows)
    since_last = rng.exponential(600.0, rows)
    txns_24h = rng.poisson(3.0, rows)
    present = rng.random(rows) < 0.6
    foreign = rng.random(rows) < 0.08
    vs_avg = amount / rng.lognormal(3.5, 0.5, rows)
    new_merchant = rng.random(rows) < 0.15
    online = ~present & (rng.random(rows) < 0.9)
    night = (hour < 6) | (hour >= 23)
    score = (-5.2 + 1.1 * np.log1p(vs_avg) + 0.9 * night + 0.012 * np.minimum(distance, 200)
             + 0.35 * np.minimum(txns_24h, 10) * (since_last < 120) + 0.8 * (new_merchant & online)
             + 1.2 * foreign * ~present + 0.3 * (category >= 17))
    fraud = rng.random(rows) < 1.0 / (1.0 + np.exp(-score))
    x = np.column_stack([amount, hour, weekday, category, distance, since_last, txns_24h, present,
                         foreign, vs_avg, new_merchant, online]).astype(np.float32)
    return x, fraud.astype(np.int64)


def build(out_dir: Path, seed: int) -> Path:
    import sklearn
    import skl2onnx
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from skl2onnx import to_onnx

    x, y = transactions(seed)
    cut = int(len(x) * 0.8)
    clf = GradientBoostingClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, random_state=seed)
    clf.fit(x[:cut], y[:cut])
    auc = float(roc_auc_score(y[cut:], clf.predict_proba(x[cut:])[:, 1]))
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3},
                  final_types=None)
    for inp in onx.graph.input:          # the converter names it "X"; ours is "features"
        if inp.name == "X":
            inp.name = "features"
    for node in onx.graph.node:
        node.input[:] = ["features" if i == "X" else i for i in node.input]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{NAME}.onnx"
    path.write_bytes(onx.SerializeToString())
    held = x[cut:cut + CHECK_ROWS]
    np.savez(out_dir / f"{NAME}.check.npz", **{"in.features": held, "out.label": clf.predict(held).astype(np.int64),
                                               "out.probabilities": clf.predict_proba(held).astype(np.float32)})
    facts = {"framework": f"scikit-learn {sklearn.__version__} GradientBoostingClassifier(n_estimators=100, "
                          f"max_depth=3)", "converter": f"skl2onnx {skl2onnx.__version__} (zipmap=False)",
             "training": {"rows": cut, "holdout_rows": len(x) - cut, "fraud_rate": float(y.mean()),
                          "holdout_auc": round(auc, 4), "seed": seed, "features": list(FEATURES)}}
    (out_dir / f"{NAME}.facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    return path


if __name__ == "__main__":
    builder_main(build, __doc__)
