"""Config files: YAML reading with ``extends:``, and frozen config dataclasses built from plain mappings with checks.

A config file may name a base config with ``extends: base.yaml`` (a path relative to the
file itself) and state only what it changes: the base is read first (it may extend another
one), then the file's own keys are laid over it, nested mappings (``model:``,
``transform:``) key by key, anything else replaced whole. A missing base or a cycle of
bases is an error naming the files.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "base.yaml").write_text("batch_size: 128\\nmodel: {latent_dim: 50, lambda_gp: 10.0}\\n")
>>> _ = (folder / "small.yaml").write_text("extends: base.yaml\\nmodel: {latent_dim: 16}\\n")
>>> read_config(folder / "small.yaml")
{'batch_size': 128, 'model': {'latent_dim': 16, 'lambda_gp': 10.0}}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from calogan.errors import ConfigError

__all__ = ["EXTENDS", "config_from_dict", "merge", "read_config", "read_yaml"]

EXTENDS = "extends"


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML file ``path``; unreadable or invalid YAML raises ``ConfigError`` naming
    the file and ``what`` it should have been (e.g. "config", "routing table")."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what} ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def read_config(path: str | Path, what: str = "config") -> Any:
    """A config file's values with its ``extends:`` chain resolved (see the module docstring).

    A file without ``extends:`` is returned as ``read_yaml`` reads it (``None`` when empty).
    """
    return _read_chain(Path(path), what, ())


def _read_chain(path: Path, what: str, seen: tuple[Path, ...]) -> Any:
    here = path.resolve()
    if here in seen:
        chain = " -> ".join(str(p) for p in (*seen[seen.index(here) :], here))
        raise ConfigError(f"{seen[0]}: extends cycle: {chain}")
    values = read_yaml(path, what)
    if not isinstance(values, dict) or EXTENDS not in values:
        return values
    values = dict(values)
    base = values.pop(EXTENDS)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: extends must name a base config file (a path relative to {path.name}), got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends {base!r}, but {base_path} does not exist")
    base_values = _read_chain(base_path, what, (*seen, here))
    if base_values is None:
        base_values = {}
    if not isinstance(base_values, dict):
        raise ConfigError(f"{base_path} (extended by {path}): expected a mapping of options, got {type(base_values).__name__}")
    return merge(base_values, values)


def merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` laid over it: mappings key by key, everything else replaced.

    >>> merge({"lr": 1e-4, "model": {"a": 1, "b": 2}}, {"model": {"b": 3}})
    {'lr': 0.0001, 'model': {'a': 1, 'b': 3}}
    """
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


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
