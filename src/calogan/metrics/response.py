"""Incident-energy bins, the E_tot check of the training loop, and the one definition of response and resolution.

- ``energy_bin_edges`` / ``energy_bin_index``: incident-energy bins (equal population or log).
- ``energy_chi2``: χ²/ndf of E_tot / E_inc histograms summed over incident-energy bins; the
  cheap periodic check of the training loop (stable name and signature).
- ``resolution``: half the central 68.27 % interval (the 15.865 and 84.135 percentiles) of
  E_tot / E_inc over its mean, robust to tails; the one definition used by the evaluation
  report and by the simulator's acceptance table (``calogan.simulate.calibrate``).
- ``response_resolution`` and ``fit_resolution``: mean response and ``resolution`` per energy
  bin with bootstrap uncertainties, and the fit σ/E = a/√E ⊕ b.
"""

from __future__ import annotations

import math

import numpy as np

from calogan import observables as obs
from calogan.data import ShowerData
from calogan.metrics.base import Measurement, MetricError
from calogan.metrics.base import finite as _finite
from calogan.metrics.histograms import chi2_test

__all__ = ["energy_bin_edges", "energy_bin_index", "energy_chi2", "fit_resolution", "resolution", "response_resolution"]


def _round_sig(x: float, digits: int = 3) -> float:
    if x == 0 or not np.isfinite(x):
        return float(x)
    return float(round(x, digits - 1 - math.floor(math.log10(abs(x)))))


def energy_bin_edges(e_inc, spec="auto", *, spacing: str = "population") -> np.ndarray:
    """Incident-energy bin edges in GeV for the reference energies ``e_inc`` (N,).

    ``spec``: ``"auto"`` — one bin per energy point when the sample has at most 12
    distinct energies (discrete beams), else 5 bins; an integer k — k bins (or one per
    point for discrete samples with at most k points); a sequence of increasing edges in
    GeV. ``spacing`` places the k bins: ``"population"`` (equal numbers of showers) or
    ``"log"`` (equal widths in log E, natural for a resolution ∝ 1/√E). Inner edges are
    rounded to three significant digits. Bins are [lo, hi), the last one closed.
    """
    if spacing not in ("population", "log"):
        raise MetricError(f"energy bin spacing must be 'population' or 'log', got {spacing!r}")
    e = _finite(e_inc, "incident energies")
    if isinstance(spec, str):
        if spec != "auto":
            raise MetricError(f"energy bins must be 'auto', a number of bins or a list of edges in GeV, got {spec!r}")
        spec = 5
        points = np.unique(e)
        if len(points) <= 12:
            spec = len(points)
    if np.ndim(spec) == 0:
        k = int(spec)
        if k < 1:
            raise MetricError(f"need at least 1 energy bin, got {k}")
        points = np.unique(e)
        if len(points) <= k:
            mids = 0.5 * (points[:-1] + points[1:])
            return np.concatenate([[points[0]], mids, [points[-1]]]) if len(points) > 1 else np.array([points[0], points[0]])
        if spacing == "log" and e.min() > 0:
            inner = [_round_sig(q) for q in np.geomspace(e.min(), e.max(), k + 1)[1:-1]]
        else:
            inner = [_round_sig(q) for q in np.quantile(e, np.arange(1, k) / k)]
        edges = np.array([e.min(), *inner, e.max()])
        if np.any(np.diff(edges) <= 0):
            edges = np.unique(edges)
        return edges
    edges = np.asarray(spec, dtype=np.float64).reshape(-1)
    if edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
        raise MetricError(f"energy bin edges must be at least two increasing non-negative values in GeV, got {edges.tolist()}")
    return edges


def energy_bin_index(e_inc, edges: np.ndarray) -> np.ndarray:
    """(N,) bin of each energy in ``edges`` ([lo, hi), last bin closed; −1 outside)."""
    e = np.asarray(e_inc, dtype=np.float64).reshape(-1)
    if edges[0] == edges[-1]:  # a single energy point
        return np.where(e == edges[0], 0, -1)
    idx = np.searchsorted(edges, e, side="right") - 1
    idx[e == edges[-1]] = len(edges) - 2
    idx[(e < edges[0]) | (e > edges[-1])] = -1
    return idx


def _etot_einc(sample, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(sample, ShowerData):
        return obs.total_energy(sample.cells), sample.e_inc
    try:
        e_tot, e_inc = sample
    except (TypeError, ValueError):
        raise MetricError(f"{what}: expected ShowerData or a pair (e_tot or cells, e_inc)") from None
    e_tot = np.asarray(e_tot, dtype=np.float64)
    if e_tot.ndim == 2:
        e_tot = e_tot.sum(axis=1)
    e_inc = np.asarray(e_inc, dtype=np.float64).reshape(-1)
    if e_tot.shape != e_inc.shape:
        raise MetricError(f"{what}: {e_tot.shape[0]} energy sums for {e_inc.shape[0]} incident energies")
    if e_inc.size == 0 or (e_inc <= 0).any():
        raise MetricError(f"{what}: incident energies must be > 0 GeV and at least one shower is needed")
    return e_tot, e_inc


def energy_chi2(reference, candidate, n_bins: int = 10, *, n_hist_bins: int = 20) -> Measurement:
    """χ²/ndf of the E_tot distributions per incident-energy bin, summed over the bins.

    The cheap fidelity check for periodic validation during training (stable name and
    signature). ``reference`` and ``candidate`` are ``ShowerData`` or pairs ``(e_tot, e_inc)``
    of (N,) arrays (E_tot in MeV, or (N, n_cells) cells; E_inc in GeV). The reference's
    energies are cut into ``n_bins`` bins of equal population (``energy_bin_edges``); in each
    bin E_tot / E_inc (E_tot with the spread of E_inc inside the bin removed) of the two
    samples is histogrammed on ``n_hist_bins`` shared bins and ``chi2_test`` applied; the χ²
    and ndf of all bins with entries in both samples are summed. Returns (Σχ² / Σndf,
    sqrt(2 / Σndf)): about 1 when the candidate matches the reference; (NaN, NaN) when the
    candidate holds NaN or inf energies (a diverged generator). Costs milliseconds for 10⁴
    showers.
    """
    r_tot, r_inc = _etot_einc(reference, "reference")
    c_tot, c_inc = _etot_einc(candidate, "candidate")
    if not np.isfinite(c_tot).all():  # a diverged generator: say so with NaN instead of dropping showers
        return Measurement(float("nan"), float("nan"))
    edges = energy_bin_edges(r_inc, int(n_bins))
    r_bin, c_bin = energy_bin_index(r_inc, edges), energy_bin_index(c_inc, edges)
    r_resp, c_resp = r_tot / (1000.0 * r_inc), c_tot / (1000.0 * c_inc)
    chi2, ndf = 0.0, 0
    for k in range(len(edges) - 1):
        a, b = r_resp[r_bin == k], c_resp[c_bin == k]
        if a.size == 0 or b.size == 0:
            continue
        x, n = chi2_test(a, b, bins=n_hist_bins)
        chi2, ndf = chi2 + x, ndf + n
    if ndf == 0:
        raise MetricError("energy_chi2: no incident-energy bin holds showers of both samples in more than one E_tot bin")
    return Measurement(chi2 / ndf, math.sqrt(2.0 / ndf))


# The central 68.27 % interval: the ±1σ of a Gaussian.
_CENTRAL_68 = (0.15865, 0.84135)


def resolution(ratio, axis: int = -1) -> np.ndarray | float:
    """Half the central 68.27 % interval of E_tot / E_inc over its mean: (q84.135 − q15.865) / 2 / mean.

    The one definition of the resolution in calogan (report, acceptance table of the
    simulator). Robust to tails; equals σ/μ for a Gaussian. ``ratio`` (..., n) along
    ``axis``; returns a float for one sample, else an array; NaN where the mean is 0.

    >>> round(float(resolution(np.array([0.9, 1.0, 1.1]))), 4)
    0.0683
    """
    x = np.asarray(ratio, dtype=np.float64)
    mean = x.mean(axis=axis)
    lo, hi = np.quantile(x, _CENTRAL_68, axis=axis)
    half = 0.5 * (hi - lo)
    out = np.divide(half, mean, out=np.full_like(np.asarray(half, dtype=np.float64), np.nan), where=np.asarray(mean) != 0)
    return float(out) if out.ndim == 0 else out


def response_resolution(e_tot, e_inc, edges: np.ndarray, *, n_boot: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Mean response and resolution of E_tot / E_inc per incident-energy bin.

    ``e_tot`` (N,) MeV, ``e_inc`` (N,) GeV. Returns (n_bins,) arrays: ``energy`` (mean E_inc,
    GeV), ``n``, ``response`` and ``response_unc`` (mean of E_tot/E_inc), ``resolution`` and
    ``resolution_unc`` (``resolution``: half the central 68 % interval of E_tot/E_inc
    over its mean); uncertainties by bootstrap. Bins with fewer than 10 showers are NaN,
    and so is the resolution where the mean response is 0 (only empty showers).
    """
    resp = np.asarray(e_tot, dtype=np.float64) / (1000.0 * np.asarray(e_inc, dtype=np.float64))
    idx = energy_bin_index(e_inc, edges)
    rng = np.random.default_rng(seed)
    nb = len(edges) - 1
    out = {k: np.full(nb, np.nan) for k in ("energy", "response", "response_unc", "resolution", "resolution_unc")}
    out["n"] = np.zeros(nb, dtype=np.int64)

    def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # (..., n) -> mean (...), resolution (...); NaN resolution where the mean response is 0
        return x.mean(axis=-1), np.asarray(resolution(x, axis=-1))

    for k in range(nb):
        sel = idx == k
        out["n"][k] = int(sel.sum())
        if sel.sum() < 10:
            continue
        x = resp[sel]
        out["energy"][k] = float(np.mean(np.asarray(e_inc)[sel]))
        mean, res = stats(x)
        boot = x[rng.integers(0, len(x), size=(n_boot, len(x)))]
        bm, br = stats(boot)
        out["response"][k], out["resolution"][k] = mean, res
        out["response_unc"][k], out["resolution_unc"][k] = bm.std(ddof=1), br.std(ddof=1)
    return out


def fit_resolution(energy, resolution, uncertainty) -> dict[str, Measurement | float]:
    """Fit σ/E = a/√E ⊕ b = sqrt(a²/E + b²) (E in GeV) to per-bin resolutions.

    Returns ``{"a": Measurement, "b": Measurement, "chi2_ndf": float}`` with a, b ≥ 0
    (dimensionless fractions; a in √GeV). Bins with NaN are skipped; with fewer than two
    usable bins every number is NaN.
    """
    from scipy.optimize import curve_fit

    e, r, u = (np.asarray(v, dtype=np.float64) for v in (energy, resolution, uncertainty))
    ok = np.isfinite(e) & np.isfinite(r) & np.isfinite(u) & (u > 0) & (e > 0)
    nan = Measurement(float("nan"), float("nan"))
    if ok.sum() < 2:
        return {"a": nan, "b": nan, "chi2_ndf": float("nan")}
    e, r, u = e[ok], r[ok], u[ok]

    def model(x, a, b):
        return np.sqrt(a**2 / x + b**2)

    # start from the stochastic term alone, read off the lowest-energy bin
    p0 = (float(r[0] * math.sqrt(e[0])), float(0.1 * r.min()))
    popt, pcov = curve_fit(model, e, r, p0=p0, sigma=u, absolute_sigma=True, bounds=([0.0, 0.0], [np.inf, np.inf]))
    ndf = len(e) - 2
    chi2 = float(np.sum(((r - model(e, *popt)) / u) ** 2))
    err = np.sqrt(np.clip(np.diag(pcov), 0, None))
    return {
        "a": Measurement(float(popt[0]), float(err[0])),
        "b": Measurement(float(popt[1]), float(err[1])),
        "chi2_ndf": chi2 / ndf if ndf > 0 else float("nan"),
    }
