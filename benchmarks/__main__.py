"""``python -m benchmarks --out DIR [--quick]``: run the self-benchmarks (see :mod:`benchmarks`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console

from benchmarks import codec, contract, efficiency, flink_standalone, harness, parallelism, serving, tracing
from benchmarks.common import PARTS, BenchSettings, Timer, host_facts
from benchmarks.report import markdown
from services.broker import launcher
from services.runner.manifest import json_safe

BROKER_PARTS = ("efficiency", "parallelism", "harness", "serving", "tracing", "flink_standalone")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, BenchSettings]:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--out", required=True, help="folder for bench.json, bench.md and the raw files")
    p.add_argument("--quick", action="store_true", help="smoke test: everything shrunk (~2 minutes)")
    p.add_argument("--only", default=",".join(PARTS),
                   help=f"comma-separated parts to run, of: {', '.join(PARTS)} (default: all)")
    p.add_argument("--drain-n", type=int, help="part 1: records pre-filled for the worker drain")
    p.add_argument("--collector-n", type=int, help="part 2b: records pre-filled for the collector")
    p.add_argument("--worker-rate", type=float,
                   help="part 2: worker sustainable rate to use when part 3 gives none (default 1500)")
    p.add_argument("--onnx-start-rate", type=float,
                   help="part 3: first rate of the ONNX mp 1 search (default: a third of the drain rate of part 1)")
    p.add_argument("--point-duration", type=float, help="part 3: workload seconds of each tried rate")
    p.add_argument("--max-points", type=int, help="part 3: most rates tried per search")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    a = p.parse_args(argv)
    s = BenchSettings.quick_preset() if a.quick else BenchSettings()
    parts = tuple(x.strip() for x in a.only.split(",") if x.strip())
    unknown = [x for x in parts if x not in PARTS]
    if unknown:
        p.error(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    s.parts = parts
    for flag, name in (("drain_n", "drain_n"), ("collector_n", "collector_n"), ("worker_rate", "worker_rate"),
                       ("onnx_start_rate", "onnx_start_rate"), ("point_duration", "point_duration_s"),
                       ("max_points", "max_points")):
        v = getattr(a, flag)
        if v is not None:
            setattr(s, name, v)
    return a, s


class _Bench:
    """One bench run: its folder, bench.json as it grows, the log; :meth:`part` runs one part so that
    a part failing loses nothing of the others."""

    def __init__(self, a: argparse.Namespace, s: BenchSettings, argv: list[str] | None):
        self.s, self.quiet, self.out = s, a.quiet, Path(a.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.total = Timer()
        self.console = Console(quiet=True) if a.quiet else Console(stderr=True)
        self.doc: dict = {"quick": s.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
                          "settings": s.as_dict(), "host": host_facts(), "results": {}, "wall_s_by_part": {}}

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[bench {self.total.elapsed():7.1f}s] {msg}", file=sys.stderr, flush=True)

    def save(self) -> None:
        self.doc["wall_s"] = self.total.elapsed()
        (self.out / "bench.json").write_text(json.dumps(json_safe(self.doc), indent=2))

    def result(self, name: str, *keys: str):
        node = self.doc["results"].get(name) or {}
        for k in keys:
            node = node.get(k) or {} if isinstance(node, dict) else {}
        return node or None

    def part(self, name: str, fn) -> None:
        t = Timer()
        try:
            self.doc["results"][name] = fn()
        except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others
            self.log(f"{name} failed: {type(exc).__name__}: {exc}")
            self.doc["results"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                         "traceback": traceback.format_exc()[-4000:]}
        self.doc["wall_s_by_part"][name] = t.elapsed()
        self.log(f"{name} done in {t.elapsed():.1f}s")
        self.save()


def _broker_parts(b: _Bench, bootstrap: str) -> None:
    """The parts that need the broker, in order (each may use an earlier one's result)."""
    s, out, log = b.s, b.out, b.log
    if "efficiency" in s.parts:
        b.part("efficiency", lambda: efficiency.run(bootstrap, out / "efficiency", s, log))
    if "parallelism" in s.parts:
        drain = b.result("efficiency", "worker", "drain_rate_bps")
        b.part("parallelism", lambda: parallelism.run(bootstrap, out / "parallelism", s, drain, b.console, log))
    if "harness" in s.parts:
        st = b.result("parallelism", "onnx-mp1", "sustainable_rate_bps")
        b.part("harness", lambda: harness.run(bootstrap, out / "harness", s, st,
                                              "part 3: ONNX FFNN mp 1 sustainable rate", log))
    if "codec" in s.parts and "serving" in s.parts:  # codec needs no broker; serving, last, does
        b.part("codec", lambda: codec.run(s, log=log))
    if "serving" in s.parts:
        b.part("serving", lambda: serving.run(bootstrap, out / "serving", s, b.console, log))
    if "tracing" in s.parts:
        b.part("tracing", lambda: tracing.run(bootstrap, out / "tracing", s, log))
    if "flink_standalone" in s.parts:
        b.part("flink_standalone", lambda: flink_standalone.run(bootstrap, out / "flink_standalone",
                                                                count=s.flink_count, repeat=s.flink_repeat,
                                                                seed=s.seed, log=log))


def main(argv: list[str] | None = None) -> int:
    a, s = parse_args(argv)
    b = _Bench(a, s, argv)
    if any(x in s.parts for x in BROKER_PARTS):
        b.log("starting one local Kafka broker for the whole bench")
        t = Timer()
        broker = launcher.start()
        b.doc["broker"] = {"bootstrap": broker.bootstrap, "start_s": t.elapsed(), "local": True}
        b.log(f"Kafka ready at {broker.bootstrap}")
        try:
            _broker_parts(b, broker.bootstrap)
        finally:
            b.log("stopping the broker")
            launcher.stop(broker)
    if "codec" in s.parts and "codec" not in b.doc["results"]:
        b.part("codec", lambda: codec.run(s, log=b.log))
    if "contract" in s.parts:     # no broker either
        b.part("contract", lambda: contract.run(s, log=b.log))
    b.doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    b.doc["host"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    b.save()
    md = markdown(b.doc)
    (b.out / "bench.md").write_text(md)
    print(md)
    print(f"results: {b.out / 'bench.json'}  ({b.out / 'bench.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
