"""Self-describing checkpoints: what the model is, its weights and everything to resume it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from calogan import __version__
from calogan.errors import CaloganError
from calogan.geometry import Geometry, GeometryError
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.runtime import AtomicOutput
from calogan.transforms import ShowerTransform

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "calogan-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(CaloganError):
    """A checkpoint file that cannot be read or does not describe a calogan model."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (in eval mode) and what came with it.

    ``train_config`` is the TrainConfig as a plain dict (``calogan.training.TrainConfig.
    from_dict`` turns it back); ``training`` holds the optimiser, RNG and data-order state a
    resumed run needs (``None`` in a checkpoint kept only to generate, such as ``best.pt``);
    ``data_attrs`` are the training file's attributes (particle, convention, ...).
    """

    path: Path
    model: Any
    family: str
    step: int
    train_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    data_attrs: dict = field(default_factory=dict)
    training: dict | None = None
    calogan_version: str = ""


def save_checkpoint(
    path: str | Path,
    model,
    *,
    step: int,
    train_config: dict | None = None,
    metrics: dict | None = None,
    data_attrs: dict | None = None,
    training: dict | None = None,
) -> Path:
    """Write ``model`` and its description to ``path`` atomically (``calogan.runtime.AtomicOutput``;
    an existing file is replaced).

    The file holds the model family and its config, the weights, the transform state, the
    ConditionSpec, the geometry JSON, the TrainConfig, the calogan version and ``step``, plus
    ``training`` (optimiser and RNG states) when given.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "calogan_version": __version__,
        "family": model.family,
        "model_config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "transform": model.transform.to_dict(),
        "conditions": model.conditions.to_dict(),
        "geometry": model.geometry.to_json(),
        "train_config": dict(train_config or {}),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "data_attrs": dict(data_attrs or {}),
        "training": training,
    }
    with AtomicOutput(path, force=True, error=CheckpointError) as out:
        torch.save(payload, out.tmp)
    return path


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint and rebuild its model on ``device``, in eval mode, ready to generate.

    The one loader: generation, evaluation, export and ``--resume`` all come through here.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; pass a checkpoint file such as {path / 'best.pt'}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not its own
        raise CheckpointError(f"{path}: not a readable calogan checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a calogan checkpoint (no '{FORMAT}' marker)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {payload['format_version']} is newer than this calogan ({__version__}) reads ({FORMAT_VERSION})"
        )
    missing = [k for k in ("family", "model_config", "state_dict", "transform", "conditions", "geometry", "step") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    try:
        geometry = Geometry.from_json(payload["geometry"])
    except GeometryError as err:
        raise CheckpointError(f"{path}: {err}") from None
    try:
        model = build_model(
            payload["family"],
            geometry,
            ConditionSpec.from_dict(payload["conditions"]),
            ShowerTransform.from_dict(payload["transform"]),
            payload["model_config"],
        )
        model.load_state_dict(payload["state_dict"], strict=True)
    except (CaloganError, RuntimeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the {payload['family']!r} model: {err}") from None
    model.to(device).eval()
    return Checkpoint(
        path=path,
        model=model,
        family=payload["family"],
        step=int(payload["step"]),
        train_config=payload.get("train_config") or {},
        metrics=payload.get("metrics") or {},
        data_attrs=payload.get("data_attrs") or {},
        training=payload.get("training"),
        calogan_version=payload.get("calogan_version", ""),
    )
