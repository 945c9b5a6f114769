"""Fixtures of the benchmark tests."""

from __future__ import annotations

import pytest


def _strings(value) -> list[str]:
    """Every string in a parsed JSON value, keys included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.fixture
def json_strings():
    """``json_strings(value)``: every string in a parsed JSON value (a stored result), keys included."""
    return _strings
