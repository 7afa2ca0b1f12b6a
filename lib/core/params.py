"""Typed, validated notebook parameters: a frozen dataclass per report, its presets, and `resolve`.

A report's `Params` subclasses `Params`; its fields carry type hints, and `__post_init__` checks every value against
its hint (int, float, bool, str, a `Literal[...]`, a tuple of those, `None` where the hint allows it, or a nested
`Params`) before the subclass's own `validate()` tests ranges. `resolve(presets, preset, **overrides)` takes a preset
and applies every override that is not None (papermill passes None for "use the preset"); an unknown name is an
error that lists the allowed ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Mapping, TypeVar, Union

from lib.core.checks import check, is_int

P = TypeVar("P", bound="Params")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a tuple of {_describe(args[0])}" if args and args[-1] is Ellipsis else f"a tuple {args}"
    return {int: "an integer", float: "a number", bool: "True or False", str: "a string",
            type(None): "None"}.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(ok, value converted to the hint's type): ints stay exact, lists become tuples, ints are valid floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True, value
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if origin in (Union, types.UnionType):
        for a in args:
            ok, v = _coerce(value, a)
            if ok:
                return True, v
        return False, value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        inner = [_coerce(v, args[0] if args[-1] is Ellipsis else a)
                 for v, a in zip(value, args if args[-1] is not Ellipsis else [args[0]] * len(value))]
        if args[-1] is not Ellipsis and len(value) != len(args):
            return False, value
        return all(ok for ok, _ in inner), tuple(v for _, v in inner)
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return is_int(value), value
    if hint is float:
        return (is_int(value) or isinstance(value, float)), float(value) if is_int(value) else value
    if isinstance(hint, type) and issubclass(hint, Params):
        return isinstance(value, hint), value
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value


@dataclasses.dataclass(frozen=True)
class Params:
    """Base of every report's parameters: type-checked on construction, then `validate()` (ranges) runs."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            ok, converted = _coerce(value, hints[f.name])
            check(ok, f"{type(self).__name__}.{f.name}", value, _describe(hints[f.name]))
            object.__setattr__(self, f.name, converted)
        self.validate()

    def validate(self) -> None:
        """Range checks of a subclass (raise ValueError naming the bad value)."""

    def replace(self: P, **overrides: Any) -> P:
        """A copy with some fields changed (unknown names rejected)."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in overrides if k not in names]
        check(not unknown, "parameter", unknown[0] if unknown else None,
              f"one of {', '.join(names)} ({type(self).__name__})")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable), e.g. for cache keys."""
        return dataclasses.asdict(self)


def resolve(presets: Mapping[str, P], preset: str, **overrides: Any) -> P:
    """The preset's Params with every override that is not None applied."""
    check(preset in presets, "preset", preset, f"one of {tuple(presets)}")
    return presets[preset].replace(**{k: v for k, v in overrides.items() if v is not None})


def at_least(p: Params, low: float, *names: str) -> None:
    """Check that each named field (a number, or a tuple of numbers) is >= low."""
    for name in names:
        value = getattr(p, name)
        values = value if isinstance(value, tuple) else (value,)
        check(all(v >= low for v in values), f"{type(p).__name__}.{name}", value, f"numbers >= {low}")


def shares(p: Params, *names: str) -> None:
    """Check that each named field (a number, or a tuple of numbers) lies in (0, 1]."""
    for name in names:
        value = getattr(p, name)
        values = value if isinstance(value, tuple) else (value,)
        check(all(0 < v <= 1 for v in values), f"{type(p).__name__}.{name}", value, "shares in (0, 1]")
