"""``logs``: the tail of each service's log files (or of one service's), optionally following them.

The files come from the state file (a running stack's or the last stopped one's); without either,
from ``<dir>/logs/`` (a file's stem is taken as its service's name)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from services.stack.settings import StackSettings
from services.stack.state import STOPPED_FILE, StackError, read_state

FOLLOW_POLL_S = 0.3


def _log_files(s: StackSettings, service: str | None) -> list[tuple[str, Path]]:
    """(service name, log file) pairs, of every service or of ``service``."""
    state = read_state(s.state_file) or read_state(s.dir / STOPPED_FILE)
    files: list[tuple[str, Path]] = []
    if state is not None:
        for rec in state.get("services", []):
            for p in rec.get("logs", [rec["log"]]):
                files.append((rec["name"], Path(p)))
    elif (s.dir / "logs").is_dir():
        files = [(p.stem, p) for p in sorted((s.dir / "logs").glob("*.*"))]
    if service is not None:
        names = sorted({n for n, _ in files})
        files = [(n, p) for n, p in files if n == service]
        if not files:
            raise StackError(f"no logs of {service!r} in {s.dir}; services: {', '.join(names) or 'none'}")
    return files


def logs(s: StackSettings, service: str | None = None, lines: int = 40, follow: bool = False,
         out=sys.stdout) -> None:
    """Write the last ``lines`` of each log to ``out`` (a header per file); with ``follow``, every
    line prefixed by its service, then the new lines as they come (until Ctrl-C)."""
    files = _log_files(s, service)
    if not files:
        raise StackError(f"no stack logs in {s.dir}")
    prefix = len({n for n, _ in files}) > 1 or follow
    width = max(len(n) for n, _ in files)
    positions: dict[Path, int] = {}
    for name, path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        positions[path] = len(data)
        tail = data.decode(errors="replace").splitlines()[-lines:] if lines > 0 else []
        if not follow:
            out.write(f"==> {name}: {path} <==\n")
        for line in tail:
            out.write(f"{name:{width}s} | {line}\n" if prefix and follow else line + "\n")
        if not follow and tail:
            out.write("\n")
    out.flush()
    if follow:
        _follow(files, positions, width, out)


def _follow(files: list[tuple[str, Path]], positions: dict[Path, int], width: int, out) -> None:
    """Print whole lines appended to ``files`` after ``positions``, forever."""
    while True:
        time.sleep(FOLLOW_POLL_S)
        for name, path in files:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            pos = positions.get(path, 0)
            if size < pos:   # truncated: a new `up`
                pos = 0
            if size > pos:
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read(size - pos)
                cut = chunk.rfind(b"\n") + 1   # only whole lines; the rest next round
                if cut == 0:
                    continue
                positions[path] = pos + cut
                for line in chunk[:cut].decode(errors="replace").splitlines():
                    out.write(f"{name:{width}s} | {line}\n")
                out.flush()
