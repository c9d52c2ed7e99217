"""``python -m serving.scoring --config JSON|@file``: run the scoring server until SIGTERM/SIGINT.

``--config`` is a JSON object of :class:`serving.scoring.settings.ScoringSettings` fields, or
``@path`` to a JSON or YAML (``.yaml`` / ``.yml``) file of them; omitted: all defaults (FFNN on
ONNX Runtime, one instance, 127.0.0.1, a free port). Set ``ready_file`` to learn the port: it is
written once the models are loaded and health says SERVING. Exit status: 0 after a signal,
2 for a bad config, 1 if the server fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serving.embedded import ScorerConfigError
from serving.scoring.server import serve
from serving.scoring.settings import ScoringSettings


def load_config(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        raw = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(raw) or {}
        else:
            data = json.loads(raw)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"the config must be an object of settings, got {type(data).__name__}")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serving.scoring", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="JSON object of ScoringSettings, or @file (.json/.yaml)")
    ap.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        settings = ScoringSettings.model_validate(load_config(args.config))
    except (OSError, ValueError, ValidationError) as exc:
        print(f"serving.scoring: bad config: {exc}", file=sys.stderr)
        return 2
    try:
        serve(settings)
    except ScorerConfigError as exc:
        print(f"serving.scoring: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
