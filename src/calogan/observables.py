"""Shower-shape observables: pure vectorised functions of cell energies on any geometry.

Definitions follow the CaloGAN analysis code (arXiv:1712.10321).
Every function takes ``cells`` (N, n_cells) in MeV, flat in ``geometry`` order, and returns
float64 arrays, (N,) for whole-shower quantities or (N, n_layers) for per-layer ones.

Undefined values are NaN, never a warning: a ratio whose denominator is zero (the fractions,
shower depth and its width of an all-zero shower; the centroid, width and E_ratio of an empty
layer) is NaN. Energies, counts and sparsity of an empty shower are 0. ``calogan.metrics``
drops NaN entries explicitly and reports how many it dropped.

Layer index ``i`` counts from 0 at the front, as in the CaloGAN code, so a shower entirely
in the first layer has shower depth 0. Centroids and widths use the cell-centre coordinates
of ``Layer.cell_centres`` (mm; rows along x, columns along y), so polar CaloChallenge layers
work unchanged.

>>> import numpy as np
>>> from calogan.geometry import preset
>>> g = preset("calogan")
>>> cells = np.zeros((1, g.n_cells)); cells[0, g.offsets[1]] = 10.0; cells[0, g.offsets[2]] = 30.0
>>> shower_depth(cells, g).tolist(), layer_energies(cells, g).tolist()
([1.75], [[0.0, 10.0, 30.0]])
"""

from __future__ import annotations

import numpy as np

from calogan.geometry import Geometry

__all__ = [
    "PER_LAYER",
    "SHOWER_LEVEL",
    "apply_threshold",
    "cell_spectrum",
    "centroid",
    "core_fraction",
    "depth_width",
    "e_ratio",
    "energy_fractions",
    "high_level",
    "hottest_cell",
    "layer_energies",
    "layer_hits",
    "n_hit",
    "observable_label",
    "observable_names",
    "observable_unit",
    "radial_bin_edges",
    "radial_profile",
    "response",
    "ring_energy",
    "ring_hits",
    "shower_depth",
    "sparsity",
    "total_energy",
    "width",
]

# Whole-shower observables (name -> (label, unit)), then the per-layer ones, whose names
# get the layer name appended: ``e_layer_0``, ``centroid_x_layer_1`` ...
SHOWER_LEVEL: dict[str, tuple[str, str]] = {
    "e_tot": ("E_tot", "MeV"),
    "response": ("E_tot / E_inc", ""),
    "shower_depth": ("shower depth s_d", "layers"),
    "depth_width": ("shower depth width σ_sd", "layers"),
    "n_hit": ("hit cells", "cells"),
}
PER_LAYER: dict[str, tuple[str, str]] = {
    "e": ("E", "MeV"),
    "frac": ("E / E_tot", ""),
    "centroid_x": ("centroid x", "mm"),
    "centroid_y": ("centroid y", "mm"),
    "width_x": ("width x", "mm"),
    "width_y": ("width y", "mm"),
    "sparsity": ("sparsity", ""),
    "e_ratio": ("E_ratio", ""),
    "e_max": ("hottest cell", "MeV"),
}


def _as_cells(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    cells = np.asarray(cells, dtype=np.float64)
    if cells.ndim != 2 or cells.shape[1] != geometry.n_cells:
        raise ValueError(f"cells must have shape (N, {geometry.n_cells}) for geometry {geometry.name!r}, got {cells.shape}")
    return cells


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (no division warning)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def apply_threshold(cells: np.ndarray, threshold: float) -> np.ndarray:
    """(N, n_cells) with cells at or below ``threshold`` MeV set to 0 (a readout threshold)."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 MeV, got {threshold}")
    cells = np.asarray(cells, dtype=np.float64)
    return np.where(cells > threshold, cells, 0.0) if threshold > 0 else cells


def layer_energies(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) energy per layer E_i in MeV."""
    cells = _as_cells(cells, geometry)
    return np.stack([cells[:, geometry.layer_slice(i)].sum(axis=1) for i in range(geometry.n_layers)], axis=1)


def total_energy(cells: np.ndarray) -> np.ndarray:
    """(N, n_cells) -> (N,) E_tot in MeV."""
    return np.asarray(cells, dtype=np.float64).sum(axis=1)


def energy_fractions(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) f_i = E_i / E_tot; NaN for an all-zero shower."""
    e = layer_energies(cells, geometry)
    return _ratio(e, e.sum(axis=1, keepdims=True))


def response(cells: np.ndarray, e_inc: np.ndarray) -> np.ndarray:
    """(N, n_cells), (N,) GeV -> (N,) E_tot / E_inc (cells in MeV, so E_tot / (1000 E_inc))."""
    e_inc = np.asarray(e_inc, dtype=np.float64).reshape(-1)
    e_tot = total_energy(cells)
    if e_inc.shape != e_tot.shape:
        raise ValueError(f"e_inc has {e_inc.shape[0]} entries for {e_tot.shape[0]} showers")
    if (e_inc <= 0).any():
        raise ValueError("incident energies must be > 0 GeV")
    return e_tot / (1000.0 * e_inc)


def shower_depth(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(N, n_cells) -> (N,) s_d = Σ_i i E_i / E_tot (layer index i from 0); NaN if E_tot = 0."""
    e = layer_energies(cells, geometry)
    return _ratio(e @ np.arange(geometry.n_layers, dtype=np.float64), e.sum(axis=1))


def depth_width(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(N, n_cells) -> (N,) σ_sd = sqrt(Σ i² E_i / E_tot − s_d²); NaN if E_tot = 0."""
    e = layer_energies(cells, geometry)
    i = np.arange(geometry.n_layers, dtype=np.float64)
    e_tot = e.sum(axis=1)
    var = _ratio(e @ i**2, e_tot) - _ratio(e @ i, e_tot) ** 2
    return np.sqrt(np.clip(var, 0.0, None))  # rounding can make a zero variance slightly negative


def _axis(axis: str) -> int:
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    return 0 if axis == "x" else 1


def _moments(cells: np.ndarray, geometry: Geometry, axis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer (N, n_layers): E_i, Σ E x and Σ E x² along ``axis`` (mm)."""
    cells = _as_cells(cells, geometry)
    coord = geometry.cell_centres()[_axis(axis)]
    e, m1, m2 = (np.empty((cells.shape[0], geometry.n_layers)) for _ in range(3))
    for i in range(geometry.n_layers):
        sl = geometry.layer_slice(i)
        c, x = cells[:, sl], coord[sl]
        e[:, i], m1[:, i], m2[:, i] = c.sum(axis=1), c @ x, c @ x**2
    return e, m1, m2


def centroid(cells: np.ndarray, geometry: Geometry, axis: str = "x") -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) energy-weighted mean cell-centre coordinate in mm; NaN for an empty layer."""
    e, m1, _ = _moments(cells, geometry, axis)
    return _ratio(m1, e)


def width(cells: np.ndarray, geometry: Geometry, axis: str = "x") -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) energy-weighted standard deviation of the coordinate in mm; NaN for an empty layer."""
    e, m1, m2 = _moments(cells, geometry, axis)
    var = _ratio(m2, e) - _ratio(m1, e) ** 2
    return np.sqrt(np.clip(var, 0.0, None))


def sparsity(cells: np.ndarray, geometry: Geometry, threshold: float = 0.0) -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) fraction of a layer's cells with energy > ``threshold`` MeV (CaloGAN's definition)."""
    cells = _as_cells(cells, geometry)
    hit = cells > threshold
    return np.stack([hit[:, geometry.layer_slice(i)].mean(axis=1) for i in range(geometry.n_layers)], axis=1)


def n_hit(cells: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """(N, n_cells) -> (N,) number of cells with energy > ``threshold`` MeV."""
    return (np.asarray(cells) > threshold).sum(axis=1).astype(np.float64)


def e_ratio(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) (E_max1 − E_max2) / (E_max1 + E_max2) of the two hottest cells per layer.

    NaN for an empty layer; 1 when one cell holds all of the layer's energy (including a
    one-cell layer).
    """
    cells = _as_cells(cells, geometry)
    out = np.empty((cells.shape[0], geometry.n_layers))
    for i, layer in enumerate(geometry.layers):
        c = cells[:, geometry.layer_slice(i)]
        if layer.n_cells == 1:
            top1, top2 = c[:, 0], np.zeros(len(c))
        else:
            top = np.partition(c, layer.n_cells - 2, axis=1)[:, -2:]  # (N, 2): second-hottest, hottest
            top2, top1 = top[:, 0], top[:, 1]
        out[:, i] = _ratio(top1 - top2, top1 + top2)
    return out


def hottest_cell(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) energy of the hottest cell of each layer in MeV."""
    cells = _as_cells(cells, geometry)
    return np.stack([cells[:, geometry.layer_slice(i)].max(axis=1) for i in range(geometry.n_layers)], axis=1)


def cell_spectrum(cells: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """(N, n_cells) -> (K,) energies in MeV of all cells above ``threshold``, pooled over showers.

    The cell-energy spectrum is a property of the sample, not of each shower, so it has no
    per-shower entry in ``high_level``.
    """
    cells = np.asarray(cells)
    return cells[cells > threshold].astype(np.float64)


def layer_hits(cells: np.ndarray, geometry: Geometry, threshold: float = 0.0) -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) number of each layer's cells with energy > ``threshold`` MeV."""
    hit = _as_cells(cells, geometry) > threshold
    return np.stack([hit[:, geometry.layer_slice(i)].sum(axis=1) for i in range(geometry.n_layers)], axis=1).astype(np.float64)


def core_fraction(cells: np.ndarray, geometry: Geometry, k: int = 4) -> np.ndarray:
    """(N, n_cells) -> (N, n_layers) share of each layer's energy in its ``k`` hottest cells.

    The lateral containment of a shower (k = 4: the cells around a beam that enters at a
    cell corner); 1 for a layer of at most k cells, NaN for an empty layer.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cells = _as_cells(cells, geometry)
    out = np.empty((cells.shape[0], geometry.n_layers))
    for i, layer in enumerate(geometry.layers):
        c = cells[:, geometry.layer_slice(i)]
        top = c if layer.n_cells <= k else np.partition(c, layer.n_cells - k, axis=1)[:, -k:]
        out[:, i] = _ratio(top.sum(axis=1), c.sum(axis=1))
    return out


def _rings(geometry: Geometry, layer: int, edges) -> np.ndarray:
    """(n_cells of the layer,) ring index of every cell of ``layer`` by its centre's distance from the z axis; -1 outside."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"ring edges must be increasing, got {edges.tolist()}")
    x, y = geometry.layers[layer].cell_centres()
    r = np.hypot(x.ravel(), y.ravel())
    ring = np.searchsorted(edges, r, side="right") - 1
    return np.where(r < edges[-1], ring, -1)


def ring_energy(cells: np.ndarray, geometry: Geometry, layer: int, edges) -> np.ndarray:
    """(N, n_cells) -> (N, R) energy in MeV of the cells of ``layer`` whose centres lie
    edges[k] <= r < edges[k + 1] mm from the z axis (R = len(edges) - 1): the radial profile."""
    cells = _as_cells(cells, geometry)[:, geometry.layer_slice(layer)]
    ring = _rings(geometry, layer, edges)
    return np.stack([cells[:, ring == k].sum(axis=1) for k in range(len(edges) - 1)], axis=1)


def ring_hits(cells: np.ndarray, geometry: Geometry, layer: int, edges, threshold: float = 0.0) -> np.ndarray:
    """(N, n_cells) -> (N, R) number of the cells of ``ring_energy``'s rings with energy > ``threshold`` MeV."""
    hit = (_as_cells(cells, geometry)[:, geometry.layer_slice(layer)] > threshold).astype(np.float64)
    ring = _rings(geometry, layer, edges)
    return np.stack([hit[:, ring == k].sum(axis=1) for k in range(len(edges) - 1)], axis=1)


def radial_bin_edges(geometry: Geometry) -> np.ndarray:
    """Edges (mm) of the rings of ``radial_profile``: transverse distance from the beam axis.

    With polar (CaloChallenge) layers only: the union of their radial bin edges. Otherwise
    rings of the width w of the finest cartesian cell, centred on 0, w, 2w, ...: edges 0,
    w/2, 3w/2, ... up to the farthest cell centre, so that the cells of a square grid fall
    into rings by their distance in cells.

    >>> from calogan.geometry import preset
    >>> radial_bin_edges(preset("voxel-25"))[:4].round(2).tolist()
    [0.0, 2.55, 7.65, 12.75]
    """
    if all(layer.binning == "polar" for layer in geometry.layers):
        return np.unique(np.concatenate([layer.r_edges for layer in geometry.layers]))
    w = min(min(layer.cell_size) for layer in geometry.layers if layer.binning == "cartesian")
    k = int(np.ceil(_cell_radius(geometry).max() / w - 0.5)) + 1
    return np.concatenate([[0.0], (np.arange(k) + 0.5) * w])


def _cell_radius(geometry: Geometry) -> np.ndarray:
    """(n_cells,) distance of each cell centre from the beam axis in mm (polar cells: the middle of their radial bin)."""
    parts = []
    for layer in geometry.layers:
        if layer.binning == "polar":
            edges = np.asarray(layer.r_edges)
            parts.append(np.broadcast_to(0.5 * (edges[:-1] + edges[1:]), layer.shape).ravel())
        else:
            x, y = layer.cell_centres()
            parts.append(np.hypot(x, y).ravel())
    return np.concatenate(parts)


def radial_profile(cells: np.ndarray, geometry: Geometry, edges: np.ndarray | None = None) -> np.ndarray:
    """(N, n_cells) MeV -> (N, n_rings) energy per ring of transverse distance from the beam axis, all layers summed.

    A cell counts in the ring of its centre's distance (``Layer.cell_centres``; for polar
    layers the middle of its radial bin); ``edges`` default to ``radial_bin_edges``. With
    ``layer_energies`` (the longitudinal profile) the radial profile is what the 3D GAN's
    validation compares.

    >>> from calogan.geometry import preset
    >>> g = preset("voxel-25")
    >>> cells = np.zeros((1, g.n_cells)); cells[0, 12 * 25 + 12] = 5.0; cells[0, 625 + 12 * 25 + 13] = 2.0
    >>> radial_profile(cells, g)[0, :3].tolist()  # the axis cell of layer 0, its neighbour in layer 1
    [5.0, 2.0, 0.0]
    """
    cells = _as_cells(cells, geometry)
    edges = radial_bin_edges(geometry) if edges is None else np.asarray(edges, dtype=np.float64)
    ring = np.clip(np.searchsorted(edges, _cell_radius(geometry), side="right") - 1, 0, len(edges) - 2)
    membership = np.zeros((geometry.n_cells, len(edges) - 1))
    membership[np.arange(geometry.n_cells), ring] = 1.0
    return cells @ membership


def observable_names(geometry: Geometry) -> list[str]:
    """Names of the ``high_level`` observables of a geometry, in their fixed order."""
    names = list(SHOWER_LEVEL)
    for key in PER_LAYER:
        names += [f"{key}_{layer.name}" for layer in geometry.layers]
    return names


def observable_unit(name: str, geometry: Geometry) -> tuple[str, str]:
    """(label, unit) of an observable, e.g. ``('width x, layer_1', 'mm')``; unit ``''`` when dimensionless."""
    if name in SHOWER_LEVEL:
        return SHOWER_LEVEL[name]
    layers = {layer.name for layer in geometry.layers}
    for key, (label, unit) in PER_LAYER.items():
        if name.startswith(key + "_") and name[len(key) + 1 :] in layers:
            return f"{label}, {name[len(key) + 1 :]}", unit
    raise KeyError(f"unknown observable {name!r}; known: {', '.join(observable_names(geometry))}")


def observable_label(name: str, geometry: Geometry) -> str:
    """Axis label with unit, e.g. ``'width x, layer_1 [mm]'``."""
    label, unit = observable_unit(name, geometry)
    return f"{label} [{unit}]" if unit else label


def high_level(cells: np.ndarray, geometry: Geometry, e_inc: np.ndarray, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """All per-shower observables as name -> (N,) float64, in ``observable_names`` order.

    Cells at or below ``threshold`` MeV are zeroed first (a readout threshold applied to
    every observable, as the CaloChallenge evaluation's cut), so sparsity and hit counts
    count cells above it.

    >>> from calogan.geometry import preset
    >>> g = preset("calogan")
    >>> obs = high_level(np.ones((4, g.n_cells)), g, np.full(4, 1.0))
    >>> len(obs), float(obs["response"][0]), float(obs["sparsity_layer_2"][0])
    (32, 0.504, 1.0)
    """
    cells = apply_threshold(_as_cells(cells, geometry), threshold)
    e = layer_energies(cells, geometry)
    e_tot = e.sum(axis=1)
    i = np.arange(geometry.n_layers, dtype=np.float64)
    s_d = _ratio(e @ i, e_tot)
    out = {
        "e_tot": e_tot,
        "response": response(cells, e_inc),
        "shower_depth": s_d,
        "depth_width": np.sqrt(np.clip(_ratio(e @ i**2, e_tot) - s_d**2, 0.0, None)),
        "n_hit": n_hit(cells, 0.0),
    }
    per_layer = {"e": e, "frac": _ratio(e, e_tot[:, None])}
    for axis in ("x", "y"):
        _, m1, m2 = _moments(cells, geometry, axis)  # one pass serves centroid and width
        mean = _ratio(m1, e)
        per_layer[f"centroid_{axis}"] = mean
        per_layer[f"width_{axis}"] = np.sqrt(np.clip(_ratio(m2, e) - mean**2, 0.0, None))
    per_layer |= {
        "sparsity": sparsity(cells, geometry, 0.0),
        "e_ratio": e_ratio(cells, geometry),
        "e_max": hottest_cell(cells, geometry),
    }
    for key, values in per_layer.items():
        for j, layer in enumerate(geometry.layers):
            out[f"{key}_{layer.name}"] = values[:, j]
    return {name: out[name] for name in observable_names(geometry)}
