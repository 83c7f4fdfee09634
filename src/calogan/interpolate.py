"""Latent traversals: one condition swept with the noise held fixed.

As in figs. 3-5 of "Controlling Physical Attributes in GAN-Accelerated Simulation of
Electromagnetic Calorimeters" (de Oliveira, Paganini and Nachman, arXiv:1711.08813).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure

from calogan.errors import ConfigError
from calogan.geometry import Geometry
from calogan.observables import centroid, total_energy, width
from calogan.runtime import AtomicOutput

__all__ = [
    "TREND_OBSERVABLES",
    "Traversal",
    "data_trends",
    "default_conditions",
    "draw_traversal",
    "linear_trend",
    "traversal_trends",
    "traverse",
]


@dataclass(frozen=True)
class Traversal:
    """The showers of a traversal of condition ``key`` over ``values`` (S,).

    ``conditions`` holds the fixed physical value of every model condition but ``key``;
    ``mean_cells`` (S, n_cells) MeV is the mean of the ``n_average`` showers made at each
    value from the same noise; ``observables`` maps ``centroid_x``, ``centroid_y``,
    ``width_x``, ``width_y`` to (S, n_layers) mm and ``e_tot`` to (S,) MeV, each the mean
    over the showers of a value (NaN where a layer stayed empty in all of them).
    """

    key: str
    values: np.ndarray
    conditions: dict[str, float]
    n_average: int
    mean_cells: np.ndarray
    observables: dict[str, np.ndarray]

    def to_dict(self) -> dict:
        """Plain lists for JSON (NaN becomes None)."""

        def clean(a):
            return [None if not np.isfinite(v) else float(v) for v in np.ravel(a)] if np.ndim(a) <= 1 else [clean(r) for r in a]

        return {
            "key": self.key,
            "values": clean(self.values),
            "conditions": self.conditions,
            "n_average": self.n_average,
            "observables": {k: clean(v) for k, v in self.observables.items()},
        }


def default_conditions(spec) -> dict[str, float]:
    """Where a traversal holds the conditions it does not vary: E = 50 GeV (or the middle of
    the training range when 50 is outside it), x0 and y0 at 0 mm (or the middle), theta and
    phi at the lower end of their range (about 0: normal incidence)."""
    out = {}
    for key, (lo, hi) in zip(spec.keys, spec.ranges):
        if key == "e_inc":
            out[key] = 50.0 if lo <= 50.0 <= hi else 0.5 * (lo + hi)
        elif key in ("x0", "y0"):
            out[key] = 0.0 if lo <= 0.0 <= hi else 0.5 * (lo + hi)
        else:
            out[key] = lo
    return out


@torch.no_grad()
def traverse(
    model,
    key: str,
    values,
    *,
    fixed: dict[str, float] | None = None,
    particle: int | None = None,
    n_average: int = 10,
    seed: int = 0,
) -> Traversal:
    """Sweep condition ``key`` over ``values`` with ``n_average`` fixed noise vectors.

    ``fixed`` overrides ``default_conditions`` for the other conditions (physical units: GeV,
    mm, rad); ``particle`` (PDG code) picks the class of a model over several particles. The
    model runs in eval mode; the same ``n_average`` latent vectors serve every value.
    """
    spec = model.conditions
    if key not in spec.keys:
        raise ConfigError(f"key {key}: the model is conditioned on {', '.join(spec.keys)} only")
    unknown = sorted(set(fixed or {}) - set(spec.keys))
    if unknown:
        raise ConfigError(f"fixed {unknown[0]}: the model is conditioned on {', '.join(spec.keys)} only")
    if n_average < 1:
        raise ConfigError(f"n_average must be >= 1, got {n_average}")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size < 2:
        raise ConfigError("a traversal needs at least 2 steps")
    lo, hi = spec.ranges[spec.keys.index(key)]
    if values.min() < lo - 1e-9 * abs(lo) or values.max() > hi + 1e-9 * abs(hi):
        warnings.warn(f"{key} range [{values.min():g}, {values.max():g}] leaves the training range [{lo:g}, {hi:g}]", stacklevel=2)
    base = {**default_conditions(spec), **{k: float(v) for k, v in (fixed or {}).items()}}
    if (key == "e_inc" and values.min() <= 0) or base["e_inc"] <= 0:
        raise ConfigError("incident energies must be > 0 GeV")
    particles = spec.particles
    if len(particles) > 1:
        if particle is None:
            raise ConfigError(f"particle: the model covers several particles {list(particles)}; name one")
        if particle not in particles:
            raise ConfigError(f"particle: {particle} is not one of the model's {list(particles)}")

    model.eval()
    device = model.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n_average, model.config.latent_dim, generator=gen).to(device)  # (n, latent): the same for every value
    geometry = model.geometry
    means, per_value = [], {"centroid_x": [], "centroid_y": [], "width_x": [], "width_y": [], "e_tot": []}
    for v in values:
        row = [v if k == key else base[k] for k in spec.keys]
        if len(particles) > 1:
            row += [1.0 if p == particle else 0.0 for p in particles]
        cond = torch.tensor([row] * n_average, dtype=torch.float32, device=device)
        cells = model.sample_cells(cond, z).double().cpu().numpy()  # (n, n_cells) MeV
        means.append(cells.mean(axis=0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a layer empty in every shower gives NaN
            for axis in ("x", "y"):
                per_value[f"centroid_{axis}"].append(np.nanmean(centroid(cells, geometry, axis), axis=0))
                per_value[f"width_{axis}"].append(np.nanmean(width(cells, geometry, axis), axis=0))
        per_value["e_tot"].append(total_energy(cells).mean())
    fixed_out = {k: float(base[k]) for k in spec.keys if k != key}
    return Traversal(key, values, fixed_out, n_average, np.stack(means), {k: np.asarray(v) for k, v in per_value.items()})


# The observables that should follow each condition (figs. 3-5 of arXiv:1711.08813): the centroid follows
# the impact point, the width grows with the polar angle, E_tot with the energy. The azimuth
# has none: it is periodic, so a straight-line trend against it means nothing.
TREND_OBSERVABLES = {
    "e_inc": ("e_tot",),
    "x0": ("centroid_x",),
    "y0": ("centroid_y",),
    "theta": ("width_x", "width_y"),
}


def linear_trend(values: np.ndarray, observable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope d(observable)/d(value) and Pearson correlation, per column.

    ``values`` (N,), ``observable`` (N,) or (N, L); rows with a NaN observable are left out
    of that column, and a column with fewer than 3 finite rows or no spread gives NaN.
    Returns (slope, r), each (L,) (or scalars for a 1-D observable).

    >>> slope, r = linear_trend(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))
    >>> float(slope), float(r)
    (2.0, 1.0)
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    obs = np.asarray(observable, dtype=np.float64)
    flat = obs.ndim == 1
    obs = obs.reshape(len(values), -1)
    slope, r = np.full(obs.shape[1], np.nan), np.full(obs.shape[1], np.nan)
    for j in range(obs.shape[1]):
        ok = np.isfinite(obs[:, j])
        if ok.sum() < 3:
            continue
        v, o = values[ok] - values[ok].mean(), obs[ok, j] - obs[ok, j].mean()
        sv, so = float(v @ v), float(o @ o)
        if sv > 0:
            slope[j] = float(v @ o) / sv
        if sv > 0 and so > 0:
            r[j] = float(v @ o) / np.sqrt(sv * so)
    return (slope[0], r[0]) if flat else (slope, r)


def traversal_trends(t: Traversal) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{observable: (slope, r)} of a traversal's mean observables against its values, for the
    observables that should follow ``t.key`` (``TREND_OBSERVABLES``; none for phi); slopes per
    unit of the condition (GeV, mm, rad), (n_layers,) each (scalars for ``e_tot``, MeV per GeV)."""
    return {name: linear_trend(t.values, t.observables[name]) for name in TREND_OBSERVABLES.get(t.key, ())}


def data_trends(data, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The same trends shower by shower in a file whose showers carry condition ``key``
    (Geant4 or generated at the same conditions): compare a model's with Geant4's.
    {observable: (slope, r)} as in ``traversal_trends``."""
    if key not in TREND_OBSERVABLES:
        raise ConfigError(f"no trend is defined against {key!r} (only {', '.join(TREND_OBSERVABLES)}): it is periodic or unknown")
    if key == "e_inc":
        values = data.e_inc
    elif key in data.conditions:
        values = data.conditions[key]
    else:
        raise ConfigError(f"the showers carry no condition {key!r} (they have: e_inc, {', '.join(data.conditions) or 'nothing else'})")
    cells = data.cells.astype(np.float64)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # empty layers give NaN, left out
        for name in TREND_OBSERVABLES[key]:
            if name == "e_tot":
                o = total_energy(cells)
            else:
                kind, axis = name.split("_")
                o = (centroid if kind == "centroid" else width)(cells, data.geometry, axis)
            out[name] = linear_trend(values, o)
    return out


_UNITS = {"e_inc": ("E", "GeV", 1.0), "x0": ("x0", "mm", 1.0), "y0": ("y0", "mm", 1.0), "theta": ("theta", "deg", 180 / np.pi)}
_UNITS["phi"] = ("phi", "deg", 180 / np.pi)


def draw_traversal(
    t: Traversal, geometry: Geometry, path: str | Path, *, difference: bool = False, title: str = "", force: bool = True
) -> Path:
    """Draw a traversal to ``path`` (PNG/PDF by suffix), written atomically (an existing file is
    replaced unless ``force`` is false).

    One row of mean images per layer (columns: the values; axes in mm, rows = x vertical),
    energy on a log colour scale, or with ``difference`` each image minus the middle value's
    on a diverging scale (blue: less energy, as in fig. 5 of arXiv:1711.08813); a last row plots the
    centroid (x0, y0, phi traversals), the width (theta) or E_tot (energy) against the value.
    """
    name, unit, factor = _UNITS[t.key]
    shown = t.values * factor
    n_steps, n_layers = len(t.values), geometry.n_layers
    mid = n_steps // 2
    fig = Figure(figsize=(1.6 * n_steps + 1.5, 1.7 * (n_layers + 1.4)))
    grid = fig.add_gridspec(n_layers + 1, n_steps + 1, width_ratios=[1] * n_steps + [0.08], height_ratios=[1] * n_layers + [1.4])
    for li, layer in enumerate(geometry.layers):
        images = t.mean_cells[:, geometry.layer_slice(li)].reshape(n_steps, *layer.shape)
        if difference:
            images = images - images[mid]
            top = max(float(np.abs(images).max()), 1e-12)
            norm, cmap = TwoSlopeNorm(0.0, -top, top), "RdBu_r"
        else:
            positive = images[images > 0]
            lo = max(float(positive.min()) if positive.size else 1e-3, float(images.max()) * 1e-4)
            norm, cmap = LogNorm(lo, max(float(images.max()), lo * 10)), "viridis"
            images = np.where(images > lo, images, np.nan)  # empty cells stay white
        extent = None
        if layer.cell_size is not None:
            rows, cols = layer.shape
            (hx, hy) = (rows * layer.cell_size[0] / 2, cols * layer.cell_size[1] / 2)
            extent = (-hy, hy, hx, -hx)  # columns = y horizontal, rows = x vertical
        for si in range(n_steps):
            ax = fig.add_subplot(grid[li, si])
            im = ax.imshow(images[si], norm=norm, cmap=cmap, extent=extent, aspect="equal" if extent else "auto", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if li == 0:
                ax.set_title(f"{shown[si]:.3g}", fontsize=8)
            if si == 0:
                ax.set_ylabel(layer.name, fontsize=8)
        fig.colorbar(im, cax=fig.add_subplot(grid[li, n_steps])).ax.tick_params(labelsize=6)
    ax = fig.add_subplot(grid[n_layers, :n_steps])
    o = t.observables
    if t.key in ("x0", "y0", "phi"):
        for li, layer in enumerate(geometry.layers):
            ax.plot(shown, o["centroid_x"][:, li], "o-", ms=3, label=f"{layer.name} x")
            ax.plot(shown, o["centroid_y"][:, li], "s--", ms=3, label=f"{layer.name} y")
        if t.key in ("x0", "y0"):
            ax.plot(shown, t.values, "k:", lw=1, label=f"{name} itself")
        ax.set_ylabel("centroid [mm]")
    elif t.key == "theta":
        for li, layer in enumerate(geometry.layers):
            ax.plot(shown, o["width_x"][:, li], "o-", ms=3, label=f"{layer.name} x")
            ax.plot(shown, o["width_y"][:, li], "s--", ms=3, label=f"{layer.name} y")
        ax.set_ylabel("width [mm]")
    else:
        ax.plot(shown, o["e_tot"] / 1000.0, "o-", ms=3, label="E_tot")
        ax.set_ylabel("E_tot [GeV]")
    ax.set_xlabel(f"{name} [{unit}]")
    ax.legend(fontsize=6, ncol=3)
    ax.grid(alpha=0.3)
    fixed = ", ".join(f"{k}={v * _UNITS[k][2]:.3g} {_UNITS[k][1]}" for k, v in t.conditions.items())
    kind = "difference to the middle point" if difference else "mean"
    fig.suptitle(title or f"traversal of {name}: {kind} of {t.n_average} showers, same noise ({fixed})", fontsize=9)
    with AtomicOutput(path, force=force) as out:
        fig.savefig(out.tmp, dpi=110, bbox_inches="tight")
    return out.path
