"""Clients for external serving: how a stream-processing worker calls a model server.

Every client speaks one server protocol and offers the same small interface
(:class:`serving.clients.base.ExternalClient`), so every engine can use every server:

    client = create_client("scoring", target="127.0.0.1:50051", model="ffnn", timeout_s=2.0)
    result = client.score(x)                # blocking: ClientResult(output, server_inference_ns, ...)
    future = client.score_async(x)          # pipelined: a concurrent.futures.Future[ClientResult]
    client.close()

Errors are :mod:`serving.errors` exceptions (BadInputError, ModelNotFoundError, OverloadedError,
DeadlineExceededError, BackendError, UnavailableError), whatever the protocol.

Adding a client
---------------
Subclass :class:`ExternalClient` (set ``kind`` and ``server``), implement ``score`` (and
``score_async`` when the protocol has native async calls; the default runs ``score`` on a small
thread pool), decorate it with :func:`register_client`, and add ``kind: module`` to ``BUILTIN_CLIENTS`` in
base.py so that ``create_client(kind, ...)`` imports it on demand. Heavy imports (tritonclient,
tensorflow_serving) go inside ``__init__``, so environments without them can still list it.
"""

from serving.clients.base import CLIENTS, ClientResult, ExternalClient, create_client, register_client

__all__ = ["CLIENTS", "ClientResult", "ExternalClient", "create_client", "register_client"]
