"""Range checks shared by the model's config dataclasses.

Every component of the model has one frozen config dataclass whose fields are
plain ints, floats, strs (Literal) and tuples of ints, so the pipeline can build
it from params.yaml. Each has `validate(where)`, where `where` is the key path
(``model.idm``); the helpers below raise ValueError messages of the form
``model.idm.groups = 0 is not allowed: expected an integer >= 1``.
"""
from __future__ import annotations

import math
from typing import Any


def key(where: str, name: str) -> str:
    """`where.name`, or `name` alone when there is no prefix."""
    return f"{where}.{name}" if where else name


def require(ok: bool, where: str, name: str, value: Any, expected: str) -> None:
    """Raise ValueError naming the key unless `ok`."""
    if not ok:
        raise ValueError(f"{key(where, name)} = {value!r} is not allowed: expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(cfg: Any, where: str, name: str, low: int = 1) -> None:
    """Field `name` of `cfg` is an integer >= low."""
    value = getattr(cfg, name)
    require(_is_int(value) and value >= low, where, name, value, f"an integer >= {low}")


def check_ints(cfg: Any, where: str, names: str, low: int = 1) -> None:
    """check_int for each space-separated field name."""
    for name in names.split():
        check_int(cfg, where, name, low)


def check_float(cfg: Any, where: str, name: str, low: float = 0.0, high: float = float("inf"),
                high_open: bool = False) -> None:
    """Field `name` of `cfg` is a finite number in [low, high] (or [low, high) when high_open)."""
    value = getattr(cfg, name)
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = number and low <= value and (value < high if high_open else value <= high)
    bracket = ")" if high_open else "]"
    require(ok, where, name, value, f"a finite number in [{low}, {high}{bracket}")


def check_choice(cfg: Any, where: str, name: str, choices: tuple[str, ...]) -> None:
    """Field `name` of `cfg` is one of `choices`."""
    value = getattr(cfg, name)
    require(value in choices, where, name, value, "one of " + ", ".join(repr(c) for c in choices))


def check_int_tuple(cfg: Any, where: str, name: str, length: int | None = None, low: int = 1) -> None:
    """Field `name` of `cfg` is a tuple of integers >= low (of the given length, if any)."""
    value = getattr(cfg, name)
    ok = isinstance(value, tuple) and len(value) >= 1 and all(_is_int(v) and v >= low for v in value)
    ok = ok and (length is None or len(value) == length)
    size = f"{length} " if length is not None else "1 or more "
    require(ok, where, name, value, f"a list of {size}integers >= {low}")


def check_bool(cfg: Any, where: str, name: str) -> None:
    """Field `name` of `cfg` is True or False."""
    value = getattr(cfg, name)
    require(isinstance(value, bool), where, name, value, "true or false")
