"""The one configuration mechanism: validated dataclasses (pydantic v2) with physical bounds and one-line errors.

Every ``*Config`` of the library and every recipe section is declared with :func:`config`::

    @config
    class OptimConfig:
        lr: PosFloat = 1e-3                 # > 0 and finite
        weight_decay: NonNegFloat = 0.0     # >= 0
        schedule: Literal["none", "step", "cosine"] = "cosine"

The result is still a standard :mod:`dataclasses` dataclass (``dataclasses.fields``, ``asdict`` and ``replace`` work)
whose constructor validates types, ``Literal`` choices and bounds, rejects unknown keys and NaN/inf, and raises one
:class:`~spikeforge.errors.ConfigError` naming the key and what is allowed. Assignment is validated too.
:func:`from_dict` builds one from a mapping (a recipe section), :func:`json_schema` gives its JSON Schema (what
``spikeforge schema`` writes for editors).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from spikeforge.errors import ConfigError

__all__ = ["ConfigError", "Finite", "Fraction", "NonNegFloat", "NonNegInt", "PosFloat", "PosInt", "Probability",
           "config", "config_error", "from_dict", "json_schema"]

T = TypeVar("T")

#: Shared pydantic settings: unknown keys are errors, values are re-validated on assignment, NaN/inf rejected,
#: no silent coercion of strings to numbers (beyond the YAML float spellings below) or of numbers to strings.
SETTINGS = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True,
                      arbitrary_types_allowed=True)


def _yaml_float(v: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; accept it (and ints) as a float, refuse bools."""
    if isinstance(v, bool):
        raise ValueError("must be a number, not true/false")
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise ValueError(f"must be a number, got the string {v!r}") from None
    if isinstance(v, int):
        v = float(v)
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v}")
    return v


Finite = Annotated[float, BeforeValidator(_yaml_float)]
PosFloat = Annotated[float, Field(gt=0), BeforeValidator(_yaml_float)]
NonNegFloat = Annotated[float, Field(ge=0), BeforeValidator(_yaml_float)]
Fraction = Annotated[float, Field(ge=0, le=1), BeforeValidator(_yaml_float)]
Probability = Fraction
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]


def _loc(loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p not in ("function-before", "function-after") and not str(p).startswith(("constrained-", "lax-")):
            parts.append(("." if parts else "") + str(p))
    return "".join(parts)


def config_error(exc: ValidationError, where: str, allowed: list[str] | None = None) -> ConfigError:
    """One line from a pydantic error: ``where.key: what is wrong (got value)``."""
    err = exc.errors(include_url=False)[0]
    key = _loc(err.get("loc", ()))
    full = f"{where}.{key}" if key else where
    kind = err.get("type", "")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        hint = f"; allowed: {sorted(allowed)}" if allowed else ""
        return ConfigError(f"unknown key {key!r} in {where}{hint}")
    if kind == "missing_argument" or kind == "missing":
        return ConfigError(f"{full} is required")
    msg = err.get("msg", "invalid value")
    original = (err.get("ctx") or {}).get("error")
    from_check = isinstance(original, Exception) and bool(str(original))
    if from_check:
        msg = str(original)
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    value = err.get("input")
    got = "" if from_check or isinstance(value, (dict, dataclasses.Field)) else f", got {value!r}"
    if isinstance(original, ConfigError):  # a __post_init__ check already wrote the whole sentence
        return ConfigError(msg if where in msg or not key else f"{where}: {msg}")
    return ConfigError(f"{full}: {msg}{got}")


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def config(cls: type[T] | None = None, *, where: str | None = None):
    """Class decorator: a validated dataclass (see the module docstring). ``where`` names it in error messages
    (default: the class name)."""

    def wrap(c):
        pc = _pydantic_dataclass(c, config=SETTINGS)
        label = where or c.__name__
        init = pc.__init__
        setattr_ = pc.__setattr__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            try:
                init(self, *args, **kwargs)
            except ValidationError as exc:
                raise config_error(exc, label, _field_names(pc)) from None

        def __setattr__(self, name, value):
            try:
                setattr_(self, name, value)
            except ValidationError as exc:
                raise config_error(exc, label, _field_names(pc)) from None

        pc.__init__ = __init__
        pc.__setattr__ = __setattr__
        return pc

    return wrap(cls) if cls is not None else wrap


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build config ``cls`` from a mapping (e.g. a recipe section); any problem is one :class:`ConfigError`
    prefixed with ``where``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} keys, got {data!r}")
    names = _field_names(cls)
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(names)}")
    try:
        return cls(**data)
    except ConfigError as exc:
        msg = str(exc)
        label = cls.__name__
        if msg.startswith(label):
            msg = where + msg[len(label):]
        elif not msg.startswith(where):
            msg = f"{where}: {msg}"
        raise ConfigError(msg) from None


def json_schema(cls) -> dict:
    """JSON Schema of config ``cls`` (draft 2020-12, as pydantic writes it)."""
    return TypeAdapter(cls).json_schema()
