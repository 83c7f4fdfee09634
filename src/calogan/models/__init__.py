"""Generative model families: a registry of names and the one function that builds a model.

Each family is a ``GANModel`` subclass (``base.py``) in its own module, with a frozen config
dataclass as its ``config_class``. The registry maps the family name used in configs and
checkpoints to ``"module:Class"``, imported only when that family is built.
"""

from __future__ import annotations

import importlib

from calogan.config import config_from_dict
from calogan.errors import ConfigError

__all__ = ["FAMILIES", "build_model", "family_class"]

# family name -> "module:Class".
FAMILIES: dict[str, str] = {
    "wgan": "calogan.models.wgan:WGAN",
    "calogan": "calogan.models.calogan:CaloGAN",
    "cond_calogan": "calogan.models.cond_calogan:CondCaloGAN",
    "gan3d": "calogan.models.gan3d:GAN3D",
    "vae": "calogan.models.vae:VAE",
}


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
