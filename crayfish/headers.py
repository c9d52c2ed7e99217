"""Kafka record headers: the one lookup every reader of a header uses (no Kafka client imported)."""

from __future__ import annotations


def header_value(headers, key: str) -> bytes | str | None:
    """The value of the first header named ``key`` in a record's (name, value) pairs, else None."""
    if not headers:
        return None
    for k, v in headers:
        if k == key:
            return v
    return None
