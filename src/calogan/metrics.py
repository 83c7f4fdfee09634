"""Metrics comparing candidate showers with reference showers: ``metric(reference, candidate, *, ...) -> (value, uncertainty)``.

Every comparison metric returns a ``Measurement``, a named ``(value, uncertainty)`` tuple.
Inputs are plain arrays (one observable's values, a feature matrix, cells) or ``ShowerData``
where a metric needs conditions; NaN entries of an observable (undefined values, see
``calogan.observables``) are dropped explicitly before a one-dimensional metric is computed.

- ``separation_power`` S = ½ Σ (p − q)² / (p + q) of the normalised histograms on shared
  bins: 0 for identical samples, 1 for disjoint ones; uncertainty by bootstrap.
- ``chi2_ndf``: the two-sample χ² of the histograms divided by its degrees of freedom,
  about 1 for two samples of one distribution; uncertainty sqrt(2 / ndf), its spread under
  that hypothesis.
- ``wasserstein``: 1-Wasserstein distance in the observable's unit; bootstrap uncertainty.
- ``energy_chi2``: χ²/ndf of E_tot / E_inc histograms summed over incident-energy bins; the
  cheap periodic check of the training loop (stable name and signature).
- ``classifier_auc`` / ``classifier_test``: the CaloChallenge classifier test
  (arXiv:2410.21611): an MLP on low-level (log10 E_inc, cells / E_inc) or high-level
  (observables) features, trained on 60 %, early-stopped and calibrated (isotonic) on 20 %,
  AUC reported on the last 20 %. Quote it beside its floor, the same test between two
  halves of the reference: ``classifier_with_floor`` returns both, and
  ``calogan.evaluation`` always reports both.
- ``fpd`` / ``kpd``: Fréchet and kernel physics distances (Kansal et al., arXiv:2211.10295)
  on feature matrices.
- ``response_resolution`` and ``fit_resolution``: mean response and resolution (half the
  central 68 % interval of E_tot / E_inc over its mean) per energy bin, and the fit
  σ/E = a/√E ⊕ b.
- ``memorisation``: nearest-neighbour distances of candidate showers to the reference
  against those of held-out reference showers; ``mean_images`` and ``mean_image_difference``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from calogan import observables as obs
from calogan.data import ShowerData
from calogan.errors import CaloganError

__all__ = [
    "ClassifierConfig",
    "ClassifierResult",
    "Measurement",
    "MetricError",
    "auc",
    "chi2_ndf",
    "chi2_test",
    "classifier_auc",
    "classifier_features",
    "classifier_test",
    "classifier_with_floor",
    "energy_bin_edges",
    "energy_bin_index",
    "energy_chi2",
    "fit_resolution",
    "fpd",
    "frechet_distance",
    "histogram",
    "isotonic_fit",
    "kpd",
    "mean_image_difference",
    "mean_images",
    "memorisation",
    "nearest_neighbour_distances",
    "response_resolution",
    "separation_power",
    "shared_bins",
    "standardise",
    "wasserstein",
]


class MetricError(CaloganError, ValueError):
    """Inputs a metric cannot be computed on (empty sample, wrong shapes, ...)."""


class Measurement(NamedTuple):
    """A metric value and its uncertainty (one standard deviation unless stated)."""

    value: float
    uncertainty: float


# ---------------------------------------------------------------------------------------
# One-dimensional distributions
# ---------------------------------------------------------------------------------------


def _finite(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise MetricError(f"{what}: no finite values to compare")
    return x


def shared_bins(reference, candidate, n_bins: int = 40, *, tail: float = 0.001) -> np.ndarray:
    """(n_bins + 1,) equal-width edges covering both samples, from the lower to the upper ``tail`` quantile.

    The range is the union of both samples' [tail, 1 − tail] quantile ranges, so a few
    outliers do not squeeze the distribution into one bin; ``histogram`` puts entries
    outside it into the first and last bins. Samples on a lattice (hit counts, sparsity =
    hit cells / layer cells) get bins of whole lattice steps centred between lattice points,
    so that no bin holds more points than another. Constant samples get one bin of width 1
    around the value.
    """
    if n_bins < 1:
        raise MetricError(f"n_bins must be >= 1, got {n_bins}")
    r, c = _finite(reference, "reference"), _finite(candidate, "candidate")
    lo = min(np.quantile(r, tail), np.quantile(c, tail))
    hi = max(np.quantile(r, 1 - tail), np.quantile(c, 1 - tail))
    if hi <= lo:
        lo, hi = min(r.min(), c.min()), max(r.max(), c.max())
    if hi <= lo:
        return np.array([lo - 0.5, lo + 0.5])
    pooled = np.concatenate([r, c])
    unit = _lattice_step(pooled)
    if unit is not None:  # values on a lattice (counts, fractions of a layer's cells): whole lattice steps per bin
        origin = pooled.min()
        lo = origin + math.floor((lo - origin) / unit + 1e-9) * unit  # snap the quantile range onto lattice points
        hi = origin + math.ceil((hi - origin) / unit - 1e-9) * unit
        step = unit * max(1, math.ceil((hi - lo + unit) / unit / n_bins - 1e-9))
        start = lo - 0.5 * unit
        n = math.ceil((hi + 0.5 * unit - start) / step - 1e-9)
        return start + step * np.arange(n + 1)
    return np.linspace(lo, hi, n_bins + 1)


def _lattice_step(x: np.ndarray, max_points: int = 10000) -> float | None:
    """The spacing d when every value is x_min + k·d for integers k (at most ``max_points`` of them), else None.

    Equal-width bins on such values hold alternately more and fewer lattice points, a comb
    in every histogram; bins of whole lattice steps avoid it.
    """
    u = np.unique(x)
    if len(u) < 2:
        return None
    d = float(np.diff(u).min())
    k = (u - u[0]) / d
    if k[-1] > max_points or not np.allclose(k, np.round(k), rtol=0, atol=1e-6):
        return None
    return d


def histogram(x, edges: np.ndarray) -> np.ndarray:
    """(len(edges) − 1,) counts of the finite values of ``x``; values outside go to the first/last bin."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return np.bincount(idx, minlength=len(edges) - 1).astype(np.float64)


def _edges(reference, candidate, bins) -> np.ndarray:
    if np.ndim(bins) == 0:
        return shared_bins(reference, candidate, int(bins))
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise MetricError("bins must be a count or increasing edges")
    return edges


def _separation(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """S of normalised histograms (..., n_bins) -> (...)."""
    s = p + q
    d = np.divide((p - q) ** 2, s, out=np.zeros_like(s), where=s > 0)
    return 0.5 * d.sum(axis=-1)


def separation_power(reference, candidate, *, bins=40, n_boot: int = 100, seed: int = 0) -> Measurement:
    """S = ½ Σ_k (p_k − q_k)² / (p_k + q_k) of normalised histograms on shared ``bins``.

    0 for identical histograms, 1 when no bin holds both samples. The uncertainty is the
    standard deviation over ``n_boot`` bootstrap replicas; resampling N entries of a
    histogram with replacement draws its counts from a multinomial, so replicas cost only
    ``n_boot`` × n_bins numbers.

    >>> separation_power([0.0, 1.0], [10.0, 11.0], bins=[0, 2, 9, 12]).value
    1.0
    """
    r, c = _finite(reference, "reference"), _finite(candidate, "candidate")
    edges = _edges(r, c, bins)
    n, m = histogram(r, edges), histogram(c, edges)
    p, q = n / n.sum(), m / m.sum()
    value = float(_separation(p, q))
    if n_boot < 2:
        return Measurement(value, float("nan"))
    rng = np.random.default_rng(seed)
    pb = rng.multinomial(len(r), p, size=n_boot) / len(r)
    qb = rng.multinomial(len(c), q, size=n_boot) / len(c)
    return Measurement(value, float(_separation(pb, qb).std(ddof=1)))


def chi2_test(reference, candidate, *, bins=40) -> tuple[float, int]:
    """Two-sample χ² of unnormalised histograms and its degrees of freedom.

    χ² = Σ_k (√(M/N) n_k − √(N/M) m_k)² / (n_k + m_k) over bins with entries, ndf = (bins
    with entries) − 1, for N reference and M candidate entries (Gagunashvili's test of
    two samples of one distribution; ROOT's ``Chi2Test("UU")``).
    """
    r, c = _finite(reference, "reference"), _finite(candidate, "candidate")
    edges = _edges(r, c, bins)
    n, m = histogram(r, edges), histogram(c, edges)
    big_n, big_m = n.sum(), m.sum()
    used = (n + m) > 0
    n, m = n[used], m[used]
    chi2 = float(np.sum((math.sqrt(big_m / big_n) * n - math.sqrt(big_n / big_m) * m) ** 2 / (n + m)))
    return chi2, int(used.sum()) - 1


def chi2_ndf(reference, candidate, *, bins=40) -> Measurement:
    """χ²/ndf of two histograms on shared ``bins`` (``chi2_test``); uncertainty sqrt(2/ndf).

    About 1 for two samples of the same distribution, 0 for identical arrays. With one used
    bin (ndf = 0) both numbers are NaN.
    """
    chi2, ndf = chi2_test(reference, candidate, bins=bins)
    if ndf < 1:
        return Measurement(float("nan"), float("nan"))
    return Measurement(chi2 / ndf, math.sqrt(2.0 / ndf))


def wasserstein(reference, candidate, *, n_boot: int = 20, seed: int = 0) -> Measurement:
    """1-Wasserstein distance ∫ |F_ref(x) − F_cand(x)| dx of the empirical distributions, in the unit of x.

    A sample shifted by s has W1 = s. The uncertainty is the bootstrap standard deviation;
    replicas reweight the one merged, sorted sample with multinomial counts, so no replica
    sorts again.

    >>> wasserstein([0.0, 1.0, 2.0], [0.5, 1.5, 2.5]).value
    0.5
    """
    r, c = _finite(reference, "reference"), _finite(candidate, "candidate")
    values = np.concatenate([r, c])
    order = np.argsort(values, kind="stable")
    v = values[order]
    dx = np.diff(v)
    is_ref = order < len(r)

    def distance(w_ref: np.ndarray, w_cand: np.ndarray) -> np.ndarray:
        # (..., N + M) weights in merged order -> (...) W1; the CDFs step at each value
        f = np.cumsum(w_ref, axis=-1)[..., :-1] / w_ref.sum(axis=-1, keepdims=True)
        g = np.cumsum(w_cand, axis=-1)[..., :-1] / w_cand.sum(axis=-1, keepdims=True)
        return np.abs(f - g) @ dx

    value = float(distance(is_ref.astype(np.float64), (~is_ref).astype(np.float64)))
    if n_boot < 2:
        return Measurement(value, float("nan"))
    rng = np.random.default_rng(seed)
    w_ref = np.zeros((n_boot, len(v)))
    w_cand = np.zeros((n_boot, len(v)))
    # multinomial counts of the original entries, placed at their merged positions
    w_ref[:, np.flatnonzero(is_ref)] = rng.multinomial(len(r), np.full(len(r), 1.0 / len(r)), size=n_boot)
    w_cand[:, np.flatnonzero(~is_ref)] = rng.multinomial(len(c), np.full(len(c), 1.0 / len(c)), size=n_boot)
    return Measurement(value, float(distance(w_ref, w_cand).std(ddof=1)))


# ---------------------------------------------------------------------------------------
# Incident-energy bins, E_tot check, response and resolution
# ---------------------------------------------------------------------------------------


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


def response_resolution(e_tot, e_inc, edges: np.ndarray, *, n_boot: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """Mean response and resolution of E_tot / E_inc per incident-energy bin.

    ``e_tot`` (N,) MeV, ``e_inc`` (N,) GeV. Returns (n_bins,) arrays: ``energy`` (mean E_inc,
    GeV), ``n``, ``response`` and ``response_unc`` (mean of E_tot/E_inc), ``resolution`` and
    ``resolution_unc`` (half the central 68 % interval of E_tot/E_inc divided by its mean,
    robust to tails); uncertainties by bootstrap. Bins with fewer than 10 showers are NaN,
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
        mean = x.mean(axis=-1)
        q16, q84 = np.quantile(x, [0.16, 0.84], axis=-1)
        half = 0.5 * (q84 - q16)
        return mean, np.divide(half, mean, out=np.full_like(half, np.nan), where=mean != 0)

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


# ---------------------------------------------------------------------------------------
# Classifier test (CaloChallenge protocol)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierConfig:
    """The classifier of the CaloChallenge evaluation and how it is trained.

    Defaults follow the CaloChallenge (arXiv:2410.21611): an MLP with ``n_layers`` hidden
    layers of ``hidden`` LeakyReLU units, Adam, binary cross-entropy, 60/20/20 % train /
    early-stopping-and-calibration / report splits. Two changes make it fit the time budget
    of 20k against 20k showers in minutes on two cores: a larger learning rate with
    ``batch_size`` 500, and early stopping after ``patience`` epochs without a lower loss on
    the early-stopping split (the CaloChallenge picks the best epoch of a fixed number).
    Inputs are standardised with the training split's mean and standard deviation.

    ``threads``: torch CPU threads while the classifier trains (restored afterwards). One by
    default: on two shared cores torch's threading of these small matrices costs more than
    it gains (measured under load: a toy test 0.08 s with one thread, 8 s with two; 0.75
    against 1.9 s per epoch of the 20k-shower low-level classifier), and a fixed count keeps
    results reproducible. ``None`` keeps torch's setting.
    """

    hidden: int = 512
    n_layers: int = 3
    dropout: float = 0.0
    lr: float = 5e-4
    batch_size: int = 500
    max_epochs: int = 40
    patience: int = 5
    splits: tuple[float, float, float] = (0.6, 0.2, 0.2)
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.n_layers < 1 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise MetricError(f"classifier sizes and epochs must be positive: {self}")
        if not 0 <= self.dropout < 1 or self.lr <= 0:
            raise MetricError(f"classifier needs 0 <= dropout < 1 and lr > 0: {self}")
        if len(self.splits) != 3 or min(self.splits) <= 0 or abs(sum(self.splits) - 1) > 1e-6:
            raise MetricError(f"classifier splits must be three positive fractions summing to 1, got {self.splits}")
        if self.threads is not None and self.threads < 1:
            raise MetricError(f"classifier threads must be >= 1 or None, got {self.threads}")


@dataclass(frozen=True)
class ClassifierResult:
    """Outcome of one classifier test: calibrated AUC on the report split and what led to it.

    ``jsd`` is the CaloChallenge's Jensen-Shannon divergence estimate (log 2 − BCE of the
    calibrated outputs) / log 2: 0 for indistinguishable samples, 1 for separable ones.
    ``auc_raw`` is the AUC before calibration.
    """

    auc: float
    auc_uncertainty: float
    jsd: float
    auc_raw: float
    best_epoch: int
    epochs: int
    n_train: int
    n_val: int
    n_test: int
    seconds: float

    @property
    def measurement(self) -> Measurement:
        return Measurement(self.auc, self.auc_uncertainty)


def auc(labels, scores) -> float:
    """Area under the ROC curve: P(score of a 1 > score of a 0), ties counting ½ (Mann-Whitney with mid-ranks)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        raise MetricError("AUC needs entries of both classes")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _auc_uncertainty(a: float, n1: int, n0: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC from n1 positives and n0 negatives."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return float(math.sqrt(max(var, 0.0)))


def isotonic_fit(scores, labels, *, y_min: float = 1e-6, y_max: float = 1 - 1e-6):
    """Isotonic (monotone non-decreasing) regression of labels on scores by pool-adjacent-violators.

    Returns a function mapping new scores to calibrated probabilities: linear interpolation
    between the fitted points, clipped outside them and to [y_min, y_max] (what the
    CaloChallenge's ``IsotonicRegression(out_of_bounds='clip')`` does).
    """
    x = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    ux, inverse = np.unique(x, return_inverse=True)
    w = np.bincount(inverse).astype(np.float64)
    m = np.bincount(inverse, weights=y) / w  # mean label per distinct score
    # pool adjacent violators over blocks (value, weight, length)
    vals, wts, lens = [], [], []
    for mi, wi in zip(m, w):
        v, wt, ln = mi, wi, 1
        while vals and vals[-1] > v:
            pv, pw, pl = vals.pop(), wts.pop(), lens.pop()
            v, wt, ln = (pv * pw + v * wt) / (pw + wt), pw + wt, pl + ln
        vals.append(v)
        wts.append(wt)
        lens.append(ln)
    fitted = np.clip(np.repeat(vals, lens), y_min, y_max)

    def predict(s):
        return np.interp(np.asarray(s, dtype=np.float64), ux, fitted)

    return predict


def classifier_features(data: ShowerData, level: str, threshold: float = 0.0) -> np.ndarray:
    """(N, d) float64 classifier inputs of a sample: its conditions, then the shower.

    Conditions: log10(E_inc / GeV), then any of x0, y0 (mm), theta (rad) and cos, sin of
    phi the sample has, so that the classifier tests the showers given their conditions,
    not only their overall distribution. ``"low"``: then every cell divided by the incident
    energy (the CaloChallenge low-level input). ``"high"``: then the ``high_level``
    observables, energies as log10(E / MeV + 10⁻³) as the CaloChallenge takes logs of layer
    energies; NaN entries (empty layers) are left for ``standardise`` to fill.
    """
    conds = [np.log10(data.e_inc)]
    for key, value in data.conditions.items():
        conds += [np.cos(value), np.sin(value)] if key == "phi" else [value]  # phi is periodic
    conds = np.stack(conds, axis=1)
    cells = obs.apply_threshold(data.cells, threshold)
    if level == "low":
        return np.concatenate([conds, cells / (1000.0 * data.e_inc[:, None])], axis=1)
    if level == "high":
        hl = obs.high_level(cells, data.geometry, data.e_inc)
        energies = {"e_tot"} | {f"{key}_{layer.name}" for key in ("e", "e_max") for layer in data.geometry.layers}
        cols = [np.log10(v + 1e-3) if k in energies else v for k, v in hl.items()]
        return np.concatenate([conds, np.stack(cols, axis=1)], axis=1)
    raise MetricError(f"classifier level must be 'low' or 'high', got {level!r}")


def standardise(reference: np.ndarray, *others: np.ndarray, clip: float | None = None) -> list[np.ndarray]:
    """Scale columns to zero mean and unit variance of ``reference`` (NaN-aware); NaN -> 0, the mean.

    Constant columns are centred only; ``clip`` limits the scaled values to [−clip, clip].
    Returns the scaled reference followed by ``others``.
    """
    with np.errstate(all="ignore"):  # all-NaN columns (a layer empty in every shower) give NaN, handled below
        mean = np.nanmean(reference, axis=0)
        std = np.nanstd(reference, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    out = [np.nan_to_num((np.asarray(a, dtype=np.float64) - mean) / std, nan=0.0) for a in (reference, *others)]
    return [np.clip(a, -clip, clip) for a in out] if clip is not None else out


def _split_indices(n: int, splits, rng) -> list[np.ndarray]:
    order = rng.permutation(n)
    bounds = np.round(np.cumsum([0.0, *splits]) * n).astype(int)
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _train_classifier(x_tr, y_tr, x_va, y_va, x_te, config: ClassifierConfig, seed: int):
    """Train the MLP with early stopping; return sigmoid outputs on the validation and test sets, best and last epoch."""
    import torch

    with torch.random.fork_rng(devices=[]):  # seed torch without moving the caller's random stream
        torch.manual_seed(seed)
        layers, width = [], x_tr.shape[1]
        for _ in range(config.n_layers):
            layers += [torch.nn.Linear(width, config.hidden), torch.nn.LeakyReLU(), torch.nn.Dropout(config.dropout)]
            width = config.hidden
        net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        tr_x, tr_y = torch.as_tensor(x_tr, dtype=torch.float32), torch.as_tensor(y_tr, dtype=torch.float32)
        va_x, va_y = torch.as_tensor(x_va, dtype=torch.float32), torch.as_tensor(y_va, dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        best_loss, best_state, best_epoch, epoch = float("inf"), None, 0, 0
        for epoch in range(1, config.max_epochs + 1):
            net.train()
            perm = torch.randperm(len(tr_x), generator=gen)
            for i in range(0, len(perm), config.batch_size):
                idx = perm[i : i + config.batch_size]
                loss = loss_fn(net(tr_x[idx]).squeeze(1), tr_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(net(va_x).squeeze(1), va_y))
            if val_loss < best_loss:
                best_loss, best_state, best_epoch = val_loss, copy.deepcopy(net.state_dict()), epoch
            elif epoch - best_epoch >= config.patience:
                break
        if best_state is None:
            raise MetricError(f"the classifier's validation loss was never finite in {epoch} epochs")
        net.load_state_dict(best_state)
        net.eval()
        with torch.no_grad():
            p_va = torch.sigmoid(net(va_x).squeeze(1)).double().numpy()
            p_te = torch.sigmoid(net(torch.as_tensor(x_te, dtype=torch.float32)).squeeze(1)).double().numpy()
    return p_va, p_te, best_epoch, epoch


def classifier_test(
    reference,
    candidate,
    *,
    level: str = "low",
    config: ClassifierConfig = ClassifierConfig(),
    seed: int = 0,
    threshold: float = 0.0,
) -> ClassifierResult:
    """Train a classifier to tell ``candidate`` from ``reference`` and report its calibrated AUC.

    ``reference`` and ``candidate`` are ``ShowerData`` (features by ``classifier_features``)
    or (N, d) feature arrays. The larger sample is subsampled to the size of the smaller so
    the classes are balanced. Each class is split 60/20/20 %: the network trains on the
    first part, the second picks the best epoch (lowest loss, early stopping) and fits the
    isotonic calibration, and the AUC with its Hanley-McNeil uncertainty and the JSD are
    measured on the third. 0.5 means the classifier cannot tell the samples apart.
    """
    import torch

    xs = []
    for what, s in (("reference", reference), ("candidate", candidate)):
        x = classifier_features(s, level, threshold) if isinstance(s, ShowerData) else np.asarray(s, dtype=np.float64)
        if x.ndim != 2:
            raise MetricError(f"{what}: classifier features must be (N, d), got shape {x.shape}")
        if np.isinf(x).any() or (level == "low" and np.isnan(x).any()):
            raise MetricError(f"{what}: NaN or inf in the cells or conditions; the classifier needs finite showers")
        xs.append(x)
    if xs[0].shape[1] != xs[1].shape[1]:
        raise MetricError(f"reference has {xs[0].shape[1]} features, candidate {xs[1].shape[1]}")
    rng = np.random.default_rng(seed)
    n = min(len(xs[0]), len(xs[1]))
    if n * min(config.splits) < 5:
        raise MetricError(f"the classifier test needs at least {math.ceil(5 / min(config.splits))} showers per sample, got {n}")
    xs = [x[np.sort(rng.choice(len(x), n, replace=False))] if len(x) > n else x for x in xs]
    parts = [_split_indices(n, config.splits, rng) for _ in xs]
    sets = []
    for k in range(3):
        x = np.concatenate([xs[0][parts[0][k]], xs[1][parts[1][k]]])
        y = np.concatenate([np.zeros(len(parts[0][k])), np.ones(len(parts[1][k]))])
        sets.append((x, y))
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = sets
    x_tr, x_va, x_te = standardise(x_tr, x_va, x_te)

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        p_va, p_te, best_epoch, epoch = _train_classifier(x_tr, y_tr, x_va, y_va, x_te, config, seed)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0

    calibrate = isotonic_fit(p_va, y_va)
    p_cal = calibrate(p_te)
    a = auc(y_te, p_cal)
    bce = -np.mean(y_te * np.log(p_cal) + (1 - y_te) * np.log(1 - p_cal))
    n1, n0 = int(y_te.sum()), int((1 - y_te).sum())
    return ClassifierResult(
        auc=a,
        auc_uncertainty=_auc_uncertainty(a, n1, n0),
        jsd=float((math.log(2) - bce) / math.log(2)),
        auc_raw=auc(y_te, p_te),
        best_epoch=best_epoch,
        epochs=epoch,
        n_train=len(y_tr),
        n_val=len(y_va),
        n_test=len(y_te),
        seconds=seconds,
    )


def classifier_auc(
    reference, candidate, *, level: str = "low", config: ClassifierConfig = ClassifierConfig(), seed: int = 0, threshold: float = 0.0
) -> Measurement:
    """Calibrated AUC of the classifier test (``classifier_test``) with its uncertainty.

    An AUC means little without its floor: quote ``classifier_with_floor`` (or the floor
    of ``calogan.evaluation``) beside it.
    """
    return classifier_test(reference, candidate, level=level, config=config, seed=seed, threshold=threshold).measurement


def classifier_with_floor(
    reference: ShowerData,
    candidate: ShowerData,
    *,
    level: str = "low",
    config: ClassifierConfig = ClassifierConfig(),
    seed: int = 0,
    threshold: float = 0.0,
) -> tuple[ClassifierResult, ClassifierResult]:
    """The classifier test of ``candidate`` and its floor: (candidate vs reference half A, half B vs half A).

    The reference is split at random into halves A and B; all three samples are cut to the
    same number of showers n = min(|A|, |B|, |candidate|) so that the candidate's AUC and
    the floor, the AUC an indistinguishable candidate reaches, have the same statistics.
    ``calogan.evaluation`` follows the same protocol with one floor for all candidates.
    """
    half_a, half_b = reference.split((0.5, 0.5), seed=seed)
    n = min(len(half_a), len(half_b), len(candidate))
    rng = np.random.default_rng(seed + 17)

    def cut(d: ShowerData) -> ShowerData:
        return d if len(d) <= n else d.select(np.sort(rng.choice(len(d), n, replace=False)))

    a = cut(half_a)
    kwargs = dict(level=level, config=config, seed=seed, threshold=threshold)
    floor = classifier_test(a, cut(half_b), **kwargs)
    return classifier_test(a, cut(candidate), **kwargs), floor


# ---------------------------------------------------------------------------------------
# Fréchet and kernel physics distances
# ---------------------------------------------------------------------------------------


# Standardised features are clipped at 5 standard deviations for FPD and KPD: the degree-4
# kernel of KPD otherwise lets a handful of outlying showers dominate (measured on the Geant4
# e+ sample: a 5 % energy-scale shift went undetected, 2.3 ± 4.9, without the clip).
_FEATURE_CLIP = 5.0


def _features_pair(reference, candidate, normalise: bool) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if r.ndim != 2 or c.ndim != 2 or r.shape[1] != c.shape[1]:
        raise MetricError(f"feature matrices must be (N, d) with the same d, got {r.shape} and {c.shape}")
    if len(r) < 2 or len(c) < 2:
        raise MetricError("feature matrices need at least two rows each")
    if normalise:
        r, c = standardise(r, c, clip=_FEATURE_CLIP)
    elif not (np.isfinite(r).all() and np.isfinite(c).all()):
        raise MetricError("feature matrices hold NaN or inf; pass normalise=True to fill them")
    return r, c


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """|μ1 − μ2|² + Tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½) between two Gaussians."""
    w, v = np.linalg.eigh(cov1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ cov2 @ root1)  # symmetric PSD: same trace-sqrt as Σ1 Σ2
    d = np.asarray(mu1) - np.asarray(mu2)
    return float(d @ d + np.trace(cov1) + np.trace(cov2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def fpd(
    reference,
    candidate,
    *,
    min_samples: int | None = None,
    max_samples: int | None = None,
    num_batches: int = 10,
    num_points: int = 6,
    normalise: bool = True,
    seed: int = 0,
) -> Measurement:
    """Fréchet physics distance of two (N, d) feature matrices, extrapolated to infinite samples.

    As in JetNet's ``fpd`` (which takes 20 batches at 10 sizes; 10 at 6 keep it within
    seconds on two cores): the Fréchet distance of Gaussians fitted to random batches is
    averaged over ``num_batches`` batches at ``num_points`` batch sizes from ``min_samples``
    to ``max_samples`` (default: half of and all of the smaller sample), fitted with
    FD(N) = FPD + c/N (both ≥ 0), and the intercept and its fit uncertainty are returned.
    Batches are drawn without replacement. ``normalise`` standardises both with the
    reference's mean and standard deviation and clips them at ±5 (JetNet divides by the
    maximum instead, which leaves most features squeezed near 0 when tails are long).
    """
    from scipy.optimize import curve_fit

    r, c = _features_pair(reference, candidate, normalise)
    n_max = min(len(r), len(c)) if max_samples is None else min(max_samples, len(r), len(c))
    n_min = max(2, n_max // 2) if min_samples is None else min(min_samples, n_max)
    sizes = np.unique((1.0 / np.linspace(1.0 / n_min, 1.0 / n_max, num_points)).astype(int))
    rng = np.random.default_rng(seed)
    values = []
    for size in sizes:
        fd = []
        for _ in range(num_batches):
            a = r[rng.choice(len(r), size, replace=False)]
            b = c[rng.choice(len(c), size, replace=False)]
            fd.append(frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))
        values.append(np.mean(fd))
    values = np.asarray(values)
    if len(sizes) < 3:
        return Measurement(float(values[-1]), float("nan"))
    popt, pcov = curve_fit(lambda x, a, b: a + b * x, 1.0 / sizes, values, bounds=([0.0, 0.0], [np.inf, np.inf]))
    return Measurement(float(popt[0]), float(np.sqrt(max(pcov[0, 0], 0.0))))


def _kernel_sum(a: np.ndarray, b: np.ndarray, degree: int, same: bool, chunk: int = 2048) -> float:
    """Σ_ij (a_i·b_j / d + 1)^degree, without the diagonal when ``same``; rows in chunks to bound memory."""
    d = a.shape[1]
    total = 0.0
    for i in range(0, len(a), chunk):
        k = a[i : i + chunk] @ b.T
        k /= d
        k += 1.0
        if degree == 4:  # two in-place squares: several times faster than a float power
            np.square(k, out=k)
            np.square(k, out=k)
        else:
            np.power(k, degree, out=k)
        total += float(k.sum())
    if same:
        total -= float((((a * a).sum(axis=1) / d + 1.0) ** degree).sum())
    return total


def kpd(
    reference, candidate, *, num_batches: int = 10, batch_size: int = 2000, degree: int = 4, normalise: bool = True, seed: int = 0
) -> Measurement:
    """Kernel physics distance: unbiased MMD² with the polynomial kernel (x·y/d + 1)^degree.

    As in JetNet's ``kpd``: the median over ``num_batches`` batches of ``batch_size`` rows
    (capped at the smaller sample) drawn with replacement, and half the 16-84 % spread of
    the batches as its uncertainty. JetNet's batches hold 5000 rows; 2000 keep one KPD
    within a few seconds on two cores. About 0 for samples of one distribution; it may be
    slightly negative as the estimator is unbiased. ``normalise`` as in ``fpd``; the clip
    keeps the kernel from being dominated by a few outlying showers.
    """
    r, c = _features_pair(reference, candidate, normalise)
    size = min(batch_size, len(r), len(c))
    values = []
    for k in range(num_batches):
        rng = np.random.default_rng(seed + 1000 * k)
        a = r[rng.choice(len(r), size)]
        b = c[rng.choice(len(c), size)]
        pairs = size * (size - 1)
        mmd = (
            _kernel_sum(a, a, degree, True) / pairs
            + _kernel_sum(b, b, degree, True) / pairs
            - 2 * _kernel_sum(a, b, degree, False) / size**2
        )
        values.append(mmd)
    q16, q84 = np.percentile(values, [16.275, 83.725])
    return Measurement(float(np.median(values)), float(0.5 * (q84 - q16)))


# ---------------------------------------------------------------------------------------
# Mean images and nearest neighbours
# ---------------------------------------------------------------------------------------


def mean_images(cells, geometry) -> list[np.ndarray]:
    """(N, n_cells) -> per layer (rows, cols) mean cell energy in MeV."""
    return geometry.split(np.asarray(cells, dtype=np.float64).mean(axis=0))


def mean_image_difference(reference, candidate, *, n_boot: int = 20, seed: int = 0) -> Measurement:
    """Σ_cells |m_ref − m_cand| / Σ_cells m_ref of the mean images of (N, k) and (M, k) cells.

    0 for equal mean images; 0.05 for a candidate whose cells are all 5 % higher. Pass one
    layer's columns for a per-layer number. Uncertainty by bootstrap over showers.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if r.ndim != 2 or c.ndim != 2 or r.shape[1] != c.shape[1] or len(r) == 0 or len(c) == 0:
        raise MetricError(f"cells must be (N, k) and (M, k) with N, M > 0, got {r.shape} and {c.shape}")
    mr, mc = r.mean(axis=0), c.mean(axis=0)
    norm = mr.sum()
    if norm <= 0:
        raise MetricError("the reference's mean image is empty: no energy to compare with")
    value = float(np.abs(mr - mc).sum() / norm)
    if n_boot < 2:
        return Measurement(value, float("nan"))
    rng = np.random.default_rng(seed)
    # bootstrap means as (n_boot, N) multinomial weights @ (N, k) cells
    wr = rng.multinomial(len(r), np.full(len(r), 1 / len(r)), size=n_boot) / len(r)
    wc = rng.multinomial(len(c), np.full(len(c), 1 / len(c)), size=n_boot) / len(c)
    br, bc = wr @ r, wc @ c
    boot = np.abs(br - bc).sum(axis=1) / br.sum(axis=1)
    return Measurement(value, float(boot.std(ddof=1)))


def nearest_neighbour_distances(query, pool, *, chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each row of ``query`` (Q, d) to its nearest row of ``pool`` (P, d), and that row's index."""
    q = np.asarray(query, dtype=np.float64)
    p = np.asarray(pool, dtype=np.float64)
    if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1] or len(p) == 0:
        raise MetricError(f"query and pool must be (Q, d) and (P, d) with P > 0, got {q.shape} and {p.shape}")
    p2 = (p * p).sum(axis=1)
    dist, index = np.empty(len(q)), np.empty(len(q), dtype=np.int64)
    for i in range(0, len(q), chunk):
        a = q[i : i + chunk]
        d2 = (a * a).sum(axis=1)[:, None] + p2[None, :] - 2 * a @ p.T  # (chunk, P)
        j = d2.argmin(axis=1)
        index[i : i + chunk] = j
        dist[i : i + chunk] = np.sqrt(np.clip(d2[np.arange(len(a)), j], 0, None))
    return dist, index


def memorisation(reference, candidate, *, n_query: int = 1000, n_boot: int = 100, seed: int = 0) -> dict:
    """Nearest-neighbour check for memorised (copied) training showers.

    ``reference`` and ``candidate`` are (N, d) feature rows (``calogan.evaluation`` uses
    cells / E_inc). The reference is split in a pool (first half of a random order) and a
    held-out half; up to ``n_query`` candidate rows and as many held-out reference rows are
    matched to their nearest pool row. Returns ``ratio`` (median candidate distance over
    median held-out distance: about 1 for an independent sample, well below 1 for copies
    of the pool; NaN when that median is 0, a reference full of duplicates), ``copies`` (fraction of candidate distances below the 1 % quantile of the
    held-out distances: about 0.01 for an independent sample) as Measurements with
    bootstrap uncertainties, and the raw ``candidate_distances``, ``reference_distances``
    and ``candidate_index``, ``pool_index`` (rows of the inputs) of the matches.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if len(r) < 4 or len(c) < 1:
        raise MetricError(f"the nearest-neighbour check needs at least 4 reference and 1 candidate showers, got {len(r)} and {len(c)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(r))
    pool_rows, held_rows = order[: len(r) // 2], order[len(r) // 2 :]
    nq = min(n_query, len(held_rows), len(c))
    held_q = rng.choice(held_rows, nq, replace=False)
    cand_q = rng.choice(len(c), nq, replace=False)
    d_ref, _ = nearest_neighbour_distances(r[held_q], r[pool_rows])
    d_cand, j = nearest_neighbour_distances(c[cand_q], r[pool_rows])

    def stats(dc: np.ndarray, dr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        med_r = np.median(dr, axis=-1)
        ratio = np.median(dc, axis=-1) / np.where(med_r > 0, med_r, np.nan)
        cut = np.quantile(dr, 0.01, axis=-1)
        return ratio, (dc < cut[..., None]).mean(axis=-1)

    ratio, copies = stats(d_cand, d_ref)
    bc = d_cand[rng.integers(0, nq, (n_boot, nq))]
    br = d_ref[rng.integers(0, nq, (n_boot, nq))]
    b_ratio, b_copies = stats(bc, br)
    b_ratio = b_ratio[np.isfinite(b_ratio)]
    return {
        "ratio": Measurement(float(ratio), float(b_ratio.std(ddof=1)) if b_ratio.size > 1 else float("nan")),
        "copies": Measurement(float(copies), float(np.std(b_copies, ddof=1))),
        "candidate_distances": d_cand,
        "reference_distances": d_ref,
        "candidate_index": cand_q,
        "pool_index": pool_rows[j],
    }
