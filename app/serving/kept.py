"""Answers kept for reuse, in a dict bounded to a number of entries: the one inserted first goes first.

A caller that re-inserts an entry when it is used (pop, then `keep`) gets least-recently-used order.
"""

from __future__ import annotations

from typing import TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


def keep(kept: dict[Key, Value], key: Key, value: Value, limit: int) -> Value:
    """Store `value` under `key`, first dropping the oldest entry if `kept` holds `limit` already."""
    if key not in kept and len(kept) >= limit:
        kept.pop(next(iter(kept)), None)
    kept[key] = value
    return value
