"""Marginal calibration of a trained generator: cell fluctuations, per-cell quantile maps, response map.

A GAN trained for an hour on a CPU learns the correlated shape of a shower but not its
cell-by-cell statistics: its neighbouring cells move together (a smooth image from 64 latent
numbers, where a sampling calorimeter's cells fluctuate apart), each cell's energy spectrum and
hit probability are slightly off at each incident energy, and its total-energy resolution is
too narrow. A classifier sees all three at once. ``MarginalCalibration`` is fitted after
training, on the training showers only, and applied by the generator itself (torch, ONNX) in
three steps:

1. **Cell fluctuations**: ``noise`` times an independent pseudo-random number per cell is added
   to the generator's model-space output. The numbers are a fixed hash of the latent vector,
   ``sqrt(2) sin(100 z W)`` with a fixed random ``W`` (latent_dim x n_cells): a shower stays a
   function of its latent vector (reproducible for any batching and backend, exportable), and
   for ``|W_c| = 1`` the hash of two cells is uncorrelated to ``exp(-10^4)``.
2. **Per-cell quantile map**: each cell's value goes through the monotone map that carries the
   generated distribution of that cell onto the real one, ``F_real^-1(F_gen(x))``, at the
   incident-energy point nearest the shower's (``n_energy`` points at quantiles of the training
   log E_inc, the first and last at the ends of its range). The map is tabulated at
   ``n_knots + 1`` equally spaced values per cell, directly in MeV, and interpolated linearly
   between knots (continuous: torch and onnxruntime agree to rounding): one read of a knot
   pair per cell replaces the transform's inverse (the exponential and the hit threshold); a
   cell becomes a hit halfway between its last empty and first hit knot. It sets each
   cell's hit probability and its spectrum of hits at every energy while keeping the
   generator's correlations (the map is monotone: a shower's ranking of each cell stays).
3. **Response map**: the whole shower is scaled so that its response r = E_tot / E_inc follows
   the training showers': at the shower's energy point (the one whose cell table it went
   through), r is standardised by the generated median (a straight line in log E across the
   point's showers) and spread, goes through the quantile map of the standardised responses,
   and is put back with the training showers' median and spread. Response and resolution then
   follow the training showers at every energy.

The table is fitted on mirrored training showers (the geometry's symmetries as data) against
generated showers at the same conditions; the noise level is chosen on validation showers by
the fast low-level classifier (``calogan calibrate-model``). Conditions other than E_inc are
pooled: the maps are marginal over position and angle.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .data import ShowerData
from .errors import ConfigError

__all__ = ["MarginalCalibration", "fit_calibration"]

HASH_FREQUENCY = 100.0  # sin(100 u) of u ~ N(0, 1): ~16 periods, a phase uniform to 1e-2000


class MarginalCalibration(nn.Module):
    """The three steps of the module docstring, as buffers (kept out of the model's state dict).

    ``proj`` (latent_dim, n_cells), ``noise`` (); ``centers`` (n_energy,) log E_inc [GeV];
    ``a``/``b`` (n_cells,) put a model-space value at knot position ``x a + b``; ``table``
    (n_energy, n_cells, n_knots + 1) the mapped value of each knot in MeV (per GeV of E_inc when
    ``per_gev`` is 1, the transform's ``energy: fraction``); ``r_lo``/``r_step`` (n_energy,) and
    ``r_table`` (n_energy, n_knots + 1) for the standardised response, ``r_moments`` (6, n_energy)
    its generated median, the median's slope in log E and spread, then the training showers'.
    """

    NAMES = ("proj", "noise", "centers", "a", "b", "table", "per_gev", "r_lo", "r_step", "r_table", "r_moments")

    def __init__(self, state: dict) -> None:
        super().__init__()
        missing = [n for n in self.NAMES if n not in state]
        if missing:
            raise ConfigError(f"not a saved marginal calibration: lacks {', '.join(missing)}")
        for n in self.NAMES:
            self.register_buffer(n, torch.as_tensor(np.asarray(state[n]), dtype=torch.float32).contiguous(), persistent=False)
        self.scaled = bool(float(state["per_gev"]) > 0)  # a Python flag: the exported graph has no branch
        k, c, j1 = self.table.shape
        if self.proj.shape[1] != c or self.a.shape != (c,) or self.b.shape != (c,) or self.r_table.shape[0] != k or k < 2 or j1 < 2:
            raise ConfigError(f"inconsistent marginal calibration shapes: table {tuple(self.table.shape)}, proj {tuple(self.proj.shape)}")
        # flat index of (cell, knot 0) in one energy point's table: a constant of the graph
        self.register_buffer("col", torch.arange(c, dtype=torch.float32) * j1, persistent=False)
        flat = self.table.reshape(-1)
        self.register_buffer("pairs", torch.stack([flat, torch.cat([flat[1:], flat[-1:]])], 1), persistent=False)

    @property
    def n_cells(self) -> int:
        return int(self.table.shape[1])

    def to_dict(self) -> dict:
        return {n: getattr(self, n).detach().cpu().clone() for n in self.NAMES}  # tensors: a weights_only load reads them

    @staticmethod
    def _position(e_inc: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B,) position of log E_inc among the energy points c, in [0, len(c) - 1]."""
        # a sum of clamped ramps rather than a search, so that the graph exports to ONNX
        return ((torch.log(e_inc.float())[:, None] - c[:-1]) / (c[1:] - c[:-1])).clamp(0.0, 1.0).sum(1)

    def showers(self, x: torch.Tensor, z: torch.Tensor, e_inc: torch.Tensor) -> torch.Tensor:
        """Physical showers (B, n_cells) MeV from the generator's model-space output x (B, n_cells),
        its latent vectors z (B, latent_dim) and E_inc (B,) GeV: steps 1-3."""
        return self.response(self.cells(x, z, e_inc), e_inc)

    def cells(self, x: torch.Tensor, z: torch.Tensor, e_inc: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: physical cells (B, n_cells) MeV before the response map."""
        x = x.float() + self.noise * math.sqrt(2.0) * torch.sin(z.float() @ self.proj)
        _, n_c, j1 = self.table.shape
        point = torch.floor(self._position(e_inc, self.centers) + 0.5)  # the nearest energy point
        t = torch.clamp(x * self.a + self.b, 0.0, j1 - 1.0)  # position among the knots
        j = torch.clamp(torch.floor(t), max=j1 - 2.0)
        f = t - j
        # the flat index in float32 (whole numbers below 2^24: exact), one cast; the table holds
        # (knot, next knot) pairs, so one ONNX Gather reads both (indexing would be a GatherND)
        index = (j + self.col + (point * (n_c * j1))[:, None]).reshape(-1).long()
        pair = torch.index_select(self.pairs, 0, index)
        below, above = pair[:, 0].reshape(x.shape), pair[:, 1].reshape(x.shape)
        # linear between knots, so that torch and onnxruntime agree to rounding; the last empty
        # knot holds minus the first hit's energy, so a cell turns into a hit halfway between
        # them, its energy rising from zero (the ReLU)
        cells = torch.relu(below + f * (above - below))
        return cells * e_inc.float()[:, None] if self.scaled else cells

    def response(self, cells: torch.Tensor, e_inc: torch.Tensor) -> torch.Tensor:
        """Step 3 on physical cells (B, n_cells) MeV; e_inc (B,) GeV."""
        e = e_inc.float()
        r = cells.sum(1) / (1000.0 * e)
        log_e = torch.log(e)
        # the shower's energy point: the one whose cell table it went through, so that the map's
        # straight-line trends in log E never straddle a change of table
        k = torch.floor(self._position(e, self.centers) + 0.5).long()
        m = torch.index_select(self.r_moments, 1, k)  # (6, B)
        dl = log_e - torch.index_select(self.centers, 0, k)
        u = (r - m[0] - m[1] * dl) / m[2]
        j1 = self.r_table.shape[1]
        lo, step = torch.index_select(self.r_lo, 0, k), torch.index_select(self.r_step, 0, k)
        t = ((u - lo) / step).clamp(0.0, j1 - 1.0)
        j = torch.clamp(torch.floor(t), max=j1 - 2)
        i = k * j1 + j.long()
        flat = self.r_table.reshape(-1)
        y0, y1 = torch.index_select(flat, 0, i), torch.index_select(flat, 0, i + 1)
        mapped = y0 + (t - j) * (y1 - y0)
        scale = (m[3] + m[4] * dl + m[5] * mapped).clamp_min(0.0) / r.clamp_min(1e-12)
        return cells * scale[:, None]


def _windows(log_e: np.ndarray, centers: np.ndarray, nearest: bool) -> list[np.ndarray]:
    """Rows of each energy point: those whose log E is nearer to it than to any other point
    (``nearest``: the showers its table maps), else those between its two neighbours (the
    support of a linear interpolation between points)."""
    out = []
    for k in range(len(centers)):
        lo = centers[k - 1] if k > 0 else -np.inf
        hi = centers[k + 1] if k + 1 < len(centers) else np.inf
        if nearest:
            lo, hi = 0.5 * (lo + centers[k]), 0.5 * (centers[k] + hi)
        out.append(np.flatnonzero((log_e >= lo) & (log_e <= hi)))
    return out


def _quantile_map(gen: np.ndarray, real: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """The real quantile at each knot's generated CDF, column by column: F_real^-1(F_gen(knot)).

    gen (n_g, C), real (n_r, C), knots (J+1, C) -> (J+1, C).
    """
    g = np.sort(gen, axis=0)
    out = np.empty(knots.shape)
    for c in range(gen.shape[1]):
        u = np.searchsorted(g[:, c], knots[:, c], side="right") / len(g)
        out[:, c] = np.quantile(real[:, c], np.clip(u, 0.0, 1.0))
    return out


def _knots(gen: np.ndarray, n_knots: int, tail: float) -> tuple[np.ndarray, np.ndarray]:
    """Equally spaced knots over each column's generated range (its ``tail`` quantiles cut): lo, step (C,)."""
    lo, hi = np.quantile(gen, tail, axis=0), np.quantile(gen, 1 - tail, axis=0)
    return lo, np.maximum(hi - lo, 1e-6) / n_knots


def _local_moments(log_e: np.ndarray, r: np.ndarray, centers: np.ndarray, windows) -> np.ndarray:
    """Median, its slope in log E and spread of r at each energy point, (3, n_energy): a straight
    line in log E through the point's window (its slope by least squares, its height the median
    of what the slope leaves) and half the central 68 % interval around it (robust: the few
    showers that leak energy set neither)."""
    out = np.empty((3, len(centers)))
    for k, rows in enumerate(windows):
        x, y = log_e[rows] - centers[k], r[rows]
        slope = np.polyfit(x, y, 1)[0] if len(x) > 2 and np.ptp(x) > 0 else 0.0
        flat = y - slope * x
        lo, mid, hi = np.percentile(flat, [16, 50, 84])
        out[:, k] = mid, slope, max(0.5 * (hi - lo), 1e-9)
    return out


def _generate_model_space(model, cond: torch.Tensor, z: torch.Tensor, batch: int = 4096) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(cond[i : i + batch], z[i : i + batch]).float().numpy() for i in range(0, len(cond), batch)])


def fit_calibration(
    model,
    train: ShowerData,
    *,
    noise: float,
    n_energy: int = 16,
    n_knots: int = 128,
    n_generated: int = 60000,
    tail: float = 5e-4,
    seed: int = 0,
) -> MarginalCalibration:
    """Fit the calibration of ``model`` (a GANModel, calibration off) on training showers ``train``.

    ``train`` should already hold the mirror images the model trained with. Showers are
    generated at the training conditions (repeated up to ``n_generated``) with seeded noise.
    """
    tf = model.transform
    if tf.n_cells != train.cells.shape[1]:
        raise ConfigError(f"calibration data has {train.cells.shape[1]} cells, the model {tf.n_cells}")
    if noise < 0:
        raise ConfigError(f"noise must be >= 0, got {noise}")
    if n_energy < 2 or n_knots < 2:
        raise ConfigError(f"n_energy and n_knots must be >= 2, got {n_energy} and {n_knots}")
    if len(train) < 4 * n_energy:
        raise ConfigError(f"{len(train)} training showers are too few for {n_energy} energy points")
    rng = np.random.default_rng(seed)
    latent = model.config.latent_dim
    log_e = np.log(train.e_inc.astype(np.float64))
    # at quantiles of the training energies, the first and last at the ends of their range (no
    # shower is mapped with another energy's table): the maps are finest where most showers are
    # (evenly spaced in log E instead, the validation AUC of eplus-active rose from 0.69 to 0.84)
    centers = np.quantile(log_e, np.linspace(0.0, 1.0, n_energy))
    centers = np.maximum.accumulate(centers + np.arange(n_energy) * 1e-6)  # strictly increasing for repeated energies
    # the hash's frequency is folded into its projection: sin(z proj), proj = 100 W, |W_c| ~ 1
    proj = HASH_FREQUENCY * rng.standard_normal((latent, tf.n_cells)) / math.sqrt(latent)
    # generated showers at the training conditions, and the real ones in model space
    idx = np.tile(np.arange(len(train)), max(1, n_generated // len(train)))
    cond = model.conditions.tensor(train.select(idx))
    z = torch.randn(len(idx), latent, generator=torch.Generator().manual_seed(seed))
    x_bare = _generate_model_space(model, cond, z)
    x_gen = x_bare + noise * math.sqrt(2.0) * np.sin(z.numpy() @ proj.astype(np.float32))
    x_real = tf.forward(train.cells, train.e_inc)
    # each energy point's showers: those its table maps (the response map uses the same)
    w_gen, w_real = _windows(log_e[idx], centers, True), _windows(log_e, centers, True)
    lo, step = _knots(x_gen, n_knots, tail)
    knots = lo + np.arange(n_knots + 1)[:, None] * step  # (J+1, C)
    table = np.stack([_quantile_map(x_gen[g], x_real[r], knots) for g, r in zip(w_gen, w_real)])
    if tf.config.scale == "hits":  # a mapped hit never lands in the gap below the faintest hit
        floor, threshold = (tf.zero_point() + tf.config.gap).numpy(), tf.threshold().numpy()
        table = np.where(table > threshold, np.maximum(table, floor), table)
    per_gev = tf.config.energy == "fraction"
    with torch.no_grad():  # in MeV (per GeV of E_inc for energy fractions): the transform's inverse at each knot
        mev = tf.inverse(torch.as_tensor(table.reshape(-1, tf.n_cells), dtype=torch.float32), torch.ones(n_energy * (n_knots + 1)))
    table = mev.numpy().reshape(n_energy, n_knots + 1, tf.n_cells).transpose(0, 2, 1).copy()  # (K, C, J+1)
    # the last empty knot before the first hit holds minus that hit's energy: interpolated and
    # cut at zero, a cell becomes a hit halfway between them with an energy rising from zero
    hit = table > 0
    first = np.argmax(hit, axis=2)  # the first hit knot (0 where a cell is never or always hit)
    k_idx, c_idx = np.nonzero((first > 0) & hit.any(axis=2))
    table[k_idx, c_idx, first[k_idx, c_idx] - 1] = -table[k_idx, c_idx, first[k_idx, c_idx]]
    state = {
        "proj": proj,
        "noise": np.float32(noise),
        "centers": centers,
        "a": 1.0 / step,
        "b": -lo / step,
        "table": table,
        "per_gev": np.float32(per_gev),
        # the response map, identity until it is fitted below on the cell-mapped showers
        "r_lo": np.zeros(n_energy),
        "r_step": np.ones(n_energy),
        "r_table": np.tile(np.arange(2.0), (n_energy, 1)),
        "r_moments": np.tile([[0.0], [0.0], [1.0], [0.0], [0.0], [1.0]], (1, n_energy)),
    }
    with torch.no_grad():
        e = torch.as_tensor(train.e_inc[idx], dtype=torch.float32)
        cells = MarginalCalibration(state).cells(torch.as_tensor(x_bare), z, e).double().numpy()
    r_gen = cells.sum(1) / (1000.0 * train.e_inc[idx])
    r_real = train.cells.astype(np.float64).sum(1) / (1000.0 * train.e_inc)
    mom_gen, mom_real = _local_moments(log_e[idx], r_gen, centers, w_gen), _local_moments(log_e, r_real, centers, w_real)

    def standardised(r, log_e, windows, mom):
        u = np.empty_like(r)
        for k, rows in enumerate(windows):
            u[rows] = (r[rows] - mom[0, k] - mom[1, k] * (log_e[rows] - centers[k])) / mom[2, k]
        return u

    u_gen, u_real = standardised(r_gen, log_e[idx], w_gen, mom_gen), standardised(r_real, log_e, w_real, mom_real)
    r_lo, r_step, r_table = [], [], []
    for g, r in zip(w_gen, w_real):
        lo_k, step_k = _knots(u_gen[g, None], n_knots, tail)
        r_lo.append(lo_k[0])
        r_step.append(step_k[0])
        r_table.append(_quantile_map(u_gen[g, None], u_real[r, None], lo_k + np.arange(n_knots + 1)[:, None] * step_k)[:, 0])
    state.update(r_lo=np.array(r_lo), r_step=np.array(r_step), r_table=np.stack(r_table), r_moments=np.concatenate([mom_gen, mom_real]))
    return MarginalCalibration(state)


def choose_calibration(model, train: ShowerData, noises, score, *, seed: int = 0, log=print, **fit):
    """Fit one calibration per noise level and keep the one that ``score(model) -> float`` (lower
    is better: a classifier AUC on validation showers) rates best; the bare generator competes
    as ``None``. ``fit`` goes to ``fit_calibration``.

    Returns (calibration or None, rows) with rows [(noise or None, score)], in the order tried.
    """
    before = model.calibration
    model.calibration = None
    rows = [(None, float(score(model)))]
    log(f"  uncalibrated: {rows[0][1]:.3f}")
    best = (rows[0][1], None)
    try:
        for noise in noises:
            calib = fit_calibration(model, train, noise=float(noise), seed=seed, **fit)
            model.calibration = calib
            rows.append((float(noise), float(score(model))))
            log(f"  noise {noise:g}: {rows[-1][1]:.3f}")
            if rows[-1][1] < best[0]:
                best = (rows[-1][1], calib)
    finally:
        model.calibration = before
    return best[1], rows
