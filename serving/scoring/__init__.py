"""The external scoring server: ``crayfish.v1.Scoring`` over gRPC, a thin layer on
:class:`serving.core.ScoringCore`.

Run it::

    python -m serving.scoring --config '{"models": ["ffnn"], "instances": 2, "port": 50051}'
    python -m serving.scoring --config @scoring.json      # or .yaml / .yml

or in code::

    from serving.scoring import ScoringSettings, build_server
    server, core, port = build_server(ScoringSettings(instances=2))
    server.start()
    ...
    server.stop(grace=1).wait(); core.close()

Settings: :class:`ScoringSettings` (:mod:`serving.scoring.settings`); server, health,
reflection, stream semantics and protocol hooks: :mod:`serving.scoring.server`; the launcher the
runner uses (``serving.server: scoring``): :mod:`serving.scoring.launcher`; the client (kind
``scoring``): :mod:`serving.scoring.client`. Importing this package does not import ``grpc``
(only the server and the client do), so the registry, the core and the settings stay usable
without it.
"""

from __future__ import annotations

from typing import Any

from serving.scoring.settings import BatchingSettings, ScoringSettings, TLSSettings
from serving.server import ServerSpec

SERVER_NAME = "crayfish-scoring"   # the name every answer of this server carries

SERVERS = (ServerSpec("scoring", client="scoring", runs_backend=True),)

_SERVER_NAMES = ("ScoringServicer", "build_server", "serve", "ProtocolHook", "SCORING_SERVICE")


def __getattr__(name: str) -> Any:
    if name in _SERVER_NAMES:
        # lazy: keeps `import serving.scoring` free of grpc (and the server imports this package)
        from serving.scoring import server

        return getattr(server, name)
    raise AttributeError(f"module 'serving.scoring' has no attribute {name!r}")


__all__ = ["ScoringSettings", "BatchingSettings", "TLSSettings", "SERVER_NAME", "SERVERS", *_SERVER_NAMES]
