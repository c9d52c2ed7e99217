"""Builds kept once per version of their sources: ``<cache>/<hash>/``, made behind one file lock.

The native workers (Kafka Streams' jar, the Go binary) build on first use from a fresh clone and
reuse that build until one of their inputs changes. The same rules for both live here:

- the key is a hash of the named input files (:func:`files_hash`: name, length and bytes of each);
- a build is complete when its folder holds ``.built`` (written after the build step returned);
- concurrent starts wait on one lock; the loser finds the build done;
- the newest ``keep`` complete builds stay (a worker started earlier may still run from the one
  before), older ones and the logs of builds that are gone are removed.

A worker's ``build.py`` says only what its inputs are (``sources(module_dir, protos_dir)``) and
how it builds (``build(digest, out, log)``), and exposes this object's methods as its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

MARKER = ".built"


def files_hash(files: list[tuple[str, Path]]) -> str:
    """16 hex digits over ``(stable name, path)`` pairs: names, lengths and contents, in order."""
    h = hashlib.sha256()
    for name, path in files:
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


class CachedBuilds:
    """The builds of one worker under ``root()`` (a callable: tests point it elsewhere by env).

    ``sources(*args)`` lists the inputs as ``(stable name, path)``; ``build(digest, out, log)``
    fills ``out`` with ``product`` (and whatever it needs beside it)."""

    def __init__(self, root: Callable[[], Path], sources: Callable[..., list[tuple[str, Path]]], product: str,
                 build: Callable[[str, Path, Callable[[str], None]], None], keep: int = 2):
        self.root, self.sources, self.product, self.build, self.keep = root, sources, product, build, keep

    def source_hash(self, *args) -> str:
        """The key of the current sources (``args``: where to read them, for tests)."""
        return files_hash(self.sources(*args))

    def build_dir(self, digest: str | None = None) -> Path:
        return self.root() / (digest or self.source_hash())

    def is_built(self, digest: str | None = None) -> bool:
        return (self.build_dir(digest) / MARKER).is_file()

    def ensure_built(self, log=None, force: bool = False) -> Path:
        """Path of the product, building it first when the sources changed (or ``force``)."""
        log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        digest = self.source_hash()
        out = self.build_dir(digest)
        if self.is_built(digest) and not force:
            return out / self.product
        self.root().mkdir(parents=True, exist_ok=True)
        with open(self.root() / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.is_built(digest) and not force:
                return out / self.product
            self.build(digest, out, log)
            (out / MARKER).write_text(f"{digest}\n")
            self._prune(keep=out)
        return out / self.product

    def _prune(self, keep: Path) -> None:
        root = self.root()
        builds = sorted((d for d in root.iterdir() if d.is_dir() and (d / MARKER).is_file() and d != keep),
                        key=lambda d: d.stat().st_mtime, reverse=True)
        for d in builds[self.keep - 1:]:
            shutil.rmtree(d, ignore_errors=True)
        for log in root.glob("build-*.log"):
            if not (root / log.stem[len("build-"):]).is_dir():
                log.unlink(missing_ok=True)
