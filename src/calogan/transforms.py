"""Invertible preprocessing of cell energies into the space models learn, with saved state."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from calogan.errors import ConfigError

__all__ = ["ShowerTransform", "TransformConfig"]

_ENERGY = ("fraction", "gev")
_SCALE = ("none", "max", "standard", "hits")
# exp(log(eps)) - eps is not exactly 0 in float32: residues below this fraction of eps are
# rounding of an empty cell, not energy, and become exact zeros.
_ROUNDOFF = 1e-3
# exp() of a model-space value far beyond any training cell would overflow float32: cap the log
# energy (in units of TransformConfig.energy) at e^30.
_MAX_LOG = 30.0
# The numpy paths work through the showers in chunks of about this many cells (32 MB of
# float64), so that fitting or transforming 10^5 voxel showers (1.6 x 10^9 cells) never
# holds a float64 copy of them all.
_CHUNK_CELLS = 1 << 22


@dataclass(frozen=True)
class TransformConfig:
    """How physical cells (MeV) map to model space, step by step.

    1. ``energy``: ``"fraction"`` divides each cell by the incident energy (cells / E_inc,
       the ATLAS energy fractions); ``"gev"`` only converts MeV to GeV.
    2. ``log``: take ``log(x + eps)`` (``eps`` in the units of step 1), which spreads the
       decades of cell energies over an order-one range.
    3. ``scale``: ``"none"``; ``"max"`` divides by one number, the largest value of step 2
       in the training data (zeros stay zero, so a ReLU output can make exact zeros);
       ``"standard"`` subtracts each cell's mean and divides by its standard deviation
       (floored at ``std_floor`` times the largest one, so that never-hit cells stay tame);
       ``"hits"`` (with ``log``) treats hit and empty cells apart, which is what makes the hit
       structure of a shower learnable: a hit cell's log energy, ``log(max(x, hit_floor))``,
       is standardised by the mean and standard deviation of that cell's *hits* (the
       deviation floored at ``min_std``), and an empty cell is put ``gap`` standard units
       below where that cell's ``hit_floor`` lies. Between the two lies the cell's
       threshold, halfway into the gap: ``inverse`` makes every value below it an exact
       zero. Faint hits and empty cells, a few keV apart in energy, are then far apart in
       model space, so a generator that blurs them pays for it; ``dequantise`` spreads the
       empty cells of real training showers uniformly over one unit about their value, so
       that a critic compares densities instead of a point mass. ``eps`` is not used.

    Negative cells are clipped to zero before step 1 (the ATLAS recipe sets them to 0) and
    physical cells coming back from ``inverse`` are clipped at zero as well.
    """

    energy: str = "fraction"
    log: bool = False
    eps: float = 1e-6
    scale: str = "max"
    std_floor: float = 1e-3
    hit_floor: float = 1e-6
    gap: float = 2.0
    min_std: float = 1.0

    def __post_init__(self) -> None:
        if self.energy not in _ENERGY:
            raise ConfigError(f"transform.energy must be one of {', '.join(_ENERGY)}, got {self.energy!r}")
        if self.scale not in _SCALE:
            raise ConfigError(f"transform.scale must be one of {', '.join(_SCALE)}, got {self.scale!r}")
        if not isinstance(self.log, bool):
            raise ConfigError(f"transform.log must be true or false, got {self.log!r}")
        if not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise ConfigError(f"transform.eps must be a positive number, got {self.eps!r}")
        if not (isinstance(self.std_floor, (int, float)) and 0 < self.std_floor <= 1):
            raise ConfigError(f"transform.std_floor must be in (0, 1], got {self.std_floor!r}")
        for name in ("hit_floor", "gap", "min_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"transform.{name} must be a positive number, got {value!r}")
        if self.scale == "hits" and not self.log:
            raise ConfigError("transform.scale 'hits' standardises log energies: it needs log: true")
        if self.scale == "max" and self.log:
            # log values are mostly negative: dividing by their maximum flips or blows them up
            raise ConfigError("transform.scale 'max' needs log: false; use scale 'standard' with log: true")


class ShowerTransform(nn.Module):
    """Physical cells (N, n_cells) MeV <-> model space (N, n_cells), fitted on training data.

    ``forward`` and ``inverse`` take numpy arrays or torch tensors and return the same kind;
    the torch path is differentiable and free of data-dependent control flow, so it can sit
    inside a generator's graph (the physics critic, ONNX export). The fitted ``shift`` and
    ``scale`` are buffers: they travel with ``state_dict`` and ``to(device)``.

    Model space: ``x = (g(cells) - shift) / scale`` with ``g`` the energy and log steps of
    ``TransformConfig``; ``e_inc`` is (N,) in GeV.

    >>> t = ShowerTransform.fit(TransformConfig(), np.array([[100.0, 0.0], [50.0, 50.0]]), np.array([1.0, 1.0]))
    >>> t.forward(np.array([[100.0, 0.0]]), np.array([1.0])).tolist()
    [[1.0, 0.0]]
    >>> t.inverse(np.array([[0.5, 0.25]]), np.array([2.0])).tolist()
    [[100.0, 50.0]]
    """

    def __init__(self, config: TransformConfig, shift: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        shift = np.asarray(shift, dtype=np.float64).reshape(-1)
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if shift.shape != scale.shape:
            raise ConfigError(f"transform shift and scale must have one value per cell, got {shift.shape} and {scale.shape}")
        if not (np.isfinite(shift).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ConfigError("transform shift must be finite and scale finite and positive")
        self.config = config
        self.register_buffer("shift", torch.from_numpy(shift.astype(np.float32)))
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))

    @property
    def n_cells(self) -> int:
        return self.shift.shape[0]

    @classmethod
    def fit(cls, config: TransformConfig, cells: np.ndarray, e_inc: np.ndarray) -> ShowerTransform:
        """Fit shift and scale on training cells (N, n_cells) MeV with e_inc (N,) GeV."""
        cells = np.asarray(cells)
        if cells.ndim != 2 or cells.shape[0] == 0:
            raise ConfigError(f"cannot fit a transform on cells of shape {cells.shape}")
        e_inc = np.asarray(e_inc, dtype=np.float64).reshape(-1)
        n = cells.shape[1]
        if config.scale == "none":
            return cls(config, np.zeros(n), np.ones(n))
        # Per-cell count, mean and sum of squared deviations merged over chunks (Chan et al.),
        # and the largest value: each chunk goes through float64 on its own. The hits scale
        # counts only each cell's hits.
        count, mean, m2, top = np.zeros(n), np.zeros(n), np.zeros(n), -np.inf
        for rows in _chunks(cells.shape[0], n):
            c = np.asarray(cells[rows], dtype=np.float64)
            g = _pre(config, c, e_inc[rows], np)
            used = c > 0 if config.scale == "hits" else np.ones(g.shape, dtype=bool)
            k = used.sum(axis=0)
            g_mean = np.where(used, g, 0.0).sum(axis=0) / np.maximum(k, 1)
            delta, both = g_mean - mean, np.maximum(count + k, 1)
            m2 += np.where(used, (g - g_mean) ** 2, 0.0).sum(axis=0) + delta**2 * count * k / both
            mean += delta * k / both
            count += k
            top = max(top, float(g.max()))
        if config.scale == "hits":
            var = np.where(count > 1, m2 / np.maximum(count - 1, 1), 0.0)
            return cls(config, np.where(count > 0, mean, np.log(config.hit_floor)), np.maximum(np.sqrt(var), config.min_std))
        if config.scale == "max":
            if top <= 0:
                raise ConfigError("cannot fit transform scale 'max': every training cell is zero")
            return cls(config, np.zeros(n), np.full(n, top))
        std = np.sqrt(m2 / count)
        return cls(config, mean, np.maximum(std, config.std_floor * max(float(std.max()), 1e-30)))

    def forward(self, cells, e_inc):
        """Physical cells (N, n_cells) MeV and e_inc (N,) GeV -> model space (N, n_cells)."""
        xp = _xp(cells)
        if xp is np:
            cells, e_inc = np.asarray(cells), np.asarray(e_inc, dtype=np.float64).reshape(-1)
            shift, scale = self.shift.cpu().numpy().astype(np.float64), self.scale.cpu().numpy().astype(np.float64)
            zero = self.zero_point().cpu().numpy() if self.config.scale == "hits" else None
            out = np.empty(cells.shape, np.float32)
            for rows in _chunks(cells.shape[0], cells.shape[1]):
                c = np.asarray(cells[rows], dtype=np.float64)
                x = (_pre(self.config, c, e_inc[rows], np) - shift) / scale
                out[rows] = x if zero is None else np.where(c > 0, x, zero)
            return out
        x = (_pre(self.config, cells, e_inc.reshape(-1), torch) - self.shift) / self.scale
        if self.config.scale == "hits":
            x = torch.where(cells > 0, x, self.zero_point().to(x.dtype))
        return x

    def inverse(self, x, e_inc):
        """Model space (N, n_cells) and e_inc (N,) GeV -> physical cells (N, n_cells) MeV, >= 0."""
        xp = _xp(x)
        c = self.config
        if xp is np:
            x = np.asarray(x, dtype=np.float64)
            g = x * self.scale.cpu().numpy() + self.shift.cpu().numpy()
            e = np.asarray(e_inc, dtype=np.float64).reshape(-1, 1)
            if c.scale == "hits":
                g = np.where(x > self.threshold().cpu().numpy(), np.exp(np.minimum(g, _MAX_LOG)), 0.0)
            elif c.log:
                g = np.exp(g) - c.eps
                g = np.where(g > _ROUNDOFF * c.eps, g, 0.0)
            cells = g * 1000.0 * (e if c.energy == "fraction" else 1.0)
            return np.maximum(cells, 0.0).astype(np.float32)
        g = x * self.scale + self.shift
        if c.scale == "hits":
            # a 0/1 mask times the (clamped, so finite) exponential: onnxruntime's Where is 5-10
            # times slower than Greater, Cast and Mul on the same tensor
            g = torch.exp(torch.clamp_max(g, _MAX_LOG)) * (x > self.threshold().to(x.dtype)).to(g.dtype)
        elif c.log:
            g = torch.exp(g) - c.eps
            g = torch.where(g > _ROUNDOFF * c.eps, g, torch.zeros_like(g))
        cells = g * 1000.0
        if c.energy == "fraction":
            cells = cells * e_inc.reshape(-1, 1).to(cells.dtype)
        return torch.clamp_min(cells, 0.0)

    def zero_point(self) -> torch.Tensor:
        """(n_cells,) model-space value of an empty cell: where an output clip makes exact zeros."""
        if self.config.scale == "hits":
            return (float(np.log(self.config.hit_floor)) - self.shift) / self.scale - self.config.gap
        empty = float(np.log(self.config.eps)) if self.config.log else 0.0
        return (empty - self.shift) / self.scale

    def threshold(self) -> torch.Tensor:
        """(n_cells,) model-space value below which ``inverse`` gives an empty cell.

        Halfway into the gap of ``scale: hits``; the empty-cell value itself otherwise.
        """
        if self.config.scale == "hits":
            return self.zero_point() + 0.5 * self.config.gap
        return self.zero_point()

    def dequantise(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space training showers (B, n_cells) with their empty cells spread uniformly over
        one unit about the empty value (``scale: hits``; otherwise ``x`` itself). Draws from
        torch's global RNG."""
        if self.config.scale != "hits":
            return x
        empty = x < self.threshold().to(x.dtype)
        return torch.where(empty, x + torch.rand_like(x) - 0.5, x)

    def to_dict(self) -> dict:
        """The config and fitted state, as plain lists (JSON/YAML/checkpoint friendly)."""
        return {"config": asdict(self.config), "shift": self.shift.cpu().tolist(), "scale": self.scale.cpu().tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ShowerTransform:
        try:
            return cls(TransformConfig(**d["config"]), np.asarray(d["shift"]), np.asarray(d["scale"]))
        except (KeyError, TypeError) as err:
            raise ConfigError(f"not a saved transform: {err}") from None

    def extra_repr(self) -> str:
        c = self.config
        return f"energy={c.energy}, log={c.log}, scale={c.scale}, n_cells={self.n_cells}"


def _chunks(n_rows: int, n_cols: int):
    """Row slices covering n_rows rows in chunks of about _CHUNK_CELLS values."""
    step = max(1, _CHUNK_CELLS // max(n_cols, 1))
    return [slice(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]


def _xp(a):
    return torch if isinstance(a, torch.Tensor) else np


def _pre(config: TransformConfig, cells, e_inc, xp):
    """Steps 1-2 of the transform: clip negatives, divide, log. (N, n_cells) -> (N, n_cells)."""
    if xp is np:
        g = np.maximum(cells, 0.0) / 1000.0
        if config.energy == "fraction":
            g = g / e_inc[:, None]
        if config.scale == "hits":  # hits below the floor count at the floor; empty cells are set apart by the caller
            return np.log(np.maximum(g, config.hit_floor))
        return np.log(g + config.eps) if config.log else g
    g = torch.clamp_min(cells, 0.0) / 1000.0
    if config.energy == "fraction":
        g = g / e_inc[:, None].to(g.dtype)
    if config.scale == "hits":
        return torch.log(torch.clamp_min(g, config.hit_floor))
    return torch.log(g + config.eps) if config.log else g
