"""Metrics comparing candidate showers with reference showers: ``metric(reference, candidate, *, ...) -> (value, uncertainty)``.

Every comparison metric returns a ``Measurement``, a named ``(value, uncertainty)`` tuple.
Inputs are plain arrays (one observable's values, a feature matrix, cells) or ``ShowerData``
where a metric needs conditions. One module per kind:

- ``histograms``: separation power, two-sample χ²/ndf and 1-Wasserstein of one observable;
- ``response``: incident-energy bins, the training loop's ``energy_chi2``, the one definition
  of the resolution, response and resolution per energy bin and the fit σ/E = a/√E ⊕ b;
- ``classifiers``: classifier tests (low-level cells, high-level observables) and their AUC;
- ``distances``: Fréchet and kernel physics distances (FPD, KPD) of feature matrices;
- ``memorisation``: mean images and nearest-neighbour distances (copied training showers).

Every public name is importable from ``calogan.metrics`` directly.
"""

from calogan.metrics.base import Measurement, MetricError, standardise
from calogan.metrics.classifiers import (
    LEVELS,
    LOG_EPS,
    MODELS,
    ClassifierConfig,
    ClassifierResult,
    auc,
    auc_excess,
    classifier_auc,
    classifier_features,
    classifier_test,
    classifier_with_floor,
    default_classifier,
    isotonic_fit,
    low_level_auc,
)
from calogan.metrics.distances import fpd, frechet_distance, kpd
from calogan.metrics.histograms import chi2_ndf, chi2_test, histogram, separation_power, shared_bins, wasserstein
from calogan.metrics.memorisation import mean_image_difference, mean_images, memorisation, nearest_neighbour_distances
from calogan.metrics.response import energy_bin_edges, energy_bin_index, energy_chi2, fit_resolution, resolution, response_resolution

__all__ = [
    "LEVELS",
    "LOG_EPS",
    "MODELS",
    "ClassifierConfig",
    "ClassifierResult",
    "Measurement",
    "MetricError",
    "auc",
    "auc_excess",
    "chi2_ndf",
    "chi2_test",
    "classifier_auc",
    "classifier_features",
    "classifier_test",
    "classifier_with_floor",
    "default_classifier",
    "energy_bin_edges",
    "energy_bin_index",
    "energy_chi2",
    "fit_resolution",
    "fpd",
    "frechet_distance",
    "histogram",
    "isotonic_fit",
    "kpd",
    "low_level_auc",
    "mean_image_difference",
    "mean_images",
    "memorisation",
    "nearest_neighbour_distances",
    "resolution",
    "response_resolution",
    "separation_power",
    "shared_bins",
    "standardise",
    "wasserstein",
]
