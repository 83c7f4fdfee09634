"""The calogan ONNX file: its inputs and output, the metadata it carries, and reading that metadata.

``calogan.export`` writes such files; the onnxruntime backend and ``calogan benchmark`` read
them. The graph maps ``conditions`` (B, n_cond) float32 in physical units and ``noise``
(B, latent_dim) float32 N(0, 1) to ``cells`` (B, n_cells) float32 MeV; the description is kept
in ``metadata_props`` under keys prefixed ``calogan.``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from calogan import __version__
from calogan.errors import CaloganError
from calogan.geometry import Geometry, GeometryError
from calogan.models.base import ConditionSpec

__all__ = ["FORMAT", "FORMAT_VERSION", "INPUTS", "METADATA_PREFIX", "OUTPUT", "ExportError", "OnnxMetadata", "read_metadata"]

FORMAT = "calogan-onnx"
FORMAT_VERSION = 1
INPUTS = ("conditions", "noise")
OUTPUT = "cells"
METADATA_PREFIX = "calogan."  # prefix of every metadata_props key calogan writes


class ExportError(CaloganError):
    """An export that cannot be made or checked, or an ONNX file that is not a calogan export."""


@dataclass(frozen=True)
class OnnxMetadata:
    """The description a calogan ONNX file carries in its ``metadata_props``.

    ``conditions`` is the model's ConditionSpec (the columns of the ``conditions`` input),
    ``latent_dim`` the width of the ``noise`` input, ``attrs`` the rest (convention, particle,
    model step, source checkpoint, parity) as strings or decoded JSON.
    """

    path: Path
    family: str
    geometry: Geometry
    conditions: ConditionSpec
    latent_dim: int
    calogan_version: str
    attrs: dict = field(default_factory=dict)


def read_metadata(path: str | Path) -> OnnxMetadata:
    """The calogan description of an exported ONNX file; errors name the file and the key."""
    import onnx  # an optional dependency (pip install 'calogan[onnx]')

    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends for a file that is not ONNX
        raise ExportError(f"{path}: not a readable ONNX file ({type(err).__name__})") from None
    props = {p.key[len(METADATA_PREFIX) :]: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}
    if props.get("format") != FORMAT:
        raise ExportError(f"{path}: not a calogan ONNX export (metadata key {METADATA_PREFIX}format is not {FORMAT!r})")
    if int(props.get("format_version", "0")) > FORMAT_VERSION:
        raise ExportError(f"{path}: export format {props['format_version']} is newer than this calogan ({__version__}) reads")
    missing = [k for k in ("family", "geometry", "conditions", "latent_dim") if k not in props]
    if missing:
        raise ExportError(f"{path}: metadata lacks {', '.join(METADATA_PREFIX + k for k in missing)}")
    try:
        geometry = Geometry.from_json(props["geometry"])
        spec = ConditionSpec.from_dict(json.loads(props["conditions"]))
        latent_dim = int(props["latent_dim"])
    except (GeometryError, CaloganError, ValueError, KeyError, TypeError) as err:
        raise ExportError(f"{path}: unreadable calogan metadata: {err}") from None
    names = [i.name for i in proto.graph.input]
    if names != list(INPUTS) or [o.name for o in proto.graph.output] != [OUTPUT]:
        raise ExportError(f"{path}: graph inputs {names} and outputs are not calogan's {list(INPUTS)} -> [{OUTPUT!r}]")
    attrs = {}
    for key, value in props.items():
        if key in ("format", "format_version", "version", "family", "geometry", "conditions", "latent_dim"):
            continue
        try:
            attrs[key] = json.loads(value)
        except ValueError:
            attrs[key] = value
    return OnnxMetadata(path, props["family"], geometry, spec, latent_dim, props.get("version", ""), attrs)
