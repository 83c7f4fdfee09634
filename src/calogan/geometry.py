"""Calorimeter geometry as data: layers of cells, their sizes, depths and materials."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calogan.errors import CaloganError

__all__ = [
    "MATERIALS",
    "PRESETS",
    "Geometry",
    "GeometryError",
    "Layer",
    "Material",
    "from_calochallenge_xml",
    "load_geometry",
    "preset",
]


class GeometryError(CaloganError, ValueError):
    """A geometry specification that cannot be used."""


@dataclass(frozen=True)
class Material:
    """Electromagnetic and hadronic constants of a material (PDG values).

    Lengths in mm, energies in MeV, density in g/cm^3.
    """

    name: str
    z: float
    a: float
    density: float
    x0: float  # radiation length
    moliere_radius: float
    critical_energy: float  # Rossi definition, for electrons
    interaction_length: float  # nuclear interaction length lambda_I


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("Pb", 82, 207.2, 11.35, 5.612, 16.02, 7.43, 175.9),
        Material("LAr", 18, 39.95, 1.396, 140.0, 90.43, 32.84, 857.7),
        Material("W", 74, 183.84, 19.3, 3.504, 9.327, 7.97, 99.46),
        Material("Si", 14, 28.09, 2.329, 93.70, 48.82, 40.19, 465.2),
        Material("Fe", 26, 55.85, 7.874, 17.57, 16.93, 21.68, 167.7),
    )
}


@dataclass(frozen=True)
class Layer:
    """One longitudinal layer of a calorimeter: a 2-D grid of cells.

    ``shape`` is (rows, cols). For ``binning="cartesian"`` the row index runs along x and
    the column index along y, cells of ``cell_size`` = (dx, dy) mm centred on the beam axis.
    For ``binning="polar"`` (CaloChallenge) rows are azimuthal bins alpha in [-pi, pi) and
    columns radial bins with edges ``r_edges`` (mm); ``cell_size`` is then unused.

    ``depth`` is the layer thickness along the beam in mm (``None`` when unknown, as in a
    CaloChallenge binning file). The layer is a stack of ``absorber_thickness`` mm of
    ``absorber`` and ``active_thickness`` mm of ``active`` material; ``absorber=None`` is a
    purely active layer (a presampler).

    >>> Layer("strips", (3, 96), (160.0, 5.0), 90.0).n_cells
    288
    """

    name: str
    shape: tuple[int, int]
    cell_size: tuple[float, float] | None = None
    depth: float | None = None
    absorber: str | None = "Pb"
    absorber_thickness: float = 2.0
    active: str = "LAr"
    active_thickness: float = 4.0
    binning: str = "cartesian"
    r_edges: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.cell_size is not None:
            object.__setattr__(self, "cell_size", tuple(float(s) for s in self.cell_size))
        if self.r_edges is not None:
            object.__setattr__(self, "r_edges", tuple(float(r) for r in self.r_edges))
        where = f"layer {self.name!r}"
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise GeometryError(f"{where}: shape must be two positive integers, got {self.shape}")
        if self.binning == "cartesian":
            if self.cell_size is None or len(self.cell_size) != 2 or min(self.cell_size) <= 0:
                raise GeometryError(f"{where}: cell_size must be two positive lengths in mm")
        elif self.binning == "polar":
            edges = self.r_edges
            if edges is None or len(edges) != self.shape[1] + 1:
                raise GeometryError(f"{where}: r_edges must hold shape[1] + 1 = {self.shape[1] + 1} values")
            if np.any(np.diff(edges) <= 0) or edges[0] < 0:
                raise GeometryError(f"{where}: r_edges must be non-negative and increasing, got {edges}")
        else:
            raise GeometryError(f"{where}: binning must be 'cartesian' or 'polar', got {self.binning!r}")
        if self.depth is not None and not self.depth > 0:
            raise GeometryError(f"{where}: depth must be positive, got {self.depth}")
        for mat in (self.absorber, self.active):
            if mat is not None and mat not in MATERIALS:
                raise GeometryError(f"{where}: unknown material {mat!r}; known: {', '.join(MATERIALS)}")
        if self.absorber_thickness < 0 or self.active_thickness <= 0:
            raise GeometryError(f"{where}: absorber thickness must be >= 0 and active thickness > 0")

    @property
    def n_cells(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def period(self) -> float:
        """Thickness of one absorber + active sampling period in mm."""
        return (self.absorber_thickness if self.absorber else 0.0) + self.active_thickness

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Cell-centre coordinates (x, y) in mm, each of shape ``self.shape``."""
        rows, cols = self.shape
        if self.binning == "cartesian":
            dx, dy = self.cell_size
            x = (np.arange(rows) - (rows - 1) / 2) * dx
            y = (np.arange(cols) - (cols - 1) / 2) * dy
            return np.meshgrid(x, y, indexing="ij")
        edges = np.asarray(self.r_edges)
        r_mid = 0.5 * (edges[:-1] + edges[1:])
        alpha_mid = -math.pi + (np.arange(rows) + 0.5) * (2 * math.pi / rows)
        alpha, r = np.meshgrid(alpha_mid, r_mid, indexing="ij")
        if rows == 1:  # no azimuthal segmentation: the centroid of a full ring is the axis
            return np.zeros_like(r), np.zeros_like(r)
        return r * np.cos(alpha), r * np.sin(alpha)

    def cell_areas(self) -> np.ndarray:
        """Transverse area of each cell in mm^2, shape ``self.shape``."""
        if self.binning == "cartesian":
            return np.full(self.shape, self.cell_size[0] * self.cell_size[1])
        edges = np.asarray(self.r_edges)
        ring = math.pi * (edges[1:] ** 2 - edges[:-1] ** 2) / self.shape[0]
        return np.broadcast_to(ring, self.shape).copy()


@dataclass(frozen=True)
class Geometry:
    """A calorimeter: an ordered tuple of layers the particle crosses front to back.

    Showers are stored flat, shape (N, n_cells), layers concatenated in order and each
    layer row-major; ``split`` and ``flatten`` convert to and from per-layer views.

    >>> g = preset("calogan")
    >>> g.n_cells, [layer.shape for layer in g.layers]
    (504, [(3, 96), (12, 12), (12, 6)])
    >>> [a.shape for a in g.split(np.zeros((5, 504)))]
    [(5, 3, 96), (5, 12, 12), (5, 12, 6)]
    """

    name: str
    layers: tuple[Layer, ...]
    description: str = ""
    offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise GeometryError(f"geometry {self.name!r} has no layers")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise GeometryError(f"geometry {self.name!r}: layer names must be unique, got {names}")
        offsets = np.concatenate([[0], np.cumsum([layer.n_cells for layer in self.layers])])
        object.__setattr__(self, "offsets", tuple(int(o) for o in offsets))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_cells(self) -> int:
        return self.offsets[-1]

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [layer.shape for layer in self.layers]

    def layer_slice(self, i: int) -> slice:
        """Columns of layer ``i`` in the flat cell vector."""
        return slice(self.offsets[i], self.offsets[i + 1])

    def split(self, flat):
        """(N, n_cells) -> list of (N, rows, cols), one view per layer (numpy or torch)."""
        if flat.shape[-1] != self.n_cells:
            raise GeometryError(f"geometry {self.name!r} has {self.n_cells} cells, got an array of shape {tuple(flat.shape)}")
        lead = tuple(flat.shape[:-1])
        return [flat[..., self.layer_slice(i)].reshape(lead + layer.shape) for i, layer in enumerate(self.layers)]

    def flatten(self, per_layer: Sequence):
        """List of (N, rows, cols) -> (N, n_cells); the inverse of ``split``."""
        if len(per_layer) != self.n_layers:
            raise GeometryError(f"geometry {self.name!r} has {self.n_layers} layers, got {len(per_layer)} arrays")
        parts = []
        for layer, a in zip(self.layers, per_layer):
            if tuple(a.shape[-2:]) != layer.shape:
                raise GeometryError(f"layer {layer.name!r} has shape {layer.shape}, got {tuple(a.shape)}")
            parts.append(a.reshape(tuple(a.shape[:-2]) + (layer.n_cells,)))
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts, axis=-1)
        import torch  # only reached with torch tensors, so torch is already imported

        return torch.cat(parts, dim=-1)

    def layer_sums(self, flat: np.ndarray) -> np.ndarray:
        """(N, n_cells) -> (N, n_layers) energy per layer."""
        return np.stack([flat[:, self.layer_slice(i)].sum(axis=1) for i in range(self.n_layers)], axis=1)

    def layer_of_cell(self) -> np.ndarray:
        """(n_cells,) layer index of every flat cell."""
        return np.repeat(np.arange(self.n_layers), [layer.n_cells for layer in self.layers])

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat (n_cells,) x and y cell-centre coordinates in mm."""
        xs, ys = zip(*(layer.cell_centres() for layer in self.layers))
        return np.concatenate([x.ravel() for x in xs]), np.concatenate([y.ravel() for y in ys])

    def layer_boundaries(self) -> np.ndarray:
        """(n_layers + 1,) z of the layer faces in mm, front face at 0; needs every depth."""
        depths = [layer.depth for layer in self.layers]
        if any(d is None for d in depths):
            raise GeometryError(f"geometry {self.name!r} does not define every layer depth")
        return np.concatenate([[0.0], np.cumsum(depths)])

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "description": self.description, "layers": [asdict(layer) for layer in self.layers]}
        return json.loads(json.dumps(d))  # tuples -> lists, so the dict round-trips through JSON/YAML

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        try:
            layers = tuple(Layer(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in ld.items()}) for ld in d["layers"])
            return cls(name=d["name"], layers=layers, description=d.get("description", ""))
        except (KeyError, TypeError) as err:
            raise GeometryError(f"not a geometry description: {err}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Geometry:
        return cls.from_dict(json.loads(text))


def _calogan() -> Geometry:
    # Paganini, de Oliveira, Nachman, arXiv:1705.02355: 480 mm cube of 2 mm Pb / 4 mm LAr.
    return Geometry(
        "calogan",
        (
            Layer("layer_0", (3, 96), (160.0, 5.0), 90.0),
            Layer("layer_1", (12, 12), (40.0, 40.0), 347.0),
            Layer("layer_2", (12, 6), (40.0, 80.0), 43.0),
        ),
        "CaloGAN 3-layer Pb/LAr calorimeter (arXiv:1705.02355)",
    )


def _atlas_barrel() -> Geometry:
    # ATLAS LAr EM barrel slice around |eta| = 0.225, 266 cells, as in the ATLAS GAN studies (AtlFast3,
    # arXiv:2109.02551; ATL-SOFT-PUB-2020-006). Cell sizes are the
    # eta x phi granularity converted to mm at each layer's radius; depths are the nominal
    # 4.3, 16 and 2 X0 of the strips, middle and back with 1.53 mm Pb / 4.2 mm LAr accordion
    # periods, in front of which sits an 11 mm active LAr presampler.
    return Geometry(
        "atlas-barrel",
        (
            Layer("presampler", (7, 3), (37.0, 145.0), 11.0, absorber=None, absorber_thickness=0.0, active_thickness=11.0),
            Layer("strips", (56, 3), (4.8, 150.0), 81.0, "Pb", 1.53, "LAr", 4.2),
            Layer("middle", (7, 7), (42.0, 40.0), 302.0, "Pb", 1.53, "LAr", 4.2),
            Layer("back", (4, 7), (97.0, 47.0), 38.0, "Pb", 1.53, "LAr", 4.2),
        ),
        "ATLAS-like LAr EM barrel slice at |eta| ~ 0.225: presampler, strips, middle, back",
    )


def _voxel_25() -> Geometry:
    # The CERN 3D GAN's LCD/CLIC ECAL (Khattak, Vallecorsa and Carminati, "Three Dimensional Energy
    # Parametrized Generative Adversarial Networks for Electromagnetic Shower Simulation", IEEE ICIP
    # 2018): a 25 x 25 x 25 block of 5.1 mm W/Si cells; one
    # layer per longitudinal slice so that every layer-wise observable applies unchanged.
    return Geometry(
        "voxel-25",
        tuple(Layer(f"z{i:02d}", (25, 25), (5.1, 5.1), 3.3, "W", 2.8, "Si", 0.5) for i in range(25)),
        "25 x 25 x 25 voxel block of a W/Si ECAL (CERN 3D-GAN)",
    )


PRESETS = {"calogan": _calogan, "atlas-barrel": _atlas_barrel, "voxel-25": _voxel_25}


def preset(name: str) -> Geometry:
    """A built-in geometry by name: ``calogan``, ``atlas-barrel`` or ``voxel-25``."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise GeometryError(
            f"unknown geometry {name!r}; presets: {', '.join(PRESETS)}, or a CaloChallenge binning .xml or a geometry .json"
        ) from None


def from_calochallenge_xml(path: str | Path, particle: str | None = None) -> Geometry:
    """Geometry from a CaloChallenge binning XML (``<Bin>`` elements of ``<Layer>`` with
    ``r_edges`` and ``n_bin_alpha``). Layers without voxels (``r_edges="0"``) are skipped, as
    the CaloChallenge flattening skips them. With several ``<Bin>`` elements, ``particle``
    picks one by its ``name``.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise GeometryError(f"{path}: not a readable binning XML ({err})") from None
    bins = [el for el in root.iter() if el.find("Layer") is not None]
    if particle is not None:
        bins = [b for b in bins if b.get("name") == particle]
    if len(bins) != 1:
        names = [b.get("name") for b in root.iter() if b.find("Layer") is not None]
        raise GeometryError(f"{path}: expected one particle binning{'' if particle is None else f' named {particle!r}'}, found {names}")
    layers = []
    for el in bins[0].findall("Layer"):
        lid = el.get("id")
        try:
            edges = [float(v) for v in el.get("r_edges", "").split(",") if v.strip()]
            n_alpha = int(el.get("n_bin_alpha", "1"))
        except ValueError:
            raise GeometryError(f"{path}: layer {lid}: r_edges and n_bin_alpha must be numbers") from None
        if len(edges) < 2:
            continue
        if n_alpha < 1:
            raise GeometryError(f"{path}: layer {lid}: n_bin_alpha must be >= 1, got {n_alpha}")
        try:
            layers.append(Layer(f"layer_{lid}", (n_alpha, len(edges) - 1), binning="polar", r_edges=tuple(edges)))
        except GeometryError as err:
            raise GeometryError(f"{path}: {err}") from None
    if not layers:
        raise GeometryError(f"{path}: no layer with voxels")
    name = bins[0].get("name") or path.stem
    return Geometry(f"calochallenge:{path.stem}", tuple(layers), f"CaloChallenge binning {path.name} ({name})")


def load_geometry(spec: str | Path | Geometry) -> Geometry:
    """A geometry from a preset name, a CaloChallenge binning ``.xml`` or a ``.json`` dump."""
    if isinstance(spec, Geometry):
        return spec
    text = str(spec)
    if text in PRESETS:
        return preset(text)
    path = Path(text)
    if path.suffix.lower() == ".xml":
        return from_calochallenge_xml(path)
    if path.suffix.lower() == ".json":
        try:
            return Geometry.from_json(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise GeometryError(f"{path}: not a readable geometry JSON ({err})") from None
    return preset(text)
