"""What every metric shares: ``Measurement`` (value, uncertainty), ``MetricError``, finite-value filtering and column standardisation."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from calogan.errors import CaloganError

__all__ = ["Measurement", "MetricError", "finite", "standardise"]


class MetricError(CaloganError, ValueError):
    """Inputs a metric cannot be computed on (empty sample, wrong shapes, ...)."""


class Measurement(NamedTuple):
    """A metric value and its uncertainty (one standard deviation unless stated)."""

    value: float
    uncertainty: float


def finite(x, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        raise MetricError(f"{what}: no finite values to compare")
    return x


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
