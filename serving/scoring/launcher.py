"""Start our Scoring server (``python -m serving.scoring``) as its own process and wait until it
serves: the runner uses this for ``serving: {kind: external, server: scoring}``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from crayfish.host.procs import Service, wait_file
from serving.scoring import SERVER_NAME
from serving.server import RunningServer


def start(model: str = "ffnn", instances: int = 1, models_dir: Path | None = None, log_dir: Path = Path("."),
          backend: str = "onnxruntime", backend_options: dict | None = None, batching: dict | None = None,
          python: str | None = None, protocols: list[str] | None = None, timeout_s: float = 120.0,
          extra_models: list[dict] | None = None, env: dict | None = None, **settings) -> RunningServer:
    """``extra_models``: more ScoringSettings model entries (e.g. a slow twin for deadline tests).
    ``env``: extra environment of the server process (e.g. OTEL_* / span-file settings).
    Extra keyword arguments are ScoringSettings fields (max_queue, tls, ...)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    ready = log_dir / f"scoring-{time.time_ns()}.port"
    config = {"models": [model, *(extra_models or [])], "instances": instances, "backend": backend,
              "backend_options": backend_options or {}, "batching": batching,
              "models_dir": str(models_dir) if models_dir else None, "ready_file": str(ready),
              "protocols": protocols or [], **settings}
    if backend == "sleep":
        config.setdefault("warmup", False)
    cfg_path = log_dir / "scoring.json"
    cfg_path.write_text(json.dumps(config, indent=2))
    log_path = log_dir / "scoring.log"
    svc = Service("scoring", ["-m", "serving.scoring", "--config", f"@{cfg_path}"], log_path,
                  python=python, env=env)
    try:
        wait_file(ready, [svc], timeout_s, what="Scoring server")
    except BaseException:
        svc.stop()
        raise
    port = int(ready.read_text().strip())
    return RunningServer(server=SERVER_NAME, targets={"scoring": f"127.0.0.1:{port}"}, service=svc,
                         models=[model, *(m if isinstance(m, str) else m["name"] for m in extra_models or [])], log_path=log_path,
                         info={"config": str(cfg_path)})
