"""One config mechanism: typed (nested) dataclasses built from Kedro parameters.

YAML keys equal field names. `build(Config, params, "ld3m")` checks every key against the fields (unknown keys
name the valid ones; a field without a default is required, a missing one is named), every value against the
field's annotation (int, float, str, bool, `X | None`, `list[X]`, `tuple[X, ...]`, `dict[str, X]`, nested
dataclasses, given as mappings) and against the field's metadata
(`choices`, `min`, `max`, `gt`, `lt`, written with `option(...)`), and reports the first problem as one
`ConfigError` naming the key path (`ld3m.sampler.variant`), what it got and what to change. Cross-field rules
live in the dataclass's `check()` method, called once after the fields are built (also on nested sections).
Ints are accepted for float fields; bools are never ints.

    @dataclass
    class Sampler:
        num_steps: int = option(10, min=1)
        variant: str = option("reference", choices=VARIANTS)

    sampler = build(Sampler, {"num_steps": 20}, "ld3m.sampler")
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter that cannot be used; the message names its key path and what to change."""


def option(default: Any = dataclasses.MISSING, *, choices: tuple | None = None, min: float | None = None,
           max: float | None = None, gt: float | None = None, lt: float | None = None, help: str = "",
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with the checks `build` applies (`choices`, bounds) and a one-line `help`."""
    metadata = {k: v for k, v in {"choices": choices, "min": min, "max": max, "gt": gt, "lt": lt,
                                  "help": help}.items() if v not in (None, "")}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(kind))
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(kind)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(kind):
        return "a mapping of its settings"
    if kind is type(None):
        return "null"
    return {int: "an int", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


def _convert(value: Any, kind: Any, path: str) -> Any:
    """`value` as `kind`, or a ConfigError naming `path`."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option_kind in options:
            if option_kind is type(None):
                continue
            try:
                return _convert(value, option_kind, path)
            except ConfigError as error:
                errors.append(error)
        raise errors[0] if len(errors) == 1 else ConfigError(f"{path}={value!r} must be {_describe(kind)}")
    if dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping of its settings, got {value!r}")
        return build(kind, value, path)
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}={value!r} must be {_describe(kind)}")
        inner = typing.get_args(kind)[0]
        items = [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}={value!r} must be a mapping")
        inner = typing.get_args(kind)[1] if typing.get_args(kind) else Any
        return {k: _convert(v, inner, f"{path}.{k}") for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={value!r} must be true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}={value!r} must be an int")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path}={value!r} must be a finite number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}={value!r} must be a string")
        return value
    if isinstance(kind, type) and not isinstance(value, kind):
        raise ConfigError(f"{path}={value!r} must be {_describe(kind)}")
    return value


def _check_metadata(value: Any, meta: Mapping[str, Any], path: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{path}={value!r} is not one of {', '.join(map(str, choices))}; set it to one of them")
    for key, ok, word in (("min", lambda v, b: v >= b, ">="), ("max", lambda v, b: v <= b, "<="),
                          ("gt", lambda v, b: v > b, ">"), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(key)
        if bound is not None and isinstance(value, (int, float)) and not ok(value, bound):
            raise ConfigError(f"{path}={value!r} must be {word} {bound}; change it in the parameters (conf/ or --params)")


def build(cls: type[T], params: Mapping[str, Any] | T | None, path: str) -> T:
    """`cls` from `params` (a mapping, or already a `cls`), every field checked; then `cls.check()` if defined."""
    if isinstance(params, cls):
        return params
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{path} must be a mapping of its settings, got {params!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(f'{path}.{k}' for k in unknown)}; valid keys: {', '.join(sorted(fields))}")
    missing = [name for name, f in fields.items() if name not in params
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(f'{path}.{k}' for k in missing)}; add {'them' if len(missing) > 1 else 'it'} "
                          "to conf/base/parameters*.yml (or the run's environment)")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in params.items():
        key = f"{path}.{name}"
        values[name] = _convert(value, hints[name], key)
        _check_metadata(values[name], fields[name].metadata, key)
    made = cls(**values)
    for name, f in fields.items():  # defaults obey the same rules (a subclass may change them)
        if name not in values:
            _check_metadata(getattr(made, name), f.metadata, f"{path}.{name}")
    check = getattr(made, "check", None)
    if callable(check):
        check(path)
    return made


def per_ipc(value: Any, ipc: int, name: str) -> Any:
    """A setting given as one value or as {ipc: value} (YAML keys may be ints or digit strings)."""
    if not isinstance(value, Mapping):
        return value
    try:
        table = {int(k): v for k, v in value.items()}
    except ValueError:
        raise ConfigError(f"{name} has keys {sorted(map(str, value))}; its keys are IPCs (ints)") from None
    if ipc not in table:
        raise ConfigError(f"{name} has no entry for ipc {ipc} (has {sorted(table)}); add one")
    return table[ipc]


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (`dataclasses.asdict`, tuples as lists) — what `build` accepts back."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))
