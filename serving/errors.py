"""Errors of the serving layer, and the one place they become protocol status codes.

The transport-agnostic core (:mod:`serving.core`) raises only :class:`ServingError` subclasses;
every protocol adapter (the ``crayfish.v1.Scoring`` gRPC servicer, a TF Serving
``PredictionService``, KServe v2, plain HTTP) catches them and maps them with
:func:`grpc_status` -- never with a table of its own -- so that one failure looks the same on
every protocol::

    BadInputError          -> INVALID_ARGUMENT    undecodable tensor, wrong dtype / shape
    ModelNotFoundError     -> NOT_FOUND           model not served here
    OverloadedError        -> RESOURCE_EXHAUSTED  bounded queue full: back off and retry
    DeadlineExceededError  -> DEADLINE_EXCEEDED   the caller's deadline passed before scoring
    UnavailableError       -> UNAVAILABLE         not loaded yet / shutting down: retry elsewhere
    BackendError, other    -> INTERNAL            the backend (or the server) failed

Clients go the other way with :func:`error_from_status`, so code that talks to a remote scorer
can handle the same exception types as code that scores in-process.

Importing this module does not import ``grpc`` (the core must stay importable without it);
:func:`grpc_status` and :func:`error_from_status` import it when called.
"""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """Base class of every error the serving core reports to a caller.

    ``str(exc)`` is the message sent to the client; keep it specific (model, expected vs got).
    """


class BadInputError(ServingError, ValueError):
    """The request's input cannot be scored: undecodable tensor, wrong dtype, wrong shape."""


class ModelNotFoundError(ServingError, LookupError):
    """The requested model is not served by this server."""


class OverloadedError(ServingError):
    """The model's bounded queue is full; the request was rejected without waiting."""


class DeadlineExceededError(ServingError, TimeoutError):
    """The caller's deadline passed before the request got to (or through) the backend."""


class UnavailableError(ServingError):
    """The server cannot score right now: models still loading, or shutting down."""


class BackendError(ServingError):
    """The backend failed while scoring a well-formed input (engine error, crash, bug)."""


# name of the grpc.StatusCode member for each error class; the first match in MRO order wins
_TO_GRPC: tuple[tuple[type[ServingError], str], ...] = (
    (BadInputError, "INVALID_ARGUMENT"),
    (ModelNotFoundError, "NOT_FOUND"),
    (OverloadedError, "RESOURCE_EXHAUSTED"),
    (DeadlineExceededError, "DEADLINE_EXCEEDED"),
    (UnavailableError, "UNAVAILABLE"),
)

_FROM_GRPC: dict[str, type[ServingError]] = {
    "INVALID_ARGUMENT": BadInputError,
    "NOT_FOUND": ModelNotFoundError,
    "RESOURCE_EXHAUSTED": OverloadedError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "UNAVAILABLE": UnavailableError,
    "INTERNAL": BackendError,
}


def grpc_status(exc: BaseException) -> tuple[Any, str]:
    """``(grpc.StatusCode, message)`` for any exception raised while serving a request.

    The only error -> status mapping in the serving layer (see the module docstring). Anything
    that is not a known :class:`ServingError` -- including a bare ``ServingError`` or
    :class:`BackendError` -- is ``INTERNAL``; its message names the exception type when it is
    not a ``ServingError`` (an unexpected crash), so that the client sees more than a bare text.
    """
    # lazy: the core stays importable without grpc (module docstring)
    import grpc

    for cls, name in _TO_GRPC:
        if isinstance(exc, cls):
            return getattr(grpc.StatusCode, name), str(exc)
    if isinstance(exc, ServingError):
        return grpc.StatusCode.INTERNAL, str(exc)
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


def error_from_status(code: Any, message: str) -> ServingError:
    """The :class:`ServingError` for a status a client received (the reverse of :func:`grpc_status`).

    ``code`` is a ``grpc.StatusCode`` (or its name, e.g. ``"NOT_FOUND"``). ``INTERNAL`` becomes
    :class:`BackendError`; codes the server never sends on purpose (``UNKNOWN``, ``CANCELLED``,
    ...) become a plain :class:`ServingError` whose message starts with the code's name.
    Typical client use::

        try:
            stub.Score(request, timeout=1.0)
        except grpc.RpcError as rpc:
            raise error_from_status(rpc.code(), rpc.details()) from rpc
    """
    name = code if isinstance(code, str) else getattr(code, "name", str(code))
    cls = _FROM_GRPC.get(name)
    if cls is None:
        return ServingError(f"{name}: {message}")
    return cls(message)


__all__ = [
    "ServingError", "BadInputError", "ModelNotFoundError", "OverloadedError",
    "DeadlineExceededError", "UnavailableError", "BackendError", "grpc_status", "error_from_status",
]
