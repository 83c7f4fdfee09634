"""Generators trained on Geant4 showers that ship with calogan: names, files, provenance, figures.

Each shipped model is two files in this folder: ``NAME.pt``, a generator-only calogan
checkpoint (``calogan.checkpoint.strip_checkpoint``: no critic, no optimiser), and
``NAME.json``, its card: geometry, particle, convention, conditions, the training data (file
names and sha256), the training command and budget, and the figures ``calogan evaluate``
measured on held-out Geant4 showers the model never saw. Wherever calogan takes a checkpoint
path it also takes a shipped model's name (``calogan.checkpoint.load_checkpoint`` resolves it),
and ``calogan models`` lists them.

``validation/`` holds small held-out Geant4 samples that ``make demo`` compares the shipped
models with, described in ``validation/README.md``.

>>> resolve("no-such-model-here.pt")  # a path that is not a shipped name stays itself
PosixPath('no-such-model-here.pt')
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from calogan.errors import CaloganError

__all__ = ["FOLDER", "PretrainedError", "card", "model_path", "names", "resolve", "sha256", "validation_path"]

FOLDER = Path(__file__).resolve().parent


class PretrainedError(CaloganError, ValueError):
    """A shipped model's name that does not exist, or a shipped file that is damaged."""


def names() -> list[str]:
    """Names of the shipped models (those with both a card and a checkpoint), sorted."""
    return sorted(p.stem for p in FOLDER.glob("*.json") if (FOLDER / f"{p.stem}.pt").exists())


def _known(name: str) -> None:
    if name not in names():
        raise PretrainedError(f"no shipped model {name!r}; shipped: {', '.join(names()) or 'none'} (calogan models)")


def model_path(name: str) -> Path:
    """The checkpoint file of a shipped model."""
    _known(name)
    return FOLDER / f"{name}.pt"


def card(name: str) -> dict:
    """The card of a shipped model (see the module docstring), with its checkpoint's size."""
    _known(name)
    text = (FOLDER / f"{name}.json").read_text()
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise PretrainedError(f"{FOLDER / (name + '.json')}: not valid JSON ({err})") from None
    return {**info, "name": name, "size_bytes": (FOLDER / f"{name}.pt").stat().st_size}


def resolve(model: str | Path) -> Path:
    """The file behind ``model``: an existing path as it is, else a shipped model's checkpoint
    when ``model`` is a shipped name, else ``model`` as a path (for the caller to report)."""
    path = Path(model)
    if path.exists() or str(model) not in names():
        return path
    return FOLDER / f"{model}.pt"


def validation_path(name: str) -> Path:
    """A held-out Geant4 sample that ships in ``validation/`` (``name`` without ``.h5``)."""
    path = FOLDER / "validation" / f"{name}.h5"
    if not path.exists():
        shipped = sorted(p.stem for p in (FOLDER / "validation").glob("*.h5"))
        raise PretrainedError(f"no shipped validation sample {name!r}; shipped: {', '.join(shipped) or 'none'}")
    return path


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
