"""One-dimensional comparisons of two samples of an observable: separation power, two-sample χ², 1-Wasserstein.

NaN entries (undefined values, see ``calogan.observables``) are dropped explicitly before a
metric is computed; a sample with no finite value is refused.

- ``separation_power`` S = ½ Σ (p − q)² / (p + q) of the normalised histograms on shared
  bins: 0 for identical samples, 1 for disjoint ones; uncertainty by bootstrap.
- ``chi2_ndf``: the two-sample χ² of the histograms divided by its degrees of freedom,
  about 1 for two samples of one distribution; uncertainty sqrt(2 / ndf), its spread under
  that hypothesis.
- ``wasserstein``: 1-Wasserstein distance in the observable's unit; bootstrap uncertainty.
"""

from __future__ import annotations

import math

import numpy as np

from calogan.metrics.base import Measurement, MetricError
from calogan.metrics.base import finite as _finite

__all__ = ["chi2_ndf", "chi2_test", "histogram", "separation_power", "shared_bins", "wasserstein"]


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
    if len(x) > 20000:  # most samples are no lattice: a subset says so without sorting everything
        probe = _lattice_step(x[:: len(x) // 10000], max_points)
        if probe is None and len(np.unique(x[:: len(x) // 10000])) >= 2:
            return None
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


def wasserstein(reference, candidate, *, n_boot: int = 20, seed: int = 0, max_boot: int = 20_000) -> Measurement:
    """1-Wasserstein distance ∫ |F_ref(x) − F_cand(x)| dx of the empirical distributions, in the unit of x.

    A sample shifted by s has W1 = s. The uncertainty is the bootstrap standard deviation;
    replicas reweight the one merged, sorted sample with multinomial counts, so no replica
    sorts again. Samples larger than ``max_boot`` are bootstrapped on random subsets of
    ``max_boot`` values and the spread scaled by sqrt((1/N + 1/M) / (1/n + 1/m)), the
    statistical scaling of a two-sample distance (memory and time stay bounded for 10⁶
    showers); the value always uses every entry.

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
    if len(r) > max_boot or len(c) > max_boot:
        rs = r if len(r) <= max_boot else rng.choice(r, max_boot, replace=False)
        cs = c if len(c) <= max_boot else rng.choice(c, max_boot, replace=False)
        sub = wasserstein(rs, cs, n_boot=n_boot, seed=seed, max_boot=max_boot).uncertainty
        return Measurement(value, float(sub * math.sqrt((1 / len(r) + 1 / len(c)) / (1 / len(rs) + 1 / len(cs)))))
    w_ref = np.zeros((n_boot, len(v)))
    w_cand = np.zeros((n_boot, len(v)))
    # multinomial counts of the original entries, placed at their merged positions
    w_ref[:, np.flatnonzero(is_ref)] = rng.multinomial(len(r), np.full(len(r), 1.0 / len(r)), size=n_boot)
    w_cand[:, np.flatnonzero(~is_ref)] = rng.multinomial(len(c), np.full(len(c), 1.0 / len(c)), size=n_boot)
    return Measurement(value, float(distance(w_ref, w_cand).std(ddof=1)))
