"""Detector-symmetry augmentation: mirror images of showers, with the conditions they imply.

A beam along the calorimeter axis at the centre of a grid of rectangular cells sees the same
detector after x -> -x and after y -> -y: each shower's mirror image is as likely as the shower
itself. Training on both (four showers from one) is free data for models of the scarce Geant4
samples. With the impact point and direction as conditions the mirror moves them too: x -> -x
takes (x0, y0, theta, phi) to (-x0, y0, theta, pi - phi), y -> -y to (x0, -y0, theta, -phi),
since the direction's transverse components are tan(theta) (cos phi, sin phi) along (x, y).

Axes follow ``calogan.geometry``: ``x`` is the row index of a layer's image, ``y`` the column.

>>> from calogan.geometry import Geometry, Layer
>>> g = Geometry("g", (Layer("a", (2, 3), (1.0, 1.0)),))
>>> mirror_permutation(g, "y").tolist()  # cells (r, c) -> (r, 2 - c)
[2, 1, 0, 5, 4, 3]
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.geometry import Geometry

__all__ = ["AUGMENTS", "AXES", "Mirror", "check_mirror_symmetry", "mirror_axes", "mirror_conditions", "mirror_images", "mirror_permutation"]

AXES = ("x", "y")
AUGMENTS = tuple(f"mirror_{a}" for a in AXES)  # the names configs and the command line use


def mirror_axes(names) -> tuple[str, ...]:
    """The axes of augmentation names (``AUGMENTS``).

    >>> mirror_axes(["mirror_x", "mirror_y"])
    ('x', 'y')
    """
    return tuple(name.removeprefix("mirror_") for name in names)


def mirror_permutation(geometry: Geometry, axis: str) -> np.ndarray:
    """(n_cells,) flat index ``p`` such that ``cells[:, p]`` is every layer mirrored along ``axis``.

    Cartesian layers only: their cell centres are symmetric about the axis by construction
    (``Layer.cell_centres``). Polar (CaloChallenge) layers are refused.
    """
    if axis not in AXES:
        raise ConfigError(f"mirror axis must be one of {', '.join(AXES)}, got {axis!r}")
    parts = []
    for i, layer in enumerate(geometry.layers):
        if layer.binning != "cartesian":
            raise ConfigError(
                f"geometry {geometry.name!r}: layer {layer.name!r} is not a grid of rectangular cells; it has no mirror image"
            )
        s = geometry.layer_slice(i)
        idx = np.arange(s.start, s.stop).reshape(layer.shape)
        parts.append((idx[::-1, :] if axis == "x" else idx[:, ::-1]).reshape(-1))
    return np.concatenate(parts)


def mirror_conditions(cond: torch.Tensor, keys: tuple[str, ...], axis: str) -> torch.Tensor:
    """Physical conditions (B, n_cond) whose first ``len(keys)`` columns are ``keys``, mirrored along ``axis``.

    x0 (y0) changes sign for ``x`` (``y``); phi goes to pi - phi (-phi), wrapped into [0, 2 pi);
    e_inc, theta and any particle one-hot columns stay.
    """
    out = cond.clone()
    pos = "x0" if axis == "x" else "y0"
    if pos in keys:
        out[:, keys.index(pos)] = -cond[:, keys.index(pos)]
    if "phi" in keys:
        j = keys.index("phi")
        phi = (math.pi - cond[:, j]) if axis == "x" else -cond[:, j]
        out[:, j] = torch.remainder(phi, 2 * math.pi)
    return out


def check_mirror_symmetry(cells: np.ndarray, geometry: Geometry, axis: str, keys: tuple[str, ...], *, where: str) -> None:
    """Refuse mirroring showers that are visibly not symmetric along ``axis``.

    Unless the impact point along the axis is a condition (then mirroring moves it), the
    energy-weighted mean coordinate of the training showers must be zero within five standard
    errors in every layer: an off-centre beam is not mirror symmetric.
    """
    if ("x0" if axis == "x" else "y0") in keys:
        return
    xs, ys = geometry.cell_centres()
    coord = xs if axis == "x" else ys
    c = np.asarray(cells, dtype=np.float64)
    for i, layer in enumerate(geometry.layers):
        s = geometry.layer_slice(i)
        e = c[:, s].sum(axis=1)
        ok = e > 0
        if ok.sum() < 10:
            continue
        centroid = (c[ok, s] @ coord[s]) / e[ok]
        mean, err = centroid.mean(), centroid.std() / math.sqrt(ok.sum()) + 1e-3 * min(layer.cell_size)
        if abs(mean) > 5 * err:
            raise ConfigError(
                f"{where}: option augment mirror_{axis}: the showers are not symmetric along {axis} "
                f"(layer {layer.name!r} mean centroid {mean:.2f} mm, {abs(mean) / err:.0f} standard errors from 0); "
                f"an off-centre beam has no mirror image unless {'x0' if axis == 'x' else 'y0'} is a condition"
            )


class Mirror:
    """Mirrors each shower of a batch along the configured axes, each with probability 1/2.

    ``__call__(x, cond)`` takes model-space cells (B, n_cells) and physical conditions
    (B, n_cond); it draws from torch's global RNG, which the training state saves. Mirroring
    in model space is exact only if the transform's per-cell constants are mirror symmetric:
    fit the transform on ``mirror_images`` of the training data.
    """

    def __init__(self, geometry: Geometry, axes: tuple[str, ...], keys: tuple[str, ...], device) -> None:
        self.axes = tuple(axes)
        self.keys = tuple(keys)
        self.perms = {a: torch.from_numpy(mirror_permutation(geometry, a)).to(device) for a in self.axes}

    def __call__(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for a in self.axes:
            flip = (torch.rand(x.shape[0], device=x.device) < 0.5)[:, None]
            x = torch.where(flip, x[:, self.perms[a]], x)
            cond = torch.where(flip, mirror_conditions(cond, self.keys, a), cond)
        return x, cond


def mirror_images(data: ShowerData, axes: tuple[str, ...]) -> ShowerData:
    """The showers of ``data`` and all their mirror images along ``axes`` (2^len(axes) x N showers)."""
    out = data
    for a in axes:
        p = mirror_permutation(data.geometry, a)
        conds = dict(out.conditions)
        pos = "x0" if a == "x" else "y0"
        if pos in conds:
            conds[pos] = -conds[pos]
        if "phi" in conds:
            conds["phi"] = np.remainder(math.pi - conds["phi"] if a == "x" else -conds["phi"], 2 * math.pi)
        mirrored = replace(out, cells=np.ascontiguousarray(out.cells[:, p]), conditions=conds)
        out = ShowerData.concatenate([out, mirrored])
    return out
