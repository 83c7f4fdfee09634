"""Fit the simulator's parameters to reference showers and print the per-energy-bin comparison.

The comparison (``compare``) is the acceptance test of the shipped parameters: per bin of
incident energy, Geant4 against the simulator for the mean response E_tot/E_inc (within 2 %),
the resolution (half the central 68 % interval of E_tot/E_inc over its mean, within 20 %),
the mean layer fractions (within 0.03), the mean shower depth s_d = sum_i i E_i / E_tot
(within 5 %), the energy-weighted RMS width of layer 1 along x and y (within 5 %), the mean
number of hit cells of every layer (within 10 %) and the share of showers that leave a layer
empty (within 0.03, for layers empty in either sample). The per-shower observables are those
of ``calogan.observables``, so the table and ``calogan evaluate`` measure the same things.
``spectrum_rows`` adds the cell-energy spectrum of every layer per bin (reported, no target).

The fit (``calibrate``) runs in stages, each a small least-squares problem with common random
numbers so that the objective is smooth in the parameters:

1. longitudinal: the GFlash corrections from the mean layer fractions, with layer energies
   integrated analytically (incomplete Gamma functions) over fixed per-shower fluctuations;
2. radial: core and tail scales from the mean widths of every layer, by simulation;
3. cells: the cell-level structure by simulation (the soft-photon quanta, the light tail,
   early and late spots, and the radial profile with them) from the hit cells per layer,
   the empty back layers, the radial profile out to the edge, the cell-energy spectra and
   the widths (``cell_structure``);
4. response: the loss distribution from the mean response and resolution (``total``);
5. sampling: e/mip(tau) from the active/total ratio of every layer and the sampling term from
   its shower-by-shower spread, when the reference comes with its other-convention partner
   (the Geant4 ``_total`` and ``_active`` files hold the same showers); from the response and
   resolution of an ``active`` reference alone otherwise.

Pions (an approximate model) are fitted by simulation with Nelder-Mead on the same table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from calogan import metrics
from calogan import observables as obs
from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.simulate.deposit import Tracks
from calogan.simulate.em import profiles, track_losses
from calogan.simulate.materials import Media, media
from calogan.simulate.params import Deposit, EMParams, HadronicParams, Halo, Longitudinal, Radial, Sampling, SimParams
from calogan.simulate.simulator import simulate

__all__ = [
    "SPECTRUM_QUANTILES",
    "TOLERANCES",
    "Row",
    "SpectrumRow",
    "calibrate",
    "cell_structure",
    "compare",
    "format_spectrum",
    "format_table",
    "layer_fractions_expected",
    "resolution",
    "shower_observables",
    "spectrum_rows",
    "summary",
]

# observable -> (kind, tolerance): "rel" |sim/ref - 1| <= tol, "abs" |sim - ref| <= tol
TOLERANCES = {
    "response": ("rel", 0.02),
    "resolution": ("rel", 0.20),
    "fraction": ("abs", 0.03),
    "depth": ("rel", 0.05),
    "width": ("rel", 0.05),
    "hits": ("rel", 0.10),
    "empty": ("abs", 0.03),
}
_MIN_BIN = 20  # showers a bin needs to be compared
EM_STAGES = ("longitudinal", "radial", "cells", "response", "sampling")
HADRON_STAGES = ("mip", "shower", "sampling")


def resolution(ratio: np.ndarray) -> float:
    """Half the central 68 % interval of E_tot/E_inc over its mean: ``calogan.metrics.resolution``, as in the evaluation report."""
    return float(metrics.resolution(ratio))


def shower_observables(data: ShowerData) -> dict[str, np.ndarray]:
    """Per-shower observables of the table, from ``calogan.observables``: e_inc (N,),
    response (N,), fractions (N, L), depth s_d (N,), the layer-1 widths width_x, width_y (N,)
    in mm (NaN where the layer is empty), hits (N, L) the cells with energy > 0 per layer and
    empty (N, L) 1 where a layer holds no energy. Showers that deposit nothing have NaN
    fractions and depth.
    """
    g = data.geometry
    cells = data.cells.astype(np.float64)
    li = 1 if g.n_layers > 1 else 0
    return {
        "e_inc": data.e_inc,
        "response": obs.response(cells, data.e_inc),
        "fractions": obs.energy_fractions(cells, g),
        "depth": obs.shower_depth(cells, g),
        "width_x": obs.width(cells, g, "x")[:, li],
        "width_y": obs.width(cells, g, "y")[:, li],
        "hits": obs.layer_hits(cells, g),
        "empty": (obs.layer_energies(cells, g) <= 0).astype(np.float64),
    }


@dataclass(frozen=True)
class Row:
    """One line of the comparison table."""

    bin: str
    observable: str
    n_ref: int
    n_sim: int
    ref: float
    sim: float
    deviation: float  # relative (sim/ref - 1) or absolute (sim - ref), per TOLERANCES
    tolerance: float
    kind: str
    ref_error: float = math.nan  # statistical uncertainty of ``ref``, relative or absolute as ``deviation``

    @property
    def passed(self) -> bool:
        return bool(abs(self.deviation) <= self.tolerance)


def _bin_stats(obs: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, float]:
    resp = obs["response"][sel]
    stats = {"response": float(resp.mean()), "resolution": resolution(resp)}
    frac = obs["fractions"][sel]
    ok = np.isfinite(frac).all(axis=1)
    for i in range(frac.shape[1]):
        stats[f"fraction_{i}"] = float(frac[ok, i].mean())
    stats["depth"] = float(np.nanmean(obs["depth"][sel]))
    for axis in ("x", "y"):
        stats[f"width_{axis}"] = float(np.nanmean(obs[f"width_{axis}"][sel]))
    for key in ("hits", "empty"):
        for i, value in enumerate(obs[key][sel].mean(axis=0)):
            stats[f"{key}_{i}"] = float(value)
    return stats


def _bin_errors(obs: dict[str, np.ndarray], sel: np.ndarray, stats: dict[str, float]) -> dict[str, float]:
    """Statistical uncertainties of ``_bin_stats``: standard errors of the means, relative
    where the tolerance is; a bootstrap (200 resamples, fixed seed) for the resolution.
    """
    n = int(sel.sum())
    resp = obs["response"][sel]
    rng = np.random.default_rng(0)
    boot = [resolution(resp[rng.integers(0, n, n)]) for _ in range(200)]
    err = {"response": float(resp.std() / math.sqrt(n) / stats["response"]), "resolution": float(np.std(boot) / stats["resolution"])}
    frac = obs["fractions"][sel]
    frac = frac[np.isfinite(frac).all(axis=1)]
    for i in range(frac.shape[1]):
        err[f"fraction_{i}"] = float(frac[:, i].std() / math.sqrt(max(len(frac), 1)))
    for key in ("depth", "width_x", "width_y"):
        v = obs[key][sel]
        v = v[np.isfinite(v)]
        err[key] = float(v.std() / math.sqrt(max(len(v), 1)) / stats[key])
    for i, (h, e) in enumerate(zip(obs["hits"][sel].T, obs["empty"][sel].T)):
        err[f"hits_{i}"] = float(h.std() / math.sqrt(n) / stats[f"hits_{i}"]) if stats[f"hits_{i}"] > 0 else math.nan
        err[f"empty_{i}"] = float(e.std() / math.sqrt(n))
    return err


def compare(ref: ShowerData, sim: ShowerData, bin_width: float = 10.0) -> list[Row]:
    """The comparison table, reference against simulation, per ``bin_width`` GeV energy bin.

    Bins with fewer than 20 showers in either sample are left out. Each row carries the
    reference value's statistical uncertainty (``ref_error``), for judging a miss.
    """
    if bin_width <= 0:
        raise ConfigError(f"bin width must be > 0 GeV, got {bin_width}")
    ro, so = shower_observables(ref), shower_observables(sim)
    top = max(ref.e_inc.max(), sim.e_inc.max())
    edges = np.arange(0.0, top + bin_width, bin_width)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        rs = (ro["e_inc"] >= lo) & (ro["e_inc"] < hi)
        ss = (so["e_inc"] >= lo) & (so["e_inc"] < hi)
        if rs.sum() < _MIN_BIN or ss.sum() < _MIN_BIN:
            continue
        a, b = _bin_stats(ro, rs), _bin_stats(so, ss)
        err = _bin_errors(ro, rs, a)
        label = f"{lo:g}-{hi:g}"
        for key in a:
            family = key.split("_")[0]
            if family == "empty" and a[key] == 0 and b[key] == 0:
                continue  # a layer never empty in either sample: nothing to compare
            kind, tol = TOLERANCES[family]
            dev = b[key] - a[key] if kind == "abs" else (b[key] / a[key] - 1.0 if a[key] != 0 else math.inf)
            rows.append(Row(label, key, int(rs.sum()), int(ss.sum()), a[key], b[key], float(dev), tol, kind, err[key]))
    return rows


def summary(rows: list[Row]) -> dict:
    """Pass counts per observable family and overall."""
    fams: dict[str, list[int]] = {}
    for r in rows:
        f = fams.setdefault(r.observable.split("_")[0], [0, 0])
        f[0] += r.passed
        f[1] += 1
    return {
        "passed": sum(r.passed for r in rows),
        "total": len(rows),
        "per_observable": {k: f"{p}/{t}" for k, (p, t) in fams.items()},
        "worst": {k: max((abs(r.deviation) for r in rows if r.observable.split("_")[0] == k), default=0.0) for k in fams},
    }


def format_table(rows: list[Row], labels: tuple[str, str] = ("Geant4", "param")) -> str:
    """The comparison as text: one line per energy bin and observable, then a summary.

    ``ref stat`` is the statistical uncertainty of the reference value, in the units of the
    deviation: a miss of a few of those may be the reference's own noise.
    """
    head = f"{'bin [GeV]':>9}  {'observable':<12} {labels[0]:>10} {labels[1]:>10} {'deviation':>10} {'ref stat':>9} {'target':>7}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        dev = f"{100 * r.deviation:+.1f}%" if r.kind == "rel" else f"{r.deviation:+.4f}"
        stat = f"{100 * r.ref_error:.1f}%" if r.kind == "rel" else f"{r.ref_error:.4f}"
        tol = f"{100 * r.tolerance:.0f}%" if r.kind == "rel" else f"{r.tolerance:.2f}"
        lines.append(
            f"{r.bin:>9}  {r.observable:<12} {r.ref:>10.4g} {r.sim:>10.4g} {dev:>10} {stat:>9} {tol:>7}  {'pass' if r.passed else 'FAIL'}"
        )
    s = summary(rows)
    lines.append("-" * len(head))
    lines.append(f"passed {s['passed']}/{s['total']}: " + ", ".join(f"{k} {v}" for k, v in s["per_observable"].items()))
    return "\n".join(lines)


@dataclass(frozen=True)
class SpectrumRow:
    """The cell-energy spectrum of one layer in one energy bin: hit cells per shower and
    their variance over their mean, quantiles of the hit-cell energies (MeV) and the
    separation power of log10 E_cell.

    The variance over the mean of the hit count is 1 for cells hit independently (a Poisson
    count) and grows where hits come in clumps or with a shower-wide factor; with the mean it
    sets how often the layer is empty (``empty_<layer>`` in ``compare``)."""

    bin: str
    layer: int
    hits_ref: float
    hits_sim: float
    quantiles: tuple[float, ...]
    ref: tuple[float, ...]
    sim: tuple[float, ...]
    separation: float
    spread_ref: float = math.nan  # variance over mean of the hit count; NaN where nothing is hit
    spread_sim: float = math.nan


SPECTRUM_QUANTILES = (0.1, 0.5, 0.9)


def spectrum_rows(ref: ShowerData, sim: ShowerData, bin_width: float = 10.0) -> list[SpectrumRow]:
    """The cell-energy spectra of reference and simulation per ``bin_width`` GeV bin and layer.

    Bins with fewer than 20 showers in either sample are left out, as in ``compare``; a
    layer with no hit cell in either sample gets NaN quantiles and separation.
    """

    if bin_width <= 0:
        raise ConfigError(f"bin width must be > 0 GeV, got {bin_width}")
    g = ref.geometry
    top = max(ref.e_inc.max(), sim.e_inc.max())
    edges = np.arange(0.0, top + bin_width, bin_width)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        rs = (ref.e_inc >= lo) & (ref.e_inc < hi)
        ss = (sim.e_inc >= lo) & (sim.e_inc < hi)
        if rs.sum() < _MIN_BIN or ss.sum() < _MIN_BIN:
            continue
        cells_r, cells_s = ref.cells[rs], sim.cells[ss]  # the bin's showers, selected once for every layer
        hits_r, hits_s = obs.layer_hits(cells_r, g), obs.layer_hits(cells_s, g)
        for li in range(g.n_layers):
            a = obs.cell_spectrum(cells_r[:, g.layer_slice(li)])
            b = obs.cell_spectrum(cells_s[:, g.layer_slice(li)])
            nan = (math.nan,) * len(SPECTRUM_QUANTILES)
            qa = tuple(np.quantile(a, SPECTRUM_QUANTILES)) if len(a) else nan
            qb = tuple(np.quantile(b, SPECTRUM_QUANTILES)) if len(b) else nan
            sep = metrics.separation_power(np.log10(a), np.log10(b), n_boot=0).value if len(a) and len(b) else math.nan
            spreads = (_dispersion(hits_r[:, li]), _dispersion(hits_s[:, li]))
            rows.append(SpectrumRow(f"{lo:g}-{hi:g}", li, len(a) / rs.sum(), len(b) / ss.sum(), SPECTRUM_QUANTILES, qa, qb, sep, *spreads))
    return rows


def _dispersion(counts: np.ndarray) -> float:
    """Variance over mean of per-shower counts (N,); NaN where the mean is 0."""
    mean = float(np.mean(counts))
    return float(np.var(counts)) / mean if mean > 0 else math.nan


def format_spectrum(rows: list[SpectrumRow], labels: tuple[str, str] = ("reference", "param")) -> str:
    """The spectra as text: hit cells per shower, their variance over mean, and hit-cell energy
    quantiles, reference / simulation."""
    qs = "/".join(f"q{round(100 * q)}" for q in SPECTRUM_QUANTILES)
    head = (
        f"{'bin [GeV]':>9}  {'layer':>5}  {'hit cells':>15}  {'var/mean':>11}"
        f"  {qs + ' [MeV] ' + labels[0]:>28}  {labels[1]:>24}  {'separation':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        fa = "/".join(f"{v:.3g}" for v in r.ref)
        fb = "/".join(f"{v:.3g}" for v in r.sim)
        lines.append(
            f"{r.bin:>9}  {r.layer:>5}  {r.hits_ref:7.1f} {r.hits_sim:7.1f}  {r.spread_ref:5.2f} {r.spread_sim:5.2f}"
            f"  {fa:>28}  {fb:>24}  {r.separation:10.4f}"
        )
    return "\n".join(lines)


# --- longitudinal profile, analytically -------------------------------------------------


def _gamma_cdf(shape: np.ndarray, rate: np.ndarray, x: np.ndarray) -> np.ndarray:
    from scipy.special import gammainc

    return gammainc(shape, rate * np.maximum(x, 0.0))


def layer_fractions_expected(
    e_gev: np.ndarray,
    normals: np.ndarray,
    t_start: np.ndarray,
    cos_theta: np.ndarray,
    med: Media,
    lp: Longitudinal,
    sampling: Sampling | None = None,
) -> np.ndarray:
    """(N, L) expected energy per layer over the shower energy, no spot noise.

    The profile of each shower is fixed by ``normals`` (2, N) as in ``em.profiles``; with
    ``sampling`` the active share f_mip ehat (1 + boost exp(-t/(T tau_e)))/norm weights each
    depth (the ``active`` convention, radial tail factor left out), integrated in closed form:
    exp(-c t) times a Gamma(alpha, beta) density is (beta/(beta + c))^alpha times a
    Gamma(alpha, beta + c) density; norm makes the whole shower's mean share ehat.
    """
    t_max, alpha = profiles(e_gev, normals, med, lp)
    beta = (alpha - 1.0) / t_max
    faces = med.x0_boundaries[None, :] / cos_theta[:, None] - t_start[:, None]  # (N, L+1) depth after the start
    a, b = alpha[:, None], beta[:, None]
    cdf = _gamma_cdf(a, b, faces)
    per_layer = np.diff(cdf, axis=1)
    track = np.zeros_like(per_layer)
    if lp.track_x0 > 0:  # the incident e+-'s own ionisation, as em.primary_track
        n = len(e_gev)
        tracks = Tracks.make(n, theta=np.arccos(cos_theta))
        s_end = tracks.path_from_depth(np.full(n, lp.track_x0), np.arange(n), med.x0_boundaries, med.boundaries)
        e_mev = 1000.0 * np.asarray(e_gev)
        track = track_losses(tracks.crossed(s_end, med)[1], e_mev, med) / e_mev[:, None]
        per_layer = per_layer * (1.0 - track.sum(axis=1))[:, None]
    if sampling is None:
        return per_layer + track
    c = (1.0 / (t_max * sampling.ehat_tau))[:, None]
    damp = (b / (b + c)) ** a
    early = np.diff(_gamma_cdf(a, b + c, faces), axis=1) * damp
    shower = 1.0 - track.sum(axis=1, keepdims=True)
    share = sampling.ehat * (per_layer + shower * sampling.ehat_boost * early) / (1.0 + sampling.ehat_boost * damp) + track
    homogeneous = med.sf_mip >= 1.0
    return np.where(homogeneous[None, :], per_layer + track, med.sf_mip[None, :] * share)


# --- the fit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    data: ShowerData
    convention: str
    obs: dict
    edges: np.ndarray
    bins: list[np.ndarray]  # shower indices of each bin with enough showers


def _reference(data: ShowerData, convention: str, bin_width: float) -> _Reference:
    obs = shower_observables(data)
    edges = np.arange(0.0, data.e_inc.max() + bin_width, bin_width)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = np.flatnonzero((data.e_inc >= lo) & (data.e_inc < hi))
        if len(sel) >= _MIN_BIN:
            bins.append(sel)
    if not bins:
        raise ConfigError(f"the reference has no energy bin of {bin_width:g} GeV with {_MIN_BIN} showers or more")
    return _Reference(data, convention, obs, edges, bins)


def _tiled_conditions(data: ShowerData, k: int) -> dict:
    return {key: np.tile(v, k) for key, v in data.conditions.items()}


def _simulate_like(ref: ShowerData, particle: str, params: SimParams, mode: str, seed: int, oversample: int) -> ShowerData:
    return simulate(
        ref.geometry, particle, np.tile(ref.e_inc, oversample), seed=seed, mode=mode, params=params, **_tiled_conditions(ref, oversample)
    )


def _binned_means(values: np.ndarray, e_inc: np.ndarray, ref: _Reference) -> np.ndarray:
    """(n_bins, ...) nan-means of per-shower values in the reference's bins, matched by energy."""
    out = []
    for sel in ref.bins:
        lo, hi = ref.data.e_inc[sel].min(), ref.data.e_inc[sel].max()
        m = (e_inc >= lo) & (e_inc <= hi)
        out.append(np.nanmean(values[m], axis=0))
    return np.array(out)


def _fit_longitudinal(ref: _Reference, med: Media, em: EMParams, seed: int, log: Callable) -> Longitudinal:
    from scipy.optimize import least_squares

    data = ref.data
    n = len(data)
    rng = np.random.default_rng(seed)
    normals = rng.standard_normal((2, n))
    lp0 = em.longitudinal
    t_start = lp0.conversion_x0 * rng.standard_exponential(n)
    cos_t = np.cos(data.conditions.get("theta", np.zeros(n)))
    sampling = em.sampling if ref.convention == "active" else None
    target = _binned_means(ref.obs["fractions"], data.e_inc, ref)  # (n_bins, L)

    def model(x):
        lp = replace(lp0, t_offset=x[0], t_slope=x[1], a_offset=x[2], a_slope=x[3])
        e = layer_fractions_expected(data.e_inc, normals, t_start, cos_t, med, lp, sampling)
        frac = e / e.sum(axis=1, keepdims=True)
        return _binned_means(frac, data.e_inc, ref)

    # small fractions (the CaloGAN back layer holds 0.2 %) are fitted to 10 % of their value:
    # they set the leakage out of the back, whose fluctuations are the total resolution
    scale = np.minimum(0.003, 0.1 * np.maximum(target, 1e-5))

    def residuals(x):
        return ((model(x) - target) / scale).ravel()

    x0 = np.array([lp0.t_offset, lp0.t_slope, lp0.a_offset, lp0.a_slope])
    fit = least_squares(residuals, x0, x_scale=[0.5, 0.05, 0.5, 0.05], diff_step=1e-3)
    lp = replace(lp0, t_offset=float(fit.x[0]), t_slope=float(fit.x[1]), a_offset=float(fit.x[2]), a_slope=float(fit.x[3]))
    worst = np.abs(model(fit.x) - target).max()
    log(
        f"  longitudinal: t_offset {lp.t_offset:+.3f} t_slope {lp.t_slope:+.4f} a_offset {lp.a_offset:+.3f} a_slope {lp.a_slope:+.4f} (worst mean-fraction miss {worst:.4f})"
    )
    return lp


def _lateral_layers(ref: _Reference, geometry) -> list[int]:
    """Layers whose lateral shape is fitted: those holding >= 5 % of the reference energy."""
    return [li for li in range(geometry.n_layers) if np.nanmean(ref.obs["fractions"][:, li]) >= 0.05]


def _lateral_is_table(ref: _Reference, data: ShowerData) -> np.ndarray:
    """(k,) which columns of ``_lateral_targets`` are the table's layer-1 widths."""
    flags = []
    table_layer = 1 if data.geometry.n_layers > 1 else 0
    for li in _lateral_layers(ref, data.geometry):
        layer = data.geometry.layers[li]
        if layer.n_cells > _CORE_CELLS:
            flags.append(False)  # the core share
        flags += [li == table_layer for n_axis in layer.shape if n_axis >= 4]
    return np.array(flags)


_CORE_CELLS = 4  # the core share is that of a layer's 4 hottest cells (a beam entering at a cell corner)


def _lateral_targets(ref: _Reference, data: ShowerData) -> np.ndarray:
    """(N, k) lateral observables of every layer holding >= 5 % of the reference energy: the
    share of its 4 hottest cells (the core) and its widths along each axis of >= 4 cells.
    """
    g = data.geometry
    cells = data.cells.astype(np.float64)
    core = obs.core_fraction(cells, g, _CORE_CELLS)
    widths = obs.width(cells, g, "x"), obs.width(cells, g, "y")
    cols = []
    for li in _lateral_layers(ref, g):
        layer = g.layers[li]
        if layer.n_cells > _CORE_CELLS:
            cols.append(core[:, li])
        cols += [w[:, li] for w, n_axis in zip(widths, layer.shape) if n_axis >= 4]  # too few cells across to measure a width otherwise
    return np.stack(cols, axis=1)


def _fit_radial(ref: _Reference, particle: str, params: SimParams, seed: int, oversample: int, log: Callable) -> Radial:
    """Core and tail scales, early tail and core probability from the lateral observables.

    The table's layer-1 widths are fitted to 1 %, the other observables (core shares, the
    widths of other layers) to 3 %: the profile has too few parameters to get all exactly.
    """
    from scipy.optimize import least_squares

    data = ref.data
    target = _binned_means(_lateral_targets(ref, data), data.e_inc, ref)
    weight = 1.0 / np.where(_lateral_is_table(ref, data), 0.01, 0.03)
    rp0 = params.em.radial
    tiled = np.tile(data.e_inc, oversample)
    names = ("core_scale", "tail_scale", "tail_early", "p_scale")

    def model(x):
        rp = replace(rp0, **dict(zip(names, (float(v) for v in x))))
        p = replace(params, em=replace(params.em, radial=rp))
        sim = _simulate_like(data, particle, p, ref.convention, seed, oversample)
        return _binned_means(_lateral_targets(ref, sim), tiled, ref)

    def residuals(x):
        return ((model(x) / target - 1.0) * weight).ravel()

    x0 = [getattr(rp0, k) for k in names]
    fit = least_squares(
        residuals, x0, bounds=([0.05, 0.05, 0.0, 0.05], [20.0, 20.0, 20.0, 3.0]), diff_step=0.02, x_scale=[0.3, 0.3, 0.5, 0.1]
    )
    rp = replace(rp0, **dict(zip(names, (float(v) for v in fit.x))))
    miss = np.abs(model(fit.x) / target - 1)
    table = _lateral_is_table(ref, data)
    log(
        f"  radial: {', '.join(f'{k} {getattr(rp, k):.3f}' for k in names)}"
        f" (worst miss: layer-1 widths {100 * miss[:, table].max(initial=0):.1f}%, other lateral {100 * miss[:, ~table].max(initial=0):.1f}%)"
    )
    return rp


# --- cell-level structure ------------------------------------------------------------------

# Where a fit of the cell-level structure starts when the parameters have none yet (a
# version-1 file): near an earlier fit to the Geant4 e+. Physically: soft photons of 1-3 MeV,
# at the minimum of the photon attenuation in lead, fly ~3.3 X0 (5 cm in Pb/LAr); those that
# fly under ~7 X0 land among the shower's own deposits and are left to its spots; Geant4's
# deposits far from the axis are ~0.7 MeV (median), about one per cell.
_CELL_START = {
    "radial.core_scale": 0.9,
    "radial.core_age": 1.7,
    "radial.tail_scale": 0.9,
    "radial.tail_early": 1.0,
    "radial.p_scale": 1.0,
    "radial.outer_spots": 3.2,
    "radial.core_power": 1.6,
    "radial.core_max": 0.93,
    "longitudinal.sigma_scale": 0.7,
    "deposit.spots_exponent": 0.5,
    "deposit.early_spots": 0.4,
    "deposit.early_squeeze": 1.6,
    "deposit.late_spots": 0.33,
    "deposit.late_stretch": 2.2,
    "deposit.wander": 0.35,
    "deposit.weight_shape": 4.5,
    "deposit.depth_spread": 0.5,
    "deposit.spots_per_gev": 28.3,  # 200 depths at 50 GeV ...
    "deposit.lateral": 8,  # ... of 8 spots each
    "halo.per_gev": 14.5,
    "halo.exponent": 0.95,
    "halo.flight_x0": 3.3,
    "halo.min_flight_x0": 7.0,
    "halo.near_per_gev": 0.5,
    "halo.near_flight_x0": 1.0,
    "halo.forward": -0.3,
    "halo.energy_mev": 0.75,
    "halo.energy_sigma": 0.84,
    "halo.tiny": 0.14,
    "halo.merge": 0.85,
    "halo.whole": 0.07,
}
# parameter -> (lower, upper) bound of the cell-level fit
_CELL_BOUNDS = {
    "radial.core_scale": (0.05, 20.0),
    "radial.core_age": (0.0, 20.0),
    "radial.tail_scale": (0.05, 20.0),
    "radial.tail_early": (0.0, 20.0),
    "radial.p_scale": (0.05, 3.0),
    "radial.outer_spots": (1.0, 10.0),
    "radial.core_power": (0.5, 4.0),
    "radial.core_max": (0.5, 1.0),
    "longitudinal.sigma_scale": (0.3, 1.5),  # with the spots' own noise, the layer fractions' spread
    "deposit.spots_exponent": (0.0, 1.0),
    "deposit.early_spots": (0.0, 0.45),
    "deposit.early_squeeze": (1.0, 10.0),
    "deposit.late_spots": (0.0, 0.45),
    "deposit.late_stretch": (1.0, 10.0),
    "deposit.wander": (0.0, 5.0),
    "deposit.weight_shape": (0.3, 20.0),
    "deposit.depth_spread": (0.0, 1.5),
    "halo.per_gev": (0.0, 600.0),  # here: the number of quanta of a 50 GeV shower (see _fit_cells)
    "halo.exponent": (0.2, 1.5),
    "halo.flight_x0": (0.3, 20.0),
    "halo.min_flight_x0": (0.0, 30.0),
    "halo.near_per_gev": (0.0, 400.0),  # here: the number of near quanta of a 50 GeV shower
    "halo.near_flight_x0": (0.1, 10.0),
    "halo.forward": (-0.9, 0.9),
    "halo.energy_mev": (0.05, 10.0),
    "halo.energy_sigma": (0.0, 3.0),
    "halo.tiny": (0.0, 0.5),
    "halo.merge": (0.1, 1.0),
}
# The numbers of spots and quanta of a 50 GeV shower set the simulator's speed (the
# benchmark's energy): the cell fit keeps the first (depths times ``Deposit.lateral``,
# 1,600) and bounds the second (far quanta at most 600, ~2.6 MeV each of the 1.5 GeV
# Geant4 leaves beyond 10 cm of the axis of a 50 GeV e+, near ones at most 400); it
# chooses how both change with energy.
_SPEED_ENERGY = 50.0
_SPECTRUM_QUANTILES = (0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9)
_N_RINGS = 10
_RING_RATIO = 1.6


def _get(em: EMParams, name: str) -> float:
    section, key = name.split(".")
    return float(getattr(getattr(em, section), key))


def _set(em: EMParams, values: dict[str, float]) -> EMParams:
    """``em`` with the dotted parameters ``values`` ({"halo.per_gev": 12.0, ...}) replaced."""
    sections: dict[str, dict[str, float]] = {}
    for name, value in values.items():
        section, key = name.split(".")
        sections.setdefault(section, {})[key] = value if isinstance(value, int) else float(value)
    return replace(em, **{sec: replace(getattr(em, sec), **kv) for sec, kv in sections.items()})


def _ring_edges(geometry) -> list[np.ndarray]:
    """Per layer, ``_N_RINGS`` rings out to the farthest cell centre (mm), each ``_RING_RATIO``
    times wider than the one inside it from the innermost cell centre on: the steep core is
    resolved cell by cell, the tail in a few wide rings. Rings beyond the last edge hold no
    cell and stay empty."""
    out = []
    for layer in geometry.layers:
        x, y = layer.cell_centres()
        r = np.hypot(x, y)
        inner, outer = float(r.min()), float(r.max()) * (1 + 1e-9)
        edges = [0.0]
        while edges[-1] < outer and len(edges) <= _N_RINGS:
            edges.append(max(inner, 1e-3) * _RING_RATIO ** (len(edges) - 1) * 1.5)
        edges[-1] = max(edges[-1], outer)
        edges += [edges[-1] * (1 + k) for k in range(1, _N_RINGS + 2 - len(edges))]  # empty padding rings
        out.append(np.array(edges))
    return out


def cell_structure(data: ShowerData, ref: _Reference) -> dict[str, np.ndarray]:
    """The cell-level statistics the ``cells`` fit matches, in the reference's energy bins.

    hits (n_bins, L) mean cells with energy per layer; empty (n_bins, L) share of showers
    with an empty layer; ring_energy and ring_occupancy (n_bins, L, R) the mean energy
    (per GeV of the incident energy) and share of hit cells in R rings of cell-centre
    distance from the z axis; spectrum (L, Q) quantiles of the hit-cell energies (MeV) of
    each layer, pooled over the sample; lateral (n_bins, k) the ``_lateral_targets``;
    fraction_spread (n_bins, k) the standard deviations of the energy fractions of the layers
    holding >= 5 % of the energy (the longitudinal profile's fluctuations and the spots'; empty
    showers left out); spread
    (n_bins, k') the standard deviations of the layers' centroids and e_ratio (n_bins, k'')
    the median E_ratio of their two hottest cells: how lumpy the core is shower by shower;
    smooth (n_bins, L, R) the rings' median cell energy over the mean (``_ring_smoothness``).
    """
    g = data.geometry
    cells = data.cells.astype(np.float64)
    e_inc = data.e_inc
    ring_e, ring_occ = [], []
    for li, edges in enumerate(_ring_edges(g)):
        n_in = obs.ring_hits(np.ones((1, g.n_cells)), g, li, edges)[0]  # cells per ring
        ring_e.append(obs.ring_energy(cells, g, li, edges) / e_inc[:, None])
        ring_occ.append(obs.ring_hits(cells, g, li, edges) / np.maximum(n_in, 1))
    spectrum = []
    for li in range(g.n_layers):
        hits = obs.cell_spectrum(cells[:, g.layer_slice(li)])
        spectrum.append(np.quantile(hits, _SPECTRUM_QUANTILES) if len(hits) else np.zeros(len(_SPECTRUM_QUANTILES)))
    return {
        "hits": _binned_means(obs.layer_hits(cells, g), e_inc, ref),
        "empty": _empty_layers(cells, g, e_inc, ref),
        "ring_energy": _binned_means(np.stack(ring_e, axis=1), e_inc, ref),
        "ring_occupancy": _binned_means(np.stack(ring_occ, axis=1), e_inc, ref),
        "spectrum": np.array(spectrum),
        "lateral": _binned_means(_lateral_targets(ref, data), e_inc, ref),
        "fraction_spread": _binned_spreads(obs.energy_fractions(cells, g)[:, _lateral_layers(ref, g)], e_inc, ref),
        "spread": _binned_spreads(_centroids(ref, data), e_inc, ref),
        "smooth": _ring_smoothness(cells, e_inc, ref),
        "e_ratio": _binned_medians(obs.e_ratio(cells, g)[:, _lateral_layers(ref, g)], e_inc, ref),
    }


def _empty_layers(cells: np.ndarray, geometry, e_inc: np.ndarray, ref: _Reference) -> np.ndarray:
    """(n_bins, L) share of the showers (N, n_cells) of each of the reference's bins with nothing in a layer."""
    return _binned_means((obs.layer_energies(cells, geometry) <= 0).astype(np.float64), e_inc, ref)


def _ring_smoothness(cells: np.ndarray, e_inc: np.ndarray, ref: _Reference) -> np.ndarray:
    """(n_bins, L, R) per ring of each layer, the mean over its cells of the median of the
    cell's energy over the showers of a bin, over its mean: near 1 where a shower covers a
    cell smoothly, small where a few lumps make its energy (0 where it is hit in under half
    of the showers)."""
    g = ref.data.geometry
    rings = [obs._rings(g, li, edges) for li, edges in enumerate(_ring_edges(g))]
    out = np.zeros((len(ref.bins), g.n_layers, _N_RINGS))
    for b, sel in enumerate(ref.bins):
        lo, hi = ref.data.e_inc[sel].min(), ref.data.e_inc[sel].max()
        c = cells[(e_inc >= lo) & (e_inc <= hi)]
        mean = c.mean(axis=0)
        ratio = np.divide(np.median(c, axis=0), mean, out=np.zeros(g.n_cells), where=mean > 0)
        for li, ring in enumerate(rings):
            r = ratio[g.layer_slice(li)]
            for k in range(_N_RINGS):
                if (ring == k).any():
                    out[b, li, k] = r[ring == k].mean()
    return out


def _centroids(ref: _Reference, data: ShowerData) -> np.ndarray:
    """(N, k) energy-weighted centroids (mm) of the ``_lateral_targets`` layers along each axis of >= 4 cells."""
    g = data.geometry
    cells = data.cells.astype(np.float64)
    cx, cy = obs.centroid(cells, g, "x"), obs.centroid(cells, g, "y")
    cols = []
    for li in _lateral_layers(ref, g):
        cols += [c[:, li] for c, n_axis in zip((cx, cy), g.layers[li].shape) if n_axis >= 4]
    return np.stack(cols, axis=1)


def _binned_spreads(values: np.ndarray, e_inc: np.ndarray, ref: _Reference) -> np.ndarray:
    """(n_bins, k) standard deviations of per-shower values (N, k) in the reference's bins, NaN left out."""
    out = []
    for sel in ref.bins:
        lo, hi = ref.data.e_inc[sel].min(), ref.data.e_inc[sel].max()
        out.append(np.nanstd(values[(e_inc >= lo) & (e_inc <= hi)], axis=0))
    return np.array(out)


def _binned_medians(values: np.ndarray, e_inc: np.ndarray, ref: _Reference) -> np.ndarray:
    """(n_bins, k) medians of per-shower values (N, k) in the reference's bins, NaN left out."""
    out = []
    for sel in ref.bins:
        lo, hi = ref.data.e_inc[sel].min(), ref.data.e_inc[sel].max()
        out.append(np.nanmedian(values[(e_inc >= lo) & (e_inc <= hi)], axis=0))
    return np.array(out)


def _cell_residuals(sim: dict[str, np.ndarray], target: dict[str, np.ndarray], table: np.ndarray) -> np.ndarray:
    """Residuals of the ``cells`` fit: each deviation over the precision it is fitted to.

    Hit counts to 2 %, empty-layer shares to 0.01, ring energies to 25 % (rings holding
    more than 1e-4 of the incident energy; 5 % for the core rings, holding more than 1 %:
    a classifier reads a layer's core shape to a percent), ring occupancies to 0.05,
    spectrum quantiles to 5 %, the table's layer-1 widths to 1 %, the other lateral
    observables to 3 %, the layer fractions' spreads to 5 %, the centroids' spreads to 5 %,
    the median E_ratio to 10 % and the rings' smoothness to 0.1: the hit counts, which the
    acceptance table holds to 10 %, weigh most.
    """
    hits_ok = target["hits"] > 0.5
    ring_ok = target["ring_energy"] > 0.1  # MeV per GeV: 1e-4 of the incident energy
    ring_tol = np.where(target["ring_energy"] > 10.0, 0.05, 0.25)
    spec_ok = target["spectrum"] > 0
    floor = 1e-9
    parts = [
        ((sim["hits"] / np.where(hits_ok, target["hits"], 1.0) - 1.0) / 0.02)[hits_ok],
        ((sim["empty"] - target["empty"]) / 0.01).ravel(),
        (np.log(np.maximum(sim["ring_energy"], floor) / np.where(ring_ok, target["ring_energy"], 1.0)) / ring_tol)[ring_ok],
        ((sim["ring_occupancy"] - target["ring_occupancy"]) / 0.05).ravel(),
        (np.log(np.maximum(sim["spectrum"], floor) / np.where(spec_ok, target["spectrum"], 1.0)) / 0.05)[spec_ok],
        ((sim["lateral"] / target["lateral"] - 1.0) / np.where(table, 0.01, 0.03)[None, :]).ravel(),
        ((sim["fraction_spread"] / target["fraction_spread"] - 1.0) / 0.05).ravel(),
        ((sim["spread"] / target["spread"] - 1.0) / 0.05).ravel(),
        ((sim["smooth"] - target["smooth"]) / 0.1).ravel(),
        ((sim["e_ratio"] / target["e_ratio"] - 1.0) / 0.1).ravel(),
    ]
    out = np.concatenate(parts)
    return np.where(np.isfinite(out), out, 100.0)  # an empty simulated bin counts as a large miss


def _fit_cells(
    ref: _Reference, particle: str, params: SimParams, seed: int, oversample: int, log: Callable, max_steps: int = 40
) -> SimParams:
    """The cell-level structure: the soft-photon halo, the light early, late and tail spots,
    and the radial profile with them, from the hit counts, empty layers, radial profile,
    cell-energy spectra, lateral observables and shower-by-shower core fluctuations of the
    reference (``cell_structure``).
    """
    from scipy.optimize import least_squares

    data = ref.data
    em0 = params.em
    if em0.halo.per_gev <= 0:
        em0 = _set(em0, _CELL_START)  # called without ``calibrate``, which does this first
    names = list(_CELL_BOUNDS)
    target = cell_structure(data, ref)
    table = _lateral_is_table(ref, data)
    keep = target["empty"].max(axis=0) > 0  # layers that are ever empty in the reference
    target["empty"] = target["empty"][:, keep]

    n_speed = em0.deposit.spots_per_gev * _SPEED_ENERGY**em0.deposit.spots_exponent

    def em_of(x) -> EMParams:
        values = dict(zip(names, x))
        values["deposit.spots_per_gev"] = n_speed / _SPEED_ENERGY ** values["deposit.spots_exponent"]
        values["halo.per_gev"] = values["halo.per_gev"] / _SPEED_ENERGY ** values["halo.exponent"]
        values["halo.near_per_gev"] = values["halo.near_per_gev"] / _SPEED_ENERGY ** values["halo.exponent"]
        return _set(em0, values)

    def structure(x) -> dict[str, np.ndarray]:
        p = replace(params, em=em_of(x))
        sim = _simulate_like(data, particle, p, ref.convention, seed, oversample)
        out = cell_structure(sim, ref)
        out["empty"] = out["empty"][:, keep]
        return out

    def residuals(x):
        return _cell_residuals(structure(x), target, table)

    per_speed = ("halo.per_gev", "halo.near_per_gev")  # fitted as numbers of quanta at 50 GeV
    x0 = np.array([_get(em0, k) * (_SPEED_ENERGY**em0.halo.exponent if k in per_speed else 1.0) for k in names])
    lower, upper = (np.array([_CELL_BOUNDS[k][i] for k in names]) for i in (0, 1))
    x0 = np.clip(x0, lower, upper)
    start = residuals(x0)
    fit = least_squares(
        residuals, x0, bounds=(lower, upper), diff_step=0.03, x_scale=np.maximum(0.1 * np.abs(x0), 0.02), max_nfev=max_steps
    )
    em = em_of(fit.x)
    final = structure(fit.x)
    hits = np.abs(final["hits"] / np.where(target["hits"] > 0.5, target["hits"], np.nan) - 1)
    log(
        f"  cells: {', '.join(f'{k} {_get(em, k):.3g}' for k in names)}"
        f" (cost {0.5 * np.sum(start**2):.0f} -> {fit.cost:.0f} after {fit.nfev} steps, {fit.message};"
        f" worst hit-count miss {100 * np.nanmax(hits):.1f}%, empty-layer share {np.abs(final['empty'] - target['empty']).max(initial=0):.3f})"
    )
    return replace(params, em=em)


def _fit_loss(ref: _Reference, particle: str, params: SimParams, seed: int, oversample: int, log: Callable) -> Deposit:
    """Loss distribution from the total-convention response and resolution."""
    from scipy.optimize import least_squares
    from scipy.special import gammaincinv

    data = ref.data
    dp0 = params.em.deposit
    lossless = replace(dp0, loss_mean=0.0, loss_mean_stochastic=0.0, loss_sigma_stochastic=0.0, loss_sigma_constant=0.0)
    sim = _simulate_like(data, particle, replace(params, em=replace(params.em, deposit=lossless)), "total", seed, oversample)
    e_inc = sim.e_inc
    contained = sim.cells.sum(axis=1, dtype=np.float64) / (1000.0 * e_inc)
    u = np.random.default_rng(seed + 1).random(len(e_inc))
    ref_resp = ref.obs["response"]
    target = np.array([[ref_resp[s].mean(), resolution(ref_resp[s])] for s in ref.bins])

    def model(x):
        mean = np.maximum(x[0] + x[1] / np.sqrt(e_inc), 1e-6)
        sigma = np.sqrt(x[2] ** 2 / e_inc + x[3] ** 2) + 1e-7
        shape = (mean / sigma) ** 2
        loss = gammaincinv(shape, u) * mean / shape
        resp = contained * (1.0 - np.clip(loss, 0.0, 1.0))
        out = []
        for sel in ref.bins:
            lo, hi = data.e_inc[sel].min(), data.e_inc[sel].max()
            m = (e_inc >= lo) & (e_inc <= hi)
            out.append([resp[m].mean(), resolution(resp[m])])
        return np.array(out)

    def residuals(x):
        m = model(x)
        return np.concatenate([(m[:, 0] / target[:, 0] - 1) / 0.001, (m[:, 1] / target[:, 1] - 1) / 0.03])

    x0 = [max(dp0.loss_mean, 1e-4), dp0.loss_mean_stochastic, max(dp0.loss_sigma_stochastic, 1e-4), max(dp0.loss_sigma_constant, 1e-4)]
    fit = least_squares(
        residuals, x0, bounds=([0.0, -0.05, 0.0, 0.0], [0.5, 0.05, 0.5, 0.5]), diff_step=1e-3, x_scale=[0.003, 0.003, 0.003, 0.001]
    )
    dp = replace(
        dp0,
        loss_mean=float(fit.x[0]),
        loss_mean_stochastic=float(fit.x[1]),
        loss_sigma_stochastic=float(fit.x[2]),
        loss_sigma_constant=float(fit.x[3]),
    )
    m = model(fit.x)
    log(
        f"  response: loss {dp.loss_mean:.4f} + {dp.loss_mean_stochastic:+.4f}/sqrt(E), spread sqrt({dp.loss_sigma_stochastic:.4f}^2/E + {dp.loss_sigma_constant:.4f}^2)"
        f" (worst response miss {100 * np.abs(m[:, 0] / target[:, 0] - 1).max():.2f}%, resolution {100 * np.abs(m[:, 1] / target[:, 1] - 1).max():.1f}%)"
    )
    return dp


def _fit_sampling_pair(
    total: _Reference, active: _Reference, med: Media, particle: str, params: SimParams, seed: int, oversample: int, log: Callable
) -> tuple[Sampling, Halo]:
    """e/mip from the per-layer active/total ratios of the same showers, then the sampling term.

    First e/mip(tau) alone, analytically; then with the tail and soft-photon factors by
    simulation, which also match the active/total ratio of the lateral observables (the
    tail is seen less) and the hit cells per layer of the active reference (a soft photon's
    quantum is seen only when it converts in a gap). Returns the active shares and the halo.
    """
    from scipy.optimize import least_squares

    em = params.em
    data = total.data
    n = len(data)
    rng = np.random.default_rng(seed)
    normals = rng.standard_normal((2, n))
    t_start = em.longitudinal.conversion_x0 * rng.standard_exponential(n)
    cos_t = np.cos(data.conditions.get("theta", np.zeros(n)))
    g = data.geometry
    e_tot = g.layer_sums(data.cells.astype(np.float64))
    e_act = g.layer_sums(active.data.cells.astype(np.float64))
    keep = [i for i in range(g.n_layers) if np.nanmean(total.obs["fractions"][:, i]) > 0.01]
    target = np.array([[e_act[s, i].sum() / e_tot[s, i].sum() for i in keep] for s in total.bins])
    base = layer_fractions_expected(data.e_inc, normals, t_start, cos_t, med, em.longitudinal)
    sp0 = replace(em.sampling, ehat_tail=1.0)

    def analytic(x):
        sp = replace(sp0, ehat=x[0], ehat_boost=x[1], ehat_tau=x[2])
        act = layer_fractions_expected(data.e_inc, normals, t_start, cos_t, med, em.longitudinal, sp)
        return np.array([[act[s, i].sum() / base[s, i].sum() for i in keep] for s in total.bins])

    fit = least_squares(
        lambda x: ((analytic(x) / target - 1) / 0.002).ravel(),
        [sp0.ehat, sp0.ehat_boost, sp0.ehat_tau],
        bounds=([0.05, 0.0, 0.01], [2.0, 5.0, 50.0]),
        x_scale=[0.05, 0.1, 0.3],
    )
    # sampling term: the spread of the active/total ratio of the same showers, times sqrt(E)
    ratio = e_act.sum(axis=1) / e_tot.sum(axis=1)
    a_ref = _sampling_term(ratio, data.e_inc, total)
    stochastic = a_ref / math.sqrt(med.mip_per_period[med.reference_layer()])
    sp1 = replace(sp0, ehat=float(fit.x[0]), ehat_boost=float(fit.x[1]), ehat_tau=float(fit.x[2]), stochastic=stochastic)

    sim_t = _simulate_like(data, particle, params, "total", seed, oversample)
    tiled = sim_t.e_inc
    sim_e_tot = g.layer_sums(sim_t.cells.astype(np.float64))
    lat_ratio = _binned_means(_lateral_targets(total, active.data), data.e_inc, total) / _binned_means(
        _lateral_targets(total, data), data.e_inc, total
    )
    sim_lat_t = _binned_means(_lateral_targets(total, sim_t), tiled, total)
    # the cells that see anything in the active convention: set by the share of the soft photons
    hits_target = _binned_means(obs.layer_hits(active.data.cells, g), data.e_inc, total)
    hits_ok = hits_target > 0.5
    # and the showers that leave a layer dark: the grains of the shower's end (``Sampling.grain_age``)
    empty_target = _empty_layers(active.data.cells, g, data.e_inc, total)
    empty_keep = empty_target.max(axis=0) > 0  # layers that are ever empty in the reference
    bins = [(data.e_inc[s].min(), data.e_inc[s].max()) for s in total.bins]

    def with_shares(x) -> EMParams:
        sp = replace(sp1, ehat=x[0], ehat_boost=x[1], ehat_tau=x[2], ehat_tail=x[3], grain_age=x[6])
        return replace(em, sampling=sp, halo=replace(em.halo, ehat=x[4], whole=x[5]))

    def simulated(x):
        sim_a = _simulate_like(data, particle, replace(params, em=with_shares(x)), "active", seed, oversample)
        sim_e_act = g.layer_sums(sim_a.cells.astype(np.float64))
        layers = []
        for lo, hi in bins:
            m = (tiled >= lo) & (tiled <= hi)
            layers.append([sim_e_act[m, i].sum() / sim_e_tot[m, i].sum() for i in keep])
        lat = _binned_means(_lateral_targets(total, sim_a), tiled, total) / sim_lat_t
        hits = _binned_means(obs.layer_hits(sim_a.cells, g), tiled, total)
        empty = _empty_layers(sim_a.cells, g, tiled, total)
        return np.array(layers), lat, hits, empty

    def residuals(x):
        layers, lat, hits, empty = simulated(x)
        return np.concatenate(
            [
                ((layers / target - 1) / 0.002).ravel(),
                ((lat / lat_ratio - 1) / 0.005).ravel(),
                ((hits / np.where(hits_ok, hits_target, 1.0) - 1) / 0.03)[hits_ok],
                ((empty - empty_target)[:, empty_keep] / 0.01).ravel(),
            ]
        )

    # grain_age starts near where the back layer's grains are twice the first layers' (Geant4 e+
    # and gamma: about 4.7 mean depths of the maximum); at its upper bound, 30, the grains stay
    # as they are within the profile's age cap (``em_spots``)
    x0 = [sp1.ehat, sp1.ehat_boost, sp1.ehat_tau, 1.0, em.halo.ehat, em.halo.whole or 0.07, em.sampling.grain_age or 4.7]
    fit = least_squares(
        residuals,
        x0,
        bounds=([0.05, 0.0, 0.01, 0.05, 0.05, 0.0, 1.0], [2.0, 5.0, 50.0, 2.0, 4.0, 1.0, 30.0]),
        diff_step=0.01,
        x_scale=[0.05, 0.1, 0.3, 0.1, 0.1, 0.02, 0.3],
    )
    em_fit = with_shares(fit.x)
    layers, lat, hits, empty = simulated(fit.x)
    worst_layer = np.abs(layers / target - 1).max()
    worst_lat = np.abs(lat / lat_ratio - 1).max()
    worst_hits = np.abs(hits / np.where(hits_ok, hits_target, np.nan) - 1)
    # one correction: e/mip weights and leakage make the simulated spread differ slightly
    sim_a = _simulate_like(data, particle, replace(params, em=em_fit), "active", seed, oversample)
    sim_ratio = sim_a.cells.sum(axis=1, dtype=np.float64) / sim_t.cells.sum(axis=1, dtype=np.float64)
    a_sim = _sampling_term(sim_ratio, tiled, _reference(sim_t, "total", total.edges[1] - total.edges[0]))
    sp = replace(em_fit.sampling, stochastic=stochastic * a_ref / a_sim)
    log(
        f"  sampling: e/mip {sp.ehat:.4f}, shape 1 + {sp.ehat_boost:.3f} exp(-tau/{sp.ehat_tau:.3f}), tail x{sp.ehat_tail:.3f},"
        f" soft photons x{em_fit.halo.ehat:.3f} ({em_fit.halo.whole:.3f} seen whole), grains doubled at age {sp.grain_age:.2f}"
        f" (worst miss: layer ratio {100 * worst_layer:.2f}%, lateral ratio {100 * worst_lat:.2f}%,"
        f" active hit cells {100 * np.nanmax(worst_hits, initial=0):.1f}%, empty layer {np.abs(empty - empty_target)[:, empty_keep].max(initial=0):.3f});"
        f" a = {a_ref:.4f} sqrt(GeV) (simulated {a_sim:.4f}"
        f" before correction), stochastic {sp.stochastic:.4f}"
    )
    return sp, em_fit.halo


def _sampling_term(ratio: np.ndarray, e_inc: np.ndarray, ref: _Reference) -> float:
    """a of sigma/E = a/sqrt(E) from the spread of a per-shower ratio within energy bins."""
    values = []
    for sel in ref.bins:
        r = ratio[sel]
        dev = (r / r.mean() - 1.0) * np.sqrt(e_inc[sel])
        lo, hi = np.percentile(dev, [15.865, 84.135])
        values.append((hi - lo) / 2.0)
    return float(np.median(values))


def _fit_sampling_active(ref: _Reference, particle: str, params: SimParams, seed: int, oversample: int, log: Callable) -> Sampling:
    """With an active reference alone: scale e/mip to its response and fit the sampling term."""
    data = ref.data
    sp = params.em.sampling
    ref_resp = np.array([ref.obs["response"][s].mean() for s in ref.bins])
    ref_res = np.array([resolution(ref.obs["response"][s]) for s in ref.bins])
    for _ in range(3):
        p = replace(params, em=replace(params.em, sampling=sp))
        sim = _simulate_like(data, particle, p, "active", seed, oversample)
        so = shower_observables(sim)
        resp = _binned_means(so["response"], sim.e_inc, ref)
        res = []
        for sel in ref.bins:
            lo, hi = data.e_inc[sel].min(), data.e_inc[sel].max()
            m = (sim.e_inc >= lo) & (sim.e_inc <= hi)
            res.append(resolution(so["response"][m]))
        scale = float(np.median(ref_resp / resp))
        # resolution^2 ~ stochastic^2 / E + (other terms): correct the stochastic part
        ratio = float(np.median(ref_res / np.array(res)))
        sp = replace(sp, ehat=sp.ehat * scale, stochastic=sp.stochastic * ratio)
    log(f"  sampling (active reference alone): e/mip {sp.ehat:.4f}, stochastic {sp.stochastic:.4f}")
    return sp


def calibrate(
    ref: ShowerData,
    *,
    particle: str,
    convention: str,
    start: SimParams,
    pair: ShowerData | None = None,
    seed: int = 0,
    oversample: int = 2,
    bin_width: float = 10.0,
    stages: tuple[str, ...] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[SimParams, list[str]]:
    """Fit parameters for ``particle`` to ``ref`` showers of the given convention.

    ``start`` gives the initial values and every parameter the reference does not constrain;
    ``pair`` holds the same showers in the other convention (enables the e/mip fit).
    ``stages`` picks fit stages (default all): for EM particles ``longitudinal``, ``radial``,
    ``cells``, ``response``, ``sampling``; for pions ``mip``, ``shower``, ``sampling``. Returns the
    parameters and the names of the fitted sections.
    """
    if convention not in ("total", "active"):
        raise ConfigError(f"convention must be 'total' or 'active', got {convention!r}")
    if pair is not None:
        if len(pair) != len(ref) or not np.allclose(pair.e_inc, ref.e_inc):
            raise ConfigError("the paired file must hold the same showers (same number and incident energies, in order)")
        total_data, active_data = (ref, pair) if convention == "total" else (pair, ref)
    else:
        total_data = ref if convention == "total" else None
        active_data = ref if convention == "active" else None
    if oversample < 1:
        raise ConfigError(f"oversample must be >= 1, got {oversample}")
    med = media(ref.geometry)
    params = start
    known = HADRON_STAGES if params.is_hadron else EM_STAGES
    stages = known if stages is None else tuple(stages)
    unknown = sorted(set(stages) - set(known))
    if unknown:
        raise ConfigError(f"unknown fit stage(s) {', '.join(unknown)} for {particle}; choose from {', '.join(known)}")
    if params.is_hadron:
        return _calibrate_hadron(total_data, active_data, particle, params, seed, oversample, bin_width, stages, log)
    fitted = []
    if "cells" in stages and params.em.halo.per_gev <= 0:
        # parameters without the cell-level model (a version-1 file): every stage fits with it
        params = replace(params, em=_set(params.em, _CELL_START))
    main = _reference(total_data if total_data is not None else active_data, "total" if total_data is not None else "active", bin_width)
    log(f"fitting {particle} to {len(main.data)} showers ({main.convention} convention), {len(main.bins)} energy bins")
    if "longitudinal" in stages:
        lp = _fit_longitudinal(main, med, params.em, seed, log)
        params = replace(params, em=replace(params.em, longitudinal=lp))
        fitted.append("em.longitudinal")
    if "radial" in stages:
        rp = _fit_radial(main, particle, params, seed, oversample, log)
        params = replace(params, em=replace(params.em, radial=rp))
        fitted.append("em.radial")
    if "cells" in stages:
        params = _fit_cells(main, particle, params, seed, oversample, log)
        fitted += [f"em.{name}" for name in ("longitudinal", "radial", "deposit", "halo") if f"em.{name}" not in fitted]
    if "response" in stages and total_data is not None:
        dp = _fit_loss(main, particle, params, seed, oversample, log)
        params = replace(params, em=replace(params.em, deposit=dp))
        fitted.append("em.deposit")
    if "sampling" not in stages:
        pass
    elif total_data is not None and active_data is not None:
        act = _reference(active_data, "active", bin_width)
        sp, halo = _fit_sampling_pair(main, act, med, particle, params, seed, oversample, log)
        params = replace(params, em=replace(params.em, sampling=sp, halo=halo))
        fitted += ["em.sampling", "em.halo"]  # the soft photons' active share too
    elif active_data is not None:
        sp = _fit_sampling_active(main, particle, params, seed, oversample, log)
        params = replace(params, em=replace(params.em, sampling=sp))
        fitted.append("em.sampling")
    return params, list(dict.fromkeys(fitted))  # each section once, in the order first fitted


# the table's observables the pion shower is fitted to (the model makes no claim on cell-level structure)
_PION_FIT = ("response", "resolution", "fraction", "depth", "width")


def _mip_cut(med: Media) -> float:
    """MeV below which a pion counts as MIP-like: twice a minimum-ionising crossing's loss."""
    return 2.0 * float((med.mip_per_mm * med.depth).sum())


def _calibrate_hadron(
    total: ShowerData | None,
    active: ShowerData | None,
    particle: str,
    params: SimParams,
    seed: int,
    oversample: int,
    bin_width: float,
    stages: tuple[str, ...],
    log: Callable,
) -> tuple[SimParams, list[str]]:
    """The pion model: MIP track and interaction length, then the shower, then the active share."""
    from scipy.optimize import minimize

    main = total if total is not None else active
    convention = "total" if total is not None else "active"
    med = media(main.geometry)
    cut = _mip_cut(med) * (1.0 if convention == "total" else float(med.sf_mip.mean()))
    fitted = []
    hp = params.hadronic

    def sim_of(h: HadronicParams, mode: str) -> ShowerData:
        return _simulate_like(main, particle, replace(params, hadronic=h), mode, seed, oversample)

    ref_layers = main.geometry.layer_sums(main.cells.astype(np.float64))
    ref_mip = ref_layers.sum(axis=1) < cut
    log(f"fitting {particle} to {len(main)} showers ({convention} convention); {ref_mip.mean():.3f} are MIP-like (< {cut:.0f} MeV)")
    if "mip" in stages:
        for _ in range(4):
            sim = sim_of(hp, convention)
            sim_layers = sim.geometry.layer_sums(sim.cells.astype(np.float64))
            sim_mip = sim_layers.sum(axis=1) < cut
            # P(no interaction) = exp(-depth / lambda): the MIP-like share sets lambda
            scale = math.log(sim_mip.mean()) / math.log(ref_mip.mean())
            med_ref, med_sim = np.median(ref_layers[ref_mip], axis=0), np.median(sim_layers[sim_mip], axis=0)
            w = med_ref / med_ref.sum()
            loss_scale = float((w * med_ref / med_sim).sum())
            spread = _relative_spread(ref_layers[ref_mip].sum(axis=1)) / _relative_spread(sim_layers[sim_mip].sum(axis=1))
            hp = replace(hp, lambda_scale=hp.lambda_scale * scale, mip_scale=hp.mip_scale * loss_scale, mip_landau=hp.mip_landau * spread)
        log(
            f"  MIP: lambda_scale {hp.lambda_scale:.3f}, mip_scale {hp.mip_scale:.3f}, mip_landau {hp.mip_landau:.3f} (MIP-like share {sim_mip.mean():.3f})"
        )
        fitted.append("hadronic.mip")
    # parameter -> (lower, upper, step): searched in log(value) where step is None, else in
    # value + step z (the energy slopes, which may be 0 or negative)
    space = {
        "em_sigma": (0.01, 0.4, None),
        "em_energy_scale": (0.02, 1.0, None),
        "em_late": (0.0, 0.9, 0.2),
        "visible": (0.05, 1.0, None),
        "visible_slope": (-0.5, 0.5, 0.05),
        "visible_sigma": (0.0, 0.5, None),
        "alpha": (1.05, 6.0, None),
        "t_max": (0.05, 3.0, None),
        "t_max_slope": (0.0, 1.0, None),
        "r_core": (0.005, 1.0, None),
        "r_tail": (0.02, 3.0, None),
        "r_slope": (-0.5, 1.0, 0.1),
        "p_core": (0.0, 1.0, None),
    }
    names = tuple(space)
    if "shower" in stages:
        # bins twice as wide as the table's: ~200 pions per 10 GeV leave the mean response
        # uncertain by ~7 %, noise the simplex would otherwise chase
        fit_width = 2.0 * bin_width
        ref_rows = _reference(main, convention, fit_width)
        x0 = np.array([getattr(hp, k) for k in names])
        lower, upper = (np.array([space[k][i] for k in names]) for i in (0, 1))
        additive = np.array([space[k][2] is not None for k in names])
        step = np.array([space[k][2] or 0.3 for k in names])  # first steps: +30 % along each log parameter

        def values(z):
            return np.clip(np.where(additive, x0 + z, x0 * np.exp(z)), lower, upper)

        def objective(z):
            h = replace(hp, **{k: float(v) for k, v in zip(names, values(z))})
            rows = [r for r in compare(main, sim_of(h, convention), fit_width) if r.observable.split("_")[0] in _PION_FIT]
            return float(sum((r.deviation / r.tolerance) ** 2 for r in rows)) / max(len(ref_rows.bins), 1)

        simplex = np.vstack([np.zeros(len(names)), np.diag(step)])
        res = minimize(
            objective,
            np.zeros(len(names)),
            method="Nelder-Mead",
            options={"maxfev": 500, "xatol": 0.01, "fatol": 0.01, "initial_simplex": simplex},
        )
        hp = replace(hp, **{k: float(v) for k, v in zip(names, values(res.x))})
        log(f"  shower: {', '.join(f'{k} {getattr(hp, k):.3f}' for k in names)} (objective {res.fun:.2f} after {res.nfev} simulations)")
        fitted.append("hadronic.shower")
    if "sampling" in stages and total is not None and active is not None:
        hp, em = _fit_pion_sampling(total, active, ref_mip, particle, replace(params, hadronic=hp), seed, oversample, bin_width, log)
        params = replace(params, em=em)
        fitted += ["hadronic.sampling", "em.sampling"]
    return replace(params, hadronic=hp), fitted


def _fit_pion_sampling(
    total: ShowerData,
    active: ShowerData,
    ref_mip: np.ndarray,
    particle: str,
    params: SimParams,
    seed: int,
    oversample: int,
    bin_width: float,
    log: Callable,
) -> tuple[HadronicParams, EMParams]:
    """The pions' active shares from the same showers in both conventions: the MIP track's
    from the MIP-like pions, then the hadronic part's and the EM part's e/mip from the
    active/total ratio in every energy bin.

    Geant4's ratio barely moves with the energy (pi+: 0.225 at 1-5 GeV, 0.203 at 70-100),
    while the hadronic part's share of a shower falls as the pi0s' rises: matched to one
    overall ratio, which the high energies dominate, a hadronic share of 1.3 f_mip against the
    EM part's 0.77 passes and leaves the 1-5 GeV ratio 32 % too high.
    """
    from scipy.optimize import least_squares

    hp, em = params.hadronic, params.em
    ref_t = total.cells.sum(axis=1, dtype=np.float64)
    ref_a = active.cells.sum(axis=1, dtype=np.float64)

    def sim_sums(h: HadronicParams, e: EMParams, mode: str) -> np.ndarray:
        sim = _simulate_like(total, particle, replace(params, hadronic=h, em=e), mode, seed, oversample)
        return sim.cells.sum(axis=1, dtype=np.float64)

    st = sim_sums(hp, em, "total")  # simulated once: the total convention does not depend on the active shares
    sim_mip = st < _mip_cut(media(total.geometry))
    for _ in range(3):
        sa = sim_sums(hp, em, "active")
        mip_ratio = (ref_a[ref_mip].sum() / ref_t[ref_mip].sum()) / (sa[sim_mip].sum() / st[sim_mip].sum())
        hp = replace(hp, mip_ehat=hp.mip_ehat * mip_ratio)
    # a bin's active/total ratio of summed energies, as the ratio of the bin's mean sums
    ref = _reference(total, "total", bin_width)
    target = _binned_means(ref_a, total.e_inc, ref) / _binned_means(ref_t, total.e_inc, ref)
    tiled = np.tile(total.e_inc, oversample)
    st_binned = _binned_means(st, tiled, ref)

    def shares(x) -> tuple[HadronicParams, EMParams]:
        return replace(hp, ehat=float(x[0])), replace(em, sampling=replace(em.sampling, ehat=float(x[1])))

    def residuals(x):
        sa = sim_sums(*shares(x), "active")
        return (_binned_means(sa, tiled, ref) / st_binned / target - 1.0) / 0.01

    fit = least_squares(residuals, [hp.ehat, em.sampling.ehat], bounds=([0.1, 0.1], [3.0, 3.0]), diff_step=0.02, x_scale=[0.1, 0.05])
    hp, em = shares(fit.x)
    worst = np.abs(fit.fun).max() * 0.01
    log(
        f"  active share: mip_ehat {hp.mip_ehat:.3f}, hadronic ehat {hp.ehat:.3f}, EM part e/mip {em.sampling.ehat:.3f}"
        f" (worst miss of a bin's active/total ratio {100 * worst:.1f}%)"
    )
    return hp, em


def _relative_spread(values: np.ndarray) -> float:
    lo, med, hi = np.percentile(values, [15.865, 50.0, 84.135])
    return float((hi - lo) / 2.0 / med)
