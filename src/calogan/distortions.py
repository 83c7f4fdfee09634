"""Known distortions of shower samples: what an evaluation must detect (energy scale, sampling, width, depth, thresholds, holes, mirrors).

Each function takes ``ShowerData`` and returns a distorted copy with the same conditions;
random ones take a ``numpy.random.Generator``. They are pure (the input is never changed)
and work on any geometry: cartesian layers and CaloChallenge polar layers alike.

- ``scale_energy(data, factor)``: every cell multiplied by ``factor`` (an energy-scale error).
- ``smear_sampling(data, factor, c_mev, rng)``: sampling fluctuations widened by ``factor``:
  each cell E is multiplied by a Gamma variate of mean 1 and variance (factor² − 1) c / E,
  which adds (factor² − 1) c E to its variance; summed over the independent cells the total
  gains (factor² − 1) c E_tot, so a stochastic term σ² = c E_tot grows by ``factor`` while the
  mean stays. ``sampling_constant`` estimates c from a reference's resolution.
- ``widen_lateral(data, factor)``: every layer's image stretched by ``factor`` about its
  energy-weighted centroid (each cell's energy moves with its centre and is shared between
  the two nearest cells), so energy moves from the core to its neighbours and the widths
  grow; energy stretched past the outer cells stays in them, so every layer keeps its
  energy. ``stretch_for_width`` finds the stretch that widens a layer by a given factor.
- ``shift_depth(data, kappa)``: layer energies reweighted by exp(κ i) (i the layer index from
  the front), each layer keeping its own image shape, and renormalised so that E_tot is
  kept: energy moves to the back for κ > 0.
- ``zero_below(data, threshold_mev)``: cells at or below the threshold set to 0.
- ``drop_hits(data, fraction, rng)``: each hit cell set to 0 with probability ``fraction``.
- ``mirror_layer(data, layer, axis)``: one layer's image flipped along x (rows) or y
  (columns): invisible for a beam at the centre, a physics error for off-axis showers.

``default_suite`` lists the distortions of the sensitivity test (``calogan.sensitivity``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from calogan import observables as obs
from calogan.data import ShowerData
from calogan.errors import CaloganError

__all__ = [
    "Distortion",
    "DistortionError",
    "default_suite",
    "drop_hits",
    "mirror_layer",
    "sampling_constant",
    "scale_energy",
    "shift_depth",
    "smear_sampling",
    "stretch_for_width",
    "widen_lateral",
    "zero_below",
]


class DistortionError(CaloganError, ValueError):
    """A distortion that cannot be applied (bad factor, unknown layer or axis)."""


def _with_cells(data: ShowerData, cells: np.ndarray) -> ShowerData:
    return replace(data, cells=np.asarray(cells, dtype=np.float32))


def scale_energy(data: ShowerData, factor: float) -> ShowerData:
    """Every cell multiplied by ``factor``."""
    if not factor > 0:
        raise DistortionError(f"energy scale factor must be > 0, got {factor}")
    return _with_cells(data, data.cells * np.float32(factor))


def sampling_constant(data: ShowerData) -> float:
    """c in MeV of σ²(E_tot) = c E_tot: the sampling variance per MeV deposited, from the sample's own spread.

    Per incident-energy decile, var(E_tot) / mean(E_tot) (both in MeV); the median over the
    deciles. For a sampling calorimeter whose resolution is a/√E this is a² f E_unit with f
    the mean response (about 1 MeV for the Geant4 e+ ``_active`` files).
    """
    e_tot = data.cells.sum(axis=1, dtype=np.float64)
    order = np.argsort(data.e_inc)
    ratios = []
    for part in np.array_split(order, 10):
        if len(part) >= 10 and e_tot[part].mean() > 0:
            # remove the spread of E_inc inside the decile: compare E_tot / E_inc scaled to the decile's mean E_inc
            scaled = e_tot[part] / data.e_inc[part] * data.e_inc[part].mean()
            ratios.append(scaled.var(ddof=1) / scaled.mean())
    if not ratios:
        raise DistortionError("sampling_constant needs at least 10 showers with energy per incident-energy decile")
    return float(np.median(ratios))


def smear_sampling(data: ShowerData, factor: float, c_mev: float, rng: np.random.Generator) -> ShowerData:
    """Sampling fluctuations σ² = c E widened by ``factor`` (≥ 1): cells times Gamma(k, 1/k), k = E / ((factor² − 1) c)."""
    if factor < 1 or c_mev <= 0:
        raise DistortionError(f"smear_sampling needs factor >= 1 and c > 0 MeV, got {factor} and {c_mev}")
    cells = data.cells.astype(np.float64)
    extra = (factor**2 - 1) * c_mev
    out = np.zeros_like(cells)
    hit = cells > 0
    if extra == 0:
        return data
    k = cells[hit] / extra  # Gamma shape: mean 1, variance 1/k = extra / E
    out[hit] = cells[hit] * rng.gamma(k, 1.0 / k)
    return _with_cells(data, out)


def _stretch_matrix(centres: np.ndarray, centre: np.ndarray, factor: float) -> np.ndarray:
    """(N, n, n) M[s, i, j]: share of cell j's energy that lands in cell i when positions along the axis are stretched by ``factor`` about ``centre[s]``.

    Each cell's energy sits at its centre x_j, moves to c + factor (x_j − c) and is shared
    linearly between the two cell centres around its new position (cloud in cell); past the
    outer centres it stays in the outer cell, so every column of M sums to 1.
    """
    n = len(centres)
    moved = centre[:, None] + factor * (centres[None, :] - centre[:, None])  # (N, n)
    u = np.interp(moved, centres, np.arange(n, dtype=np.float64))  # fractional cell index, clipped to [0, n - 1]
    lo = np.minimum(np.floor(u).astype(np.int64), max(n - 2, 0))
    frac = u - lo
    m = np.zeros((len(centre), n, n))
    rows = np.arange(len(centre))[:, None]
    cols = np.arange(n)[None, :]
    np.add.at(m, (rows, lo, cols), 1.0 - frac)
    if n > 1:
        np.add.at(m, (rows, lo + 1, cols), frac)
    return m


def widen_lateral(
    data: ShowerData, factor: float, *, layers: tuple[int, ...] | None = None, min_cells: int = 4, keep_hits: bool = True
) -> ShowerData:
    """The images of ``layers`` (default: all) stretched by ``factor`` about their centroids along every axis with at least ``min_cells`` cells; layer energies kept.

    Cartesian layers stretch along x (rows) and y (columns) about the energy-weighted
    centroid, polar layers along r about the axis; each cell's energy moves with its centre
    and is shared between the two nearest cells (``_stretch_matrix``). An axis with fewer
    cells (the CaloGAN front layer's three 160 mm rows) holds the shower's core in one cell
    and is left alone: moving energy across such cells is no widening of the shower.
    ``keep_hits``: energy that lands in cells without energy before is given back to the
    layer's hit cells in proportion (every layer keeps its energy and its hit pattern), so
    the distortion changes how energy is shared, not which cells fire; on axes whose cells
    are much finer than the shower a stretch moves tail energy past empty cells, so use it
    on coarse layers (the suite widens the CaloGAN middle layer's 40 mm cells).
    """
    if not factor > 0:
        raise DistortionError(f"lateral width factor must be > 0, got {factor}")
    g = data.geometry
    cells = data.cells.astype(np.float64)
    out = cells.copy()
    for i, layer in enumerate(g.layers):
        if layers is not None and i not in layers:
            continue
        sl = g.layer_slice(i)
        rows, cols = layer.shape
        for start in range(0, len(cells), 1024):  # the (N, n, n) matrices in batches
            img = cells[start : start + 1024, sl].reshape(-1, rows, cols)
            e = img.sum(axis=(1, 2))
            safe = np.where(e > 0, e, 1.0)
            new = img
            if layer.binning == "cartesian":
                x, y = layer.cell_centres()
                xs, ys = x[:, 0], y[0, :]
                if rows >= min_cells:
                    cx = (img.sum(axis=2) @ xs) / safe
                    new = _stretch_matrix(xs, cx, factor) @ new
                if cols >= min_cells:
                    cy = (img.sum(axis=1) @ ys) / safe
                    new = new @ np.swapaxes(_stretch_matrix(ys, cy, factor), 1, 2)
            elif cols >= min_cells:  # polar: rows are alpha bins, columns radial bins; stretch r about the axis
                er = np.asarray(layer.r_edges, dtype=np.float64)
                new = new @ np.swapaxes(_stretch_matrix(0.5 * (er[:-1] + er[1:]), np.zeros(len(img)), factor), 1, 2)
            new = new.reshape(len(img), -1)
            if keep_hits:
                hit = img.reshape(len(img), -1) > 0
                new = np.where(hit, new, 0.0)
                kept = new.sum(axis=1)
                new *= (e / np.where(kept > 0, kept, 1.0))[:, None]
            out[start : start + 1024, sl] = new
    return _with_cells(data, out)


def stretch_for_width(data: ShowerData, target: float = 1.1, layer: int | None = None) -> float:
    """The ``widen_lateral`` stretch of ``layer`` (default: the middle one) that makes its mean width (x and y averaged) ``target`` times larger.

    Re-binning a stretched image onto the cells widens it more than the stretch itself where
    cells are coarse, so the stretch is found by bisection on the sample.
    """
    g = data.geometry
    i = g.n_layers // 2 if layer is None else layer
    sub = data if len(data) <= 2000 else data.select(np.arange(2000))

    def mean_width(d: ShowerData) -> float:
        w = np.concatenate([obs.width(d.cells, g, axis)[:, i] for axis in ("x", "y")])
        return float(np.nanmean(w))

    base = mean_width(sub)
    lo, hi = 1.0, 2 * target
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if mean_width(widen_lateral(sub, mid, layers=(i,))) / base < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def shift_depth(data: ShowerData, kappa: float) -> ShowerData:
    """Layer i's cells times exp(κ i), then the shower rescaled to its own E_tot: energy moves back (κ > 0) or forward."""
    g = data.geometry
    weights = np.concatenate([np.full(layer.n_cells, math.exp(kappa * i)) for i, layer in enumerate(g.layers)])
    cells = data.cells.astype(np.float64)
    new = cells * weights
    e_old, e_new = cells.sum(axis=1), new.sum(axis=1)
    new *= (e_old / np.where(e_new > 0, e_new, 1.0))[:, None]
    return _with_cells(data, new)


def zero_below(data: ShowerData, threshold_mev: float) -> ShowerData:
    """Cells at or below ``threshold_mev`` set to 0."""
    if threshold_mev < 0:
        raise DistortionError(f"threshold must be >= 0 MeV, got {threshold_mev}")
    return _with_cells(data, np.where(data.cells > threshold_mev, data.cells, 0.0))


def drop_hits(data: ShowerData, fraction: float, rng: np.random.Generator) -> ShowerData:
    """Each cell with energy set to 0 with probability ``fraction`` (its energy is lost)."""
    if not 0 <= fraction <= 1:
        raise DistortionError(f"fraction of dropped hits must be in [0, 1], got {fraction}")
    keep = rng.random(data.cells.shape) >= fraction
    return _with_cells(data, np.where(keep, data.cells, 0.0))


def mirror_layer(data: ShowerData, layer: int | str, axis: str = "x") -> ShowerData:
    """One layer's image flipped along ``axis``: ``"x"`` reverses its rows, ``"y"`` its columns."""
    g = data.geometry
    names = [lay.name for lay in g.layers]
    if isinstance(layer, str):
        if layer not in names:
            raise DistortionError(f"unknown layer {layer!r}; geometry {g.name!r} has {', '.join(names)}")
        layer = names.index(layer)
    if not 0 <= layer < g.n_layers:
        raise DistortionError(f"layer index {layer} outside 0..{g.n_layers - 1}")
    if axis not in ("x", "y"):
        raise DistortionError(f"mirror axis must be 'x' or 'y', got {axis!r}")
    rows, cols = g.layers[layer].shape
    sl = g.layer_slice(layer)
    cells = data.cells.copy()
    img = cells[:, sl].reshape(-1, rows, cols)
    cells[:, sl] = (img[:, ::-1, :] if axis == "x" else img[:, :, ::-1]).reshape(len(img), -1)
    return _with_cells(data, cells)


@dataclass(frozen=True)
class Distortion:
    """A named distortion: ``apply(data, rng)`` returns the distorted showers; ``reference`` says what it is."""

    name: str
    description: str
    apply: Callable[[ShowerData, np.random.Generator], ShowerData]


def default_suite(reference: ShowerData, *, mirror: bool | None = None) -> list[Distortion]:
    """The sensitivity test's distortions, in table order; the first is the undistorted copy.

    The sampling constant c and the stretch that widens the middle layer by 10 % are
    measured on ``reference``. The depth shift comes at two strengths: κ = 0.1 moves the mean
    shower depth s_d of the Geant4 e+ by about +0.016 layers (+2 %), κ = 0.3 by about +0.05.
    ``mirror``: add "layer mirrored" (the middle layer flipped along x); by default when the
    sample's impact points vary (an ``x0`` condition), where a mirror changes the physics.
    """
    c = sampling_constant(reference)
    g = reference.geometry
    mid = g.n_layers // 2
    stretch = stretch_for_width(reference, 1.1, mid)
    mid_name = g.layers[mid].name
    suite = [
        Distortion("self-copy", "other showers of the reference, undistorted", lambda d, rng: d),
        Distortion("scale x1.02", "every cell x 1.02", lambda d, rng: scale_energy(d, 1.02)),
        Distortion("scale x1.05", "every cell x 1.05", lambda d, rng: scale_energy(d, 1.05)),
        Distortion(
            "sampling x1.2",
            f"sampling fluctuations x 1.2: cells x Gamma(mean 1, variance 0.44 c / E), c = {c:.3g} MeV",
            lambda d, rng: smear_sampling(d, 1.2, c, rng),
        ),
        Distortion(
            "width x1.1",
            f"{mid_name} stretched x {stretch:.3f} about its centroid (its widths x 1.1), its energy and hit cells kept",
            lambda d, rng: widen_lateral(d, stretch, layers=(mid,)),
        ),
        Distortion("depth +0.1", "layer i x exp(0.1 i), E_tot kept (energy moved to the back)", lambda d, rng: shift_depth(d, 0.1)),
        Distortion("depth +0.3", "layer i x exp(0.3 i), E_tot kept", lambda d, rng: shift_depth(d, 0.3)),
        Distortion("cells < 1 MeV zeroed", "cells at or below 1 MeV set to 0", lambda d, rng: zero_below(d, 1.0)),
        Distortion("10 % hits dropped", "each hit cell set to 0 with probability 0.1", lambda d, rng: drop_hits(d, 0.1, rng)),
    ]
    if mirror is None:
        mirror = "x0" in reference.conditions
    if mirror:
        suite.append(Distortion(f"{mid_name} mirrored", f"{mid_name} flipped along x", lambda d, rng: mirror_layer(d, mid, "x")))
    return suite
