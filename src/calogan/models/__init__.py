"""Generative model families: a registry of names and the one function that builds a model.

Each family is a ``GANModel`` subclass (``base.py``) in its own module, with a frozen config
dataclass as its ``config_class``. The registry maps the family name used in configs and
checkpoints to ``"module:Class"``, imported only when that family is built.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from pathlib import Path
from typing import Any

from calogan.errors import ConfigError

__all__ = ["FAMILIES", "build_model", "config_from_dict", "family_class", "read_yaml"]

# family name -> "module:Class"; the CaloGAN families add themselves here.
FAMILIES: dict[str, str] = {
    "wgan": "calogan.models.wgan:WGAN",
    "calogan": "calogan.models.calogan:CaloGAN",
    "cond_calogan": "calogan.models.cond_calogan:CondCaloGAN",
}


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML file ``path``; unreadable or invalid YAML raises ``ConfigError`` naming
    the file and ``what`` it should have been (e.g. "config", "routing table")."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what} ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def family_class(family: str) -> type:
    """The GANModel subclass registered as ``family``."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    module, _, name = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name)


def build_model(family: str, geometry, conditions, transform, config_dict: dict | None = None):
    """A fresh model of ``family`` for ``geometry`` with ``conditions`` (ConditionSpec) and
    ``transform`` (ShowerTransform); ``config_dict`` overrides the family's config defaults."""
    cls = family_class(family)
    config = config_from_dict(cls.config_class, config_dict or {}, where="model")
    return cls(geometry, conditions, transform, config)


def config_from_dict(cls: type, values: dict[str, Any], where: str):
    """A frozen config dataclass ``cls`` from a plain dict (YAML), checking keys and types.

    Unknown keys and values of the wrong type raise ``ConfigError`` naming ``where.key``;
    YAML lists become tuples where the field is a tuple.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of options, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown option {prefix}{unknown[0]}; valid options{' of ' + where if where else ''}: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(value, hints[key], f"option {prefix}{key}") for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where or 'config'}: {err}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting lists to tuples and ints to floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if hint is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))) if args else tuple(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value
