"""Typed, frozen configuration objects built from plain YAML mappings.

Every component declares a frozen dataclass. `build(cls, mapping, where)` turns a
mapping into that dataclass, checking each value against the field's type hint;
unknown keys, missing keys and values of the wrong type raise `ParamsError`
naming the full key (``datasets.synthetic.episodes``), the value and what is
allowed. Range checks live in each dataclass's `validate()`, which uses
`check(...)` so that its errors read the same way.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ParamsError(ValueError):
    """A params value is missing, unknown or not allowed. The message names the key."""


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ParamsError for `key` unless `ok`."""
    if not ok:
        shown = list(value) if isinstance(value, tuple) else value  # as written in YAML
        raise ParamsError(f"params: {key} = {shown!r} is not allowed: expected {allowed}")


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin in (tuple, list):
        args = get_args(tp)
        inner = _describe(args[0]) if args else "any"
        return f"a list of {inner}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Return `value` converted to type `tp`, or raise ParamsError naming `key`."""
    origin = get_origin(tp)
    bad = ParamsError(f"params: {key} = {value!r} is not allowed: expected {_describe(tp)}")
    if tp is Any:
        return value
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ParamsError:
                continue
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = [a for a in get_args(tp) if a is not Ellipsis]
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise bad
        _, vtype = get_args(tp)
        return types.MappingProxyType({k: _coerce(vtype, v, f"{key}.{k}") for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return build(tp, value, key)
    if tp in (bool, int, float, str):
        return _coerce_scalar(tp, value, bad)
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _coerce_scalar(tp: type, value: Any, bad: ParamsError) -> Any:
    """bool, int, float or str; bools are never numbers; floats accept YAML's dotless 3e-3."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if isinstance(value, str):
        return value
    raise bad


T = typing.TypeVar("T")


def build(cls: type[T], mapping: dict[str, Any] | None, where: str) -> T:
    """Build the frozen dataclass `cls` from `mapping`; `where` prefixes key names in errors."""
    mapping = {} if mapping is None else mapping
    prefix = f"{where}." if where else ""
    if not isinstance(mapping, dict):
        raise ParamsError(f"params: {where or 'params'} must be a mapping, got {mapping!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ParamsError(
            f"params: unknown key {prefix}{unknown[0]} (allowed keys: {', '.join(sorted(fields))})"
        )
    values = {}
    for name, field in fields.items():
        key = f"{prefix}{name}"
        if name in mapping:
            values[name] = _coerce(hints[name], mapping[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ParamsError(f"params: missing key {key} ({_describe(hints[name])})")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(where)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-ready) form of a config object, for recording in artifacts."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
