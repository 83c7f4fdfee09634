"""Energy spots along each incident particle's track, and their deposit into cells."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calogan.geometry import Geometry
from calogan.simulate.materials import Media

__all__ = ["TRACK_SPOTS", "CellMap", "Spots", "Tracks", "deposit", "layer_of", "sampled_share", "slab_of", "track_spots"]

_FAR = 1e6  # radiation lengths beyond the back face: the depth maps stay linear behind it


@dataclass(frozen=True)
class Tracks:
    """Incident lines of n showers: impact point (x0, y0) mm on the front face z = 0 and
    direction theta (from the z axis), phi (from the x axis, towards y), rad; each (n,).

    A spot at path length s along the line and displacement (u, v) across it sits at
    origin + s d + u e1 + v e2 with d = (sin t cos p, sin t sin p, cos t),
    e1 = (cos t cos p, cos t sin p, -sin t), e2 = (-sin p, cos p, 0).
    """

    x0: np.ndarray
    y0: np.ndarray
    theta: np.ndarray
    phi: np.ndarray

    @classmethod
    def make(cls, n: int, x0=None, y0=None, theta=None, phi=None) -> Tracks:
        """Tracks of n showers; a missing condition is 0 (centre, along z)."""

        def arr(v):
            return np.zeros(n) if v is None else np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))

        return cls(arr(x0), arr(y0), arr(theta), arr(phi))

    def __len__(self) -> int:
        return len(self.x0)

    @property
    def tilted(self) -> bool:
        return bool(np.any(self.theta != 0))

    @property
    def cos_theta(self) -> np.ndarray:
        return np.cos(self.theta)

    def select(self, index) -> Tracks:
        return Tracks(self.x0[index], self.y0[index], self.theta[index], self.phi[index])

    def path_from_depth(self, t: np.ndarray, shower: np.ndarray, face_depths: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
        """Path length s (mm) along each track after ``t`` interaction or radiation lengths.

        ``face_depths`` (n_layers + 1,) are the layer faces in those units along z and
        ``boundaries`` the same faces in mm; t, shower and the result have shape (K,).
        """
        return self._along_track(t, shower, face_depths, boundaries)

    def depth_from_path(self, s: np.ndarray, shower: np.ndarray, face_depths: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
        """The inverse of ``path_from_depth``: interaction or radiation lengths after s mm, (K,)."""
        return self._along_track(s, shower, boundaries, face_depths)

    def _along_track(self, v: np.ndarray, shower: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Map v (K,) from the face scale ``src`` to ``dst`` piecewise linearly, continuing past the
        back face with the last layer's slope."""
        last = (dst[-1] - dst[-2]) / (src[-1] - src[-2])
        xs = np.append(src, src[-1] + _FAR)
        ys = np.append(dst, dst[-1] + _FAR * last)
        if not self.tilted:
            return np.interp(v, xs, ys)
        # Along a tilted line every layer is 1/cos(theta) longer, in mm and in X0 alike.
        c = self.cos_theta[shower]
        return np.interp(v * c, xs, ys) / c

    def crossed(self, s_end: np.ndarray, media: Media) -> tuple[np.ndarray, np.ndarray]:
        """(lo, lengths), each (n, L): where each track enters every layer (mm along it) and
        how much of it lies in the layer before the path length ``s_end`` (n,)."""
        cos_t = self.cos_theta
        lo = media.boundaries[:-1][None, :] / cos_t[:, None]
        hi = media.boundaries[1:][None, :] / cos_t[:, None]
        return lo, np.clip(np.asarray(s_end)[:, None], lo, hi) - lo


@dataclass(frozen=True)
class Spots:
    """K energy spots of a block of showers, each entry of shape (K,) or a scalar.

    ``shower`` indexes the block; ``s`` is the path length (mm) along the shower's track,
    ``u``, ``v`` the displacement (mm) across it; ``energy`` the deposited energy in MeV
    (``total`` convention); ``ehat`` the spot's active share relative to the layer's MIP
    sampling fraction and ``stochastic`` its sampling coefficient (see ``params.Sampling``).
    """

    shower: np.ndarray
    s: np.ndarray
    u: np.ndarray
    v: np.ndarray
    energy: np.ndarray
    ehat: np.ndarray | float
    stochastic: np.ndarray | float

    def __len__(self) -> int:
        return len(self.shower)

    @staticmethod
    def concatenate(parts: list[Spots]) -> Spots:
        def cat(name):
            return np.concatenate([np.broadcast_to(getattr(p, name), (len(p),)) for p in parts])

        return Spots(*(cat(name) for name in ("shower", "s", "u", "v", "energy", "ehat", "stochastic")))


def layer_of(z: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """(K,) index of the layer at depth z (mm), clipped to the first and last layers."""
    idx = np.zeros(len(z), dtype=np.int64)
    for b in boundaries[1:-1]:
        idx += z >= b
    return idx


TRACK_SPOTS = 3  # spots per layer a track crosses
TRACK_SPREAD = 1.0  # mm, lateral spread of a track's deposits (delta rays, scattering)


def track_spots(rng: np.random.Generator, lo: np.ndarray, lengths: np.ndarray, losses: np.ndarray, ehat: float, stochastic: float) -> Spots:
    """Spots of ionising tracks along the shower axes: ``TRACK_SPOTS`` per crossed layer,
    uniform along the crossed part, sharing its loss; lo, lengths (mm) and losses (MeV) are
    (n, L) with row i the track of shower i."""
    shower, layer = np.nonzero(lengths > 0)
    k = len(shower) * TRACK_SPOTS
    shower = np.repeat(shower, TRACK_SPOTS)
    layer = np.repeat(layer, TRACK_SPOTS)
    s = lo[shower, layer] + rng.random(k) * lengths[shower, layer]
    spread = rng.normal(0.0, TRACK_SPREAD, (2, k))
    return Spots(shower, s, spread[0], spread[1], losses[shower, layer] / TRACK_SPOTS, ehat, stochastic)


def slab_of(z: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """(K,) int8 slab of depth z (mm): 0 in front of the calorimeter, i + 1 in layer i, n_layers + 1 behind it.

    The number of layer faces at or in front of z; a few comparisons beat a binary search.
    """
    if len(boundaries) <= 8:
        faces = _faces_for(boundaries, z.dtype)
        slab = (z >= faces[0]).astype(np.int8)
        for b in faces[1:]:
            slab += z >= b
        return slab
    return np.searchsorted(boundaries, z, side="right").astype(np.int16)


def _faces_for(boundaries: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The faces (mm) to compare depths of ``dtype`` with: for float32 depths each face rounded
    up to the nearest float32, so that z >= face is exactly z >= the float64 face while the
    comparison stays in float32 (a float64 scalar would cast every depth, 5x the time)."""
    if dtype != np.float32:
        return np.asarray(boundaries, dtype=np.float64)
    faces = np.asarray(boundaries, dtype=np.float32)
    low = faces < boundaries
    faces[low] = np.nextafter(faces[low], np.float32(np.inf))
    return faces


def _positions(spots: Spots, tracks: Tracks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) in mm of every spot, each (K,)."""
    i = spots.shower
    if not tracks.tilted:
        # theta = 0: e1, e2 are the x, y axes turned by phi, and phi of a straight-on
        # track carries no meaning, so the displacement is taken along x and y directly.
        x = spots.u + tracks.x0[i] if np.any(tracks.x0) else spots.u
        y = spots.v + tracks.y0[i] if np.any(tracks.y0) else spots.v
        return x, y, spots.s
    st, ct = np.sin(tracks.theta)[i], np.cos(tracks.theta)[i]
    sp, cp = np.sin(tracks.phi)[i], np.cos(tracks.phi)[i]
    along = spots.s * st + spots.u * ct
    x = tracks.x0[i] + along * cp - spots.v * sp
    y = tracks.y0[i] + along * sp + spots.v * cp
    z = spots.s * ct - spots.u * st
    return x, y, z


_MAX_GRID = 1 << 20  # cells of the common grid of CellMap's lookup table (8 MiB of int64)


def _common_grid(edges: list[np.ndarray]) -> tuple[float, float, int] | None:
    """(lo, step, n) of a uniform grid holding every edge of ``edges`` (mm) on a grid line, or None."""
    every = np.concatenate(edges)
    lo, hi = float(every.min()), float(every.max())
    finest = min(float(np.diff(e).min()) for e in edges)
    for k in range(1, 9):
        step = finest / k
        pos = (every - lo) / step
        if np.abs(pos - np.round(pos)).max() < 1e-6 and round((hi - lo) / step) <= _MAX_GRID:
            return lo, step, round((hi - lo) / step)
    return None


@dataclass(frozen=True)
class CellMap:
    """Where a spot's energy goes: flat cell index of (x, y, slab), ``n_cells`` outside the cells.

    When every layer is cartesian and all cell edges lie on one uniform grid (the CaloGAN and
    voxel presets), a lookup table over that grid (plus a border of 'outside' entries and the
    'outside' slabs in front and behind) turns the index into two scalings and one gather,
    the same work for every layer; other geometries compute each layer's index directly.

    >>> from calogan.geometry import preset
    >>> m = CellMap.build(preset("calogan"))
    >>> m.index(np.array([1.0, 1.0, 1.0, 999.0]), np.array([1.0, 1.0, 1.0, 0.0]), np.array([1, 2, 4, 2]))
    array([144, 366, 504, 504])
    """

    geometry: Geometry
    # (n_layers + 2, nx + 2, ny + 2) int64, flattened: int64 so that the gather is the index
    # deposit sums with, without a cast (a few kB for the CaloGAN geometry)
    lut: np.ndarray | None = None
    origin: tuple[float, float] = (0.0, 0.0)  # mm, lower edges of the grid
    step: tuple[float, float] = (1.0, 1.0)  # mm
    shape: tuple[int, int] = (0, 0)  # grid cells along x and y, borders included

    @classmethod
    def build(cls, geometry: Geometry) -> CellMap:
        layers = geometry.layers
        if any(layer.binning != "cartesian" for layer in layers):
            return cls(geometry)
        axes = []
        for a in (0, 1):
            edges = [(np.arange(layer.shape[a] + 1) - 0.5 * layer.shape[a]) * layer.cell_size[a] for layer in layers]
            axes.append(_common_grid(edges))
        if None in axes or (len(layers) + 2) * (axes[0][2] + 2) * (axes[1][2] + 2) > _MAX_GRID:
            return cls(geometry)
        (lo_x, st_x, nx), (lo_y, st_y, ny) = axes
        lut = np.full((len(layers) + 2, nx + 2, ny + 2), geometry.n_cells, np.int64)
        # grid cell j covers [lo + (j - 1) step, lo + j step); j = 0 and n + 1 are outside
        cx = lo_x + (np.arange(nx + 2) - 0.5) * st_x
        cy = lo_y + (np.arange(ny + 2) - 0.5) * st_y
        for i, layer in enumerate(layers):
            (rows, cols), (dx, dy) = layer.shape, layer.cell_size
            ix = np.floor(cx / dx + 0.5 * rows).astype(np.int64)[:, None]
            iy = np.floor(cy / dy + 0.5 * cols).astype(np.int64)[None, :]
            inside = (ix >= 0) & (ix < rows) & (iy >= 0) & (iy < cols)
            lut[i + 1][inside] = (geometry.offsets[i] + ix * cols + iy)[inside]
        return cls(geometry, lut.ravel(), (lo_x, lo_y), (st_x, st_y), (nx + 2, ny + 2))

    def index(self, x: np.ndarray, y: np.ndarray, slab: np.ndarray) -> np.ndarray:
        """(K,) int64 flat cell of each spot at (x, y) mm in ``slab`` (see ``slab_of``); n_cells outside."""
        g = self.geometry
        if self.lut is None:
            layer = slab.astype(np.int64) - 1
            valid = (layer >= 0) & (layer < g.n_layers)
            flat = _cell_index(x, y, np.where(valid, layer, 0), g)
            return np.where(valid & (flat >= 0), flat, g.n_cells)
        f32 = np.float32
        nx, ny = self.shape
        # grid coordinate + 1 for the border, clipped into the border beyond the grid
        ax = np.asarray(x, dtype=f32) * f32(1.0 / self.step[0])
        ax += f32(1.0 - self.origin[0] / self.step[0])
        np.clip(ax, 0, nx - 0.5, out=ax)
        ay = np.asarray(y, dtype=f32) * f32(1.0 / self.step[1])
        ay += f32(1.0 - self.origin[1] / self.step[1])
        np.clip(ay, 0, ny - 0.5, out=ay)
        key = slab.astype(np.int32) * np.int32(nx * ny)
        key += ax.astype(np.int32) * np.int32(ny)
        key += ay.astype(np.int32)
        return self.lut.take(key)  # take: half the time of lut[key] with an int32 key


def _cell_index(x: np.ndarray, y: np.ndarray, layer: np.ndarray, geometry: Geometry) -> np.ndarray:
    """(K,) flat cell index of each spot in ``layer`` (a valid layer index); -1 outside the cells."""
    flat = np.full(len(x), -1, dtype=np.int64)
    cart = [i for i, g in enumerate(geometry.layers) if g.binning == "cartesian"]
    if cart:
        n = geometry.n_layers
        inv_dx, inv_dy, rows, cols = np.ones(n), np.ones(n), np.zeros(n, np.int64), np.zeros(n, np.int64)
        for i in cart:
            g = geometry.layers[i]
            inv_dx[i], inv_dy[i] = 1.0 / g.cell_size[0], 1.0 / g.cell_size[1]
            rows[i], cols[i] = g.shape
        # cells are centred on the z axis: row 0 starts at -rows * dx / 2
        ix = np.floor(x * inv_dx[layer] + 0.5 * rows[layer]).astype(np.int64)
        iy = np.floor(y * inv_dy[layer] + 0.5 * cols[layer]).astype(np.int64)
        nr, nc = rows[layer], cols[layer]
        inside = (ix >= 0) & (ix < nr) & (iy >= 0) & (iy < nc)
        offsets = np.asarray(geometry.offsets[:-1], dtype=np.int64)
        np.copyto(flat, offsets[layer] + ix * nc + iy, where=inside)
    for i, g in enumerate(geometry.layers):
        if g.binning != "polar":
            continue
        sel = np.flatnonzero(layer == i)
        r = np.hypot(x[sel], y[sel])
        edges = np.asarray(g.r_edges)
        ir = np.searchsorted(edges, r, side="right") - 1
        n_alpha = g.shape[0]
        # alpha bins of width 2 pi / n_alpha from -pi, as CaloChallenge flattens them
        ia = np.floor((np.arctan2(y[sel], x[sel]) + math.pi) * (n_alpha / (2 * math.pi))).astype(np.int64) % n_alpha
        inside = (ir >= 0) & (ir < g.shape[1])
        flat[sel[inside]] = geometry.offsets[i] + ia[inside] * g.shape[1] + ir[inside]
    return flat


def sampled_share(rng: np.random.Generator, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """(K,) active energies of cells of active mean ``mean`` and variance ``var`` (K,), both > 0.

    A compound Poisson sum: N ~ Poisson(mean / g) grains, each an exponential energy of mean
    g = var / (2 mean), what one charged particle leaves in a gap; N grains sum to a Gamma
    variate of shape N. Mean and variance are the given ones; a cell reads zero with
    probability exp(-mean / g), as Geant4's small deposits do when they lie in the absorber
    (about 70 % of the cells with 0.3-1 MeV in the total convention read zero in the active one).
    """
    grain = var / (2.0 * mean)
    count = rng.poisson(mean / grain)
    out = np.zeros(len(mean))
    hit = count > 0
    out[hit] = rng.standard_gamma(count[hit]) * grain[hit]
    return out


def deposit(
    spots: Spots | Sequence[Spots],
    tracks: Tracks,
    e_inc: np.ndarray,
    cell_map: CellMap,
    media: Media,
    mode: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sum spots into cells: (n, n_cells) float32 MeV for the n = len(tracks) showers.

    ``spots`` is one set of spots or several (a track and a shower). Spots in front of or
    behind the calorimeter or beside its cells leave it (leakage). ``mode="active"`` keeps
    the active share of each spot with its sampling fluctuation. No shower deposits more than
    its incident energy ``e_inc`` (n,) GeV: the fluctuating active share is capped there (it
    never comes near in practice: the share is ~0.2).

    Sampling fluctuations: a spot of e MeV and active share f = f_mip ehat carries an active
    energy of mean f e and variance 1000 a^2 f^2 e, a^2 = stochastic^2 x (MIP MeV per period)
    (``params.Sampling``). The spots of one cell are summed first and the cell's active energy
    drawn once with the summed mean and variance (``sampled_share``): the number of charged
    particles that reach the active gaps fluctuates, so a small deposit is often wholly in
    the absorber and the cell reads zero.
    """
    if mode not in ("total", "active"):
        raise ValueError(f"mode must be 'total' or 'active', got {mode!r}")
    parts = [spots] if isinstance(spots, Spots) else list(spots)
    geometry = cell_map.geometry
    n = len(tracks)
    width = geometry.n_cells + 1  # one extra cell per shower collects what leaves the cells, then is dropped
    active = mode == "active"
    homogeneous = media.sf_mip >= 1.0  # no absorber: every deposit is seen, without sampling fluctuations
    names = ("e", "eh", "var") if active else ("e",)
    if active and not homogeneous.any():
        names = ("eh", "var")
    sums = {name: np.zeros(n * width) for name in names}
    for part in parts:
        if len(part) == 0:
            continue
        x, y, z = _positions(part, tracks)
        key = cell_map.index(x, y, slab_of(z, media.boundaries))
        key += part.shower * width
        if "e" in sums:
            sums["e"] += np.bincount(key, weights=part.energy, minlength=n * width)
        if active:
            eh = part.energy * part.ehat
            sums["eh"] += np.bincount(key, weights=eh, minlength=n * width)
            if np.ndim(part.stochastic) or part.stochastic != 0:  # soft quanta (stochastic 0) add no variance
                sums["var"] += np.bincount(key, weights=eh * part.ehat * np.square(part.stochastic), minlength=n * width)
    if not active:
        cells = sums["e"].reshape(n, width)[:, :-1]
    else:
        layer = geometry.layer_of_cell()  # (n_cells,)
        sf = media.sf_mip[layer]
        mean = sums["eh"].reshape(n, width)[:, :-1] * sf
        var = sums["var"].reshape(n, width)[:, :-1] * (1000.0 * media.mip_per_period[layer] * sf * sf)
        if homogeneous.any():
            mean = np.where(homogeneous[layer], sums["e"].reshape(n, width)[:, :-1], mean)
            var = np.where(homogeneous[layer], 0.0, var)
        cells = mean
        drawn = (mean > 0) & (var > 0)
        cells[drawn] = sampled_share(rng, mean[drawn], var[drawn])
    limit = 1000.0 * np.asarray(e_inc, dtype=np.float64)
    out = cells.astype(np.float32)
    # checked on the stored float32 values, whose rounding could otherwise lift a fully
    # contained shower a few parts in 10^8 above its energy
    totals = out.sum(axis=1, dtype=np.float64)
    over = totals > limit
    if over.any():
        out[over] = (cells[over] * ((1.0 - 1e-6) * limit[over] / totals[over])[:, None]).astype(np.float32)
    return out
