"""The test tree itself: module names unique across tests/ (pytest's default import mode keys a
test module by its file name, so a repeated name breaks collection of the whole suite, and
`make test-fast` alone would not notice)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_name_is_unique():
    names = Counter(p.name for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []
