"""`make mutate`: mutation testing of the measurement code, as a gate.

Runs mutmut over the files `[tool.mutmut]` in pyproject.toml names (the analysis, the collector's
batch table, the clock bound) against their fast known-case tests, then fails unless

* at least ``--min-score`` (90 %) of the mutants are killed, and
* every surviving mutant is one docs/mutation.md lists as equivalent — matched by its function and
  its mutated line, not by mutmut's numbering, which moves whenever the code does.

Writes ``mutation-results/report.json`` (the counts, the survivors with their diffs) and prints a
one-screen summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

from crayfish.host.paths import REPO_ROOT

ROOT = REPO_ROOT
DOC = ROOT / "docs" / "mutation.md"
MUTMUT = [sys.executable, "-m", "mutmut"]


def mutmut(*args: str, check: bool = True) -> str:
    res = subprocess.run([*MUTMUT, *args], cwd=ROOT, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed (exit {res.returncode}): {res.stderr.strip()[-800:]}")
    return res.stdout


def survivors() -> list[dict]:
    """Each surviving mutant: its name, function and the lines it changes (from `mutmut show`)."""
    found = []
    for line in mutmut("results").splitlines():
        name, _, status = line.strip().partition(": ")
        if status.strip() != "survived":
            continue
        diff = mutmut("show", name)
        found.append({"name": name, "function": re.sub(r"__mutmut_\d+$", "", name),
                      "removed": [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("- ")],
                      "added": [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+ ")]})
    return found


def documented() -> list[tuple[str, str]]:
    """(mutmut's function name, mutated line) pairs of the table of equivalent mutants in
    docs/mutation.md."""
    rows = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|\s*`(.+?)`\s*\|", line)
        if m:
            rows.append((m.group(1), m.group(2).strip()))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/mutate.py")
    p.add_argument("--min-score", type=float, default=0.90, help="share of mutants that must be killed")
    p.add_argument("--out", default="mutation-results", help="folder for report.json")
    a = p.parse_args(argv)
    subprocess.run(["rm", "-rf", str(ROOT / "mutants")], check=True)
    run = subprocess.run([*MUTMUT, "run", "--max-children", str(os.cpu_count() or 2)], cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if run.returncode != 0:
        print(f"mutmut run failed (exit {run.returncode}): {run.stderr.strip()[-800:]}", file=sys.stderr)
        return 2
    mutmut("export-cicd-stats")
    stats = json.loads((ROOT / "mutants" / "mutmut-cicd-stats.json").read_text())
    score = stats["killed"] / stats["total"] if stats["total"] else 0.0
    alive = survivors()
    known = documented()
    unexplained = [s for s in alive if not any(fn == s["function"] and line in s["added"] for fn, line in known)]
    out = ROOT / a.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"stats": stats, "score": score, "survivors": alive,
                                                 "unexplained": [s["name"] for s in unexplained]}, indent=2))
    print(f"mutation score {score:.1%}: {stats['killed']} of {stats['total']} mutants killed, "
          f"{len(alive)} survived ({len(alive) - len(unexplained)} listed as equivalent in docs/mutation.md)")
    for s in unexplained:
        print(f"  unexplained survivor {s['name']}: {' / '.join(s['added'])}")
    if score < a.min_score:
        print(f"FAIL: score below {a.min_score:.0%}", file=sys.stderr)
        return 1
    if unexplained:
        print("FAIL: kill each unexplained survivor with a test, or list it in docs/mutation.md with the reason "
              "it is equivalent", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
