"""Input validation shared by every module: one error format that names the bad value and what is allowed."""

from __future__ import annotations

from typing import Any


def check(ok: bool, name: str, value: Any, allowed: str) -> None:
    """Raise ValueError("name=value is not allowed: allowed") unless ok."""
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


def is_int(x: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def int_at_least(name: str, value: Any, low: int) -> None:
    """Check that value is an integer (not a bool) >= low."""
    check(is_int(value) and value >= low, name, value, f"an integer >= {low}")


def positive_int(name: str, value: Any) -> None:
    """Check that value is a positive integer (not a bool)."""
    check(is_int(value) and value > 0, name, value, "a positive integer")
