"""Self-describing checkpoints: what the model is, its weights and everything to resume it."""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from calogan import __version__, pretrained
from calogan.errors import CaloganError
from calogan.geometry import Geometry, GeometryError
from calogan.marginals import MarginalCalibration
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.runtime import AtomicOutput
from calogan.transforms import ShowerTransform

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "CheckpointError",
    "load_checkpoint",
    "recognise",
    "save_checkpoint",
    "strip_checkpoint",
]

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
    generator_only: bool = False,
) -> Path:
    """Write ``model`` and its description to ``path`` atomically (``calogan.runtime.AtomicOutput``;
    an existing file is replaced). ``generator_only`` leaves out the discriminator's weights
    (what a shipped model needs: a third to a half of the file).

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
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items() if not (generator_only and k in _critic_keys(model))},
        "generator_only": bool(generator_only),
        "transform": model.transform.to_dict(),
        "conditions": model.conditions.to_dict(),
        "geometry": model.geometry.to_json(),
        "train_config": dict(train_config or {}),
        "step": int(step),
        "metrics": dict(metrics or {}),
        "data_attrs": dict(data_attrs or {}),
        "training": training,
        "calibration": model.calibration.to_dict() if getattr(model, "calibration", None) is not None else None,
    }
    with AtomicOutput(path, force=True, error=CheckpointError) as out, open(out.tmp, "wb") as f:
        torch.save(payload, f)  # a file object: the archive's inner folder is "archive", not the temporary's name
    return path


def recognise(path: str | Path) -> Path:
    """Check that ``path`` looks like a checkpoint before anything unpickles it; returns it as a Path.

    A calogan checkpoint is a zip archive written by ``torch.save`` (a ``data.pkl`` inside).
    Refused with a ``CheckpointError`` naming the file and what it is instead: a missing file,
    a folder, an empty file, an HDF5 file (showers), an ONNX export, torch's legacy pickle
    format, any other zip archive, a truncated archive, anything else.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; pass a checkpoint file such as {path / 'best.pt'}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read it ({err.strerror})") from None
    if not head:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint")
    if head.startswith(b"\x89HDF"):
        raise CheckpointError(f"{path}: an HDF5 file (showers?), not a checkpoint")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path}: an ONNX export, not a checkpoint; calogan generate runs it (--backend onnxruntime)")
    if head[:1] == b"\x80":
        raise CheckpointError(f"{path}: a pickle in torch's legacy format, not a calogan checkpoint (a zip archive); not loaded")
    if not head.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"{path}: not a calogan checkpoint (it does not start like the zip archive torch.save writes)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: a truncated or damaged checkpoint ({err})") from None
    if not any(name.endswith("/data.pkl") for name in names):
        raise CheckpointError(f"{path}: a zip archive but not a torch checkpoint (no data.pkl inside)")
    return path


def _critic_keys(model) -> set[str]:
    """State-dict keys of the discriminator's parameters."""
    critic = {id(p) for p in model.discriminator_parameters()}
    return {name for name, p in model.named_parameters() if id(p) in critic}


def strip_checkpoint(source: str | Path, target: str | Path, *, force: bool = False) -> Path:
    """Write the generator of checkpoint ``source`` to ``target``: no discriminator, no training state.

    The model family, config, transform, conditions, geometry, training config, step and
    metrics stay, so ``target`` generates, exports and is described exactly as ``source``.
    """
    ckpt = load_checkpoint(source)
    target = Path(target)
    if target.exists() and not force:
        raise CheckpointError(f"{target}: exists already (pass force=True to replace it)")
    return save_checkpoint(
        target,
        ckpt.model,
        step=ckpt.step,
        train_config=ckpt.train_config,
        metrics=ckpt.metrics,
        data_attrs=ckpt.data_attrs,
        generator_only=True,
    )


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint and rebuild its model on ``device``, in eval mode, ready to generate.

    The one loader: generation, evaluation, export and ``--resume`` all come through here.
    ``path`` may also be the name of a model that ships with calogan (``calogan.pretrained``).
    A generator-only checkpoint gets a critic of zeros: it generates, it does not train.
    """
    path = pretrained.resolve(path)
    if not path.exists() and pretrained.names():
        raise CheckpointError(f"{path}: no such checkpoint (nor a shipped model: {', '.join(pretrained.names())})")
    recognise(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a file that is not its own
        first = (str(err).splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a readable calogan checkpoint ({type(err).__name__}{': ' + first if first else ''})") from None
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
        if payload.get("generator_only"):
            _load_generator_only(model, payload["state_dict"])
        else:
            model.load_state_dict(payload["state_dict"], strict=True)
        if payload.get("calibration") is not None:
            model.calibration = MarginalCalibration(payload["calibration"])
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


def _load_generator_only(model, state: dict) -> None:
    """Load a generator-only state dict: exactly the discriminator's weights may be missing (zeroed)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    critic = _critic_keys(model)
    if unexpected or set(missing) - critic:
        raise RuntimeError(
            f"generator-only weights do not fit the model (missing {sorted(set(missing) - critic)[:3]}, unexpected {unexpected[:3]})"
        )
    with torch.no_grad():
        for p in model.discriminator_parameters():
            p.zero_()
