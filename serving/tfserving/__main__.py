"""``python -m serving.tfserving --config JSON|@file``: the Scoring server with TF Serving's
``PredictionService`` / ``ModelService`` on the same port, until SIGTERM/SIGINT.

Run it in the ``tensorflow`` environment. The config is ``{"scoring": {ScoringSettings
fields}, "extra_models": {served name: {"model", "backend", "options", "instances", "warmup",
"max_queue"}}}`` (both optional; see :mod:`serving.tfserving`). Exit status: 0 after a signal,
2 for a bad config, 1 if the server fails.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from pydantic import ValidationError

from serving.embedded import ScorerConfigError
from serving.models.export_tf import quiet_tensorflow
from serving.scoring.__main__ import load_config
from serving.scoring.server import serve
from serving.scoring.settings import ScoringSettings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.tfserving", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="JSON object {scoring, extra_models}, or @file (.json/.yaml)")
    ap.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    quiet_tensorflow()
    try:
        cfg = load_config(args.config)
        unknown = sorted(set(cfg) - {"scoring", "extra_models"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; the config has 'scoring' and 'extra_models'")
        settings = ScoringSettings.model_validate(cfg.get("scoring") or {})
        extra = cfg.get("extra_models") or {}
        if not isinstance(extra, dict):
            raise ValueError("extra_models must be an object")
    except (OSError, ValueError, ValidationError) as exc:
        print(f"serving.tfserving: bad config: {exc}", file=sys.stderr)
        return 2
    # after quiet_tensorflow(): the servicer loads the TF Serving stubs, i.e. TensorFlow
    from serving.tfserving.servicer import add_tfserving

    try:
        serve(settings, protocols=[functools.partial(add_tfserving, extra_models=extra)])
    except (ScorerConfigError, ValueError) as exc:
        print(f"serving.tfserving: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
