"""Mean images per layer and the nearest-neighbour check for memorised (copied) training showers."""

from __future__ import annotations

import numpy as np

from calogan.metrics.base import Measurement, MetricError

__all__ = ["mean_image_difference", "mean_images", "memorisation", "nearest_neighbour_distances"]


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
