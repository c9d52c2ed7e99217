"""``python -m services.stack up|down|ps|logs``: see services/stack/__init__.py and docs/stack.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crayfish.host.procs import ServiceError
from services.stack.logs import logs
from services.stack.settings import DEFAULT_CONFIG, StackConfigError, load_settings
from services.stack.state import StackError
from services.stack.status import print_up, ps, shown_path
from services.stack.supervisor import down, up


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=None,
                        help=f"stack config (default {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[2])})")
    common.add_argument("--dir", type=Path, default=None,
                        help="the stack's folder: state file, logs, data (default: the config's `dir`, .cache/stack)")
    ap = argparse.ArgumentParser(prog="python -m services.stack",
                                 description="The native Crayfish Mesh stack: Kafka, Jaeger, Scoring, "
                                             "kafka-worker, collector as local processes.")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("up", parents=[common], help="start the stack and wait until every service is healthy")
    sub.add_parser("down", parents=[common], help="stop every process of the stack (idempotent)")
    p = sub.add_parser("ps", parents=[common], help="each service: pid, state, listeners, health")
    p.add_argument("--check", action="store_true",
                   help="exit status 0 only when the stack is up and healthy (1 unhealthy, 3 not running)")
    p = sub.add_parser("logs", parents=[common], help="the tail of the services' logs")
    p.add_argument("service", nargs="?", default=None, help="one service (kafka, jaeger, scoring, kafka-worker, collector)")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines per log (default 40)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C to stop)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    try:
        settings = load_settings(args.config, args.dir)
        if args.command == "up":
            log(f"starting the native stack in {shown_path(settings.dir)} ...")
            state = up(settings, config_path=args.config or DEFAULT_CONFIG, log=log)
            print_up(state, log=log)
            return 0
        if args.command == "down":
            return 0 if down(settings, log=log) else 1
        if args.command == "ps":
            code = ps(settings, log=log)
            return code if args.check else 0
        if args.command == "logs":
            logs(settings, args.service, lines=args.lines, follow=args.follow)
            return 0
    except StackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (StackError, ServiceError, RuntimeError, OSError) as exc:   # one line for the user, the logs hold the rest
        print(f"error: {exc}", file=sys.stderr)
        if args.command == "up" and getattr(exc, "stack_stopped", False):
            print(f"(logs: {settings.dir / 'logs'}; everything started was stopped again)", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
