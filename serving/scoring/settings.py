"""Settings of the scoring server: the core's (:class:`serving.core.settings.CoreSettings`: models,
backend, instances, queue, batching) plus the gRPC transport's (address, TLS, threads, message
size, ready file, protocol hooks, shutdown).

One pydantic model, :class:`ScoringSettings`, read from JSON/YAML (``python -m serving.scoring
--config ...``) or built in code. Unknown keys are rejected, so a typo in a config fails loudly
instead of silently running with a default.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.core.settings import (
    BatchingSettings,
    CoreSettings,
    ModelEntry,
    ServedModel,
)


class TLSSettings(BaseModel):
    """Server-side TLS: the server's certificate chain and private key (PEM files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path = Field(description="PEM certificate chain the server presents.")
    key_file: Path = Field(description="PEM private key of that certificate.")


class ScoringSettings(CoreSettings):
    """Everything the scoring server and its core need; every field has a default but the
    model must be built (``python -m serving.models build``) for file-backed backends."""

    host: str = Field(
        default="127.0.0.1",
        description="Interface to bind. Loopback only by default; '0.0.0.0' / '::' to serve the "
                    "network (then consider `tls`).")
    port: int = Field(
        default=0, ge=0, le=65535,
        description="TCP port; 0 picks a free port (read it from build_server's return value or "
                    "from `ready_file`).")
    max_workers: int | None = Field(
        default=None, ge=1,
        description="gRPC handler threads. Default max(8, 2*instances*len(models)), and at least "
                    "2*max_batch_size with batching (a blocked unary call holds one thread, so "
                    "a full batch must fit while the next one gathers).")
    stream_max_in_flight: int | None = Field(
        default=None, ge=1,
        description="Requests of one ScoreStream scored concurrently (more are not read from the "
                    "stream until one finishes: flow control). Default max(8, 2*instances, "
                    "max_batch_size).")
    max_message_bytes: int = Field(
        default=256 * 1024 * 1024, ge=4 * 1024 * 1024,
        description="Largest gRPC message sent or received (a ResNet50 batch of 64 is ~38 MB; "
                    "gRPC's default is 4 MB).")
    tls: TLSSettings | None = Field(
        default=None, description="Serve TLS with this certificate/key; null serves plaintext.")
    ready_file: Path | None = Field(
        default=None,
        description="Written (atomically) with the bound port once every model is loaded and "
                    "health says SERVING; removed on shutdown. Lets a launcher wait for a "
                    "port-0 server.")
    protocols: list[str] = Field(
        default_factory=list,
        description="Extra protocol adapters as 'package.module:function' import paths; each "
                    "function is called as fn(server, core) before the server starts (see "
                    "serving.scoring.server, 'Adding a protocol').")
    shutdown_grace_s: float = Field(
        default=5.0, ge=0,
        description="On SIGTERM/SIGINT: seconds in-flight calls get to finish before they are "
                    "cancelled.")

    @field_validator("protocols")
    @classmethod
    def _import_paths(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p.count(":") != 1 or not all(p.split(":"))]
        if bad:
            raise ValueError(f"protocols must be 'package.module:function', got {bad}")
        return v

    # -- derived values ----------------------------------------------------------------------
    @property
    def effective_max_workers(self) -> int:
        if self.max_workers is not None:
            return self.max_workers
        n = max(8, 2 * self.instances * len(self.models))
        if self.batching is not None:
            n = max(n, 2 * self.batching.max_batch_size)
        return n

    @property
    def effective_stream_max_in_flight(self) -> int:
        if self.stream_max_in_flight is not None:
            return self.stream_max_in_flight
        n = max(8, 2 * self.instances)
        if self.batching is not None:
            n = max(n, self.batching.max_batch_size)
        return n


__all__ = ["ScoringSettings", "BatchingSettings", "TLSSettings", "ModelEntry", "ServedModel"]
