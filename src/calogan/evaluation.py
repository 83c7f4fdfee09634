"""Evaluate candidate shower samples against a reference: every metric, as ``metrics.json`` plus arrays for the figures.

``evaluate(reference, candidates, labels, config)`` checks that the samples can be
compared, computes the observables of every sample and all metrics of ``calogan.metrics``
for each candidate, and returns an ``Evaluation``: the JSON-ready ``metrics`` dictionary
(schema below) and the arrays ``calogan.report`` draws. ``calogan evaluate`` is its
command line.

Streaming and subsamples
------------------------
Every sample is read once, chunk by chunk (``summarise``): the observables of every shower,
the summed cells, a uniform subsample of at most 10⁶ cell energies, and a random
subsample of at most ``subsample`` whole showers (40,000 by default) are kept; the cells
are not. Histogram metrics, E_tot χ², response and resolution, mean images and condition
trends use every shower; the classifier tests, FPD, KPD, nearest neighbours and the
uncertainty of the mean-image difference use the subsamples. Memory grows with the
number of showers by their observables only (about 270 bytes per shower for the CaloGAN
geometry).

Reference halves and floors
---------------------------
The reference's subsample is split once, at random (``seed``), into halves A and B. The
classifiers, FPD and KPD compare each candidate with half A; their *floor* compares half B
with half A, the value an indistinguishable candidate reaches with the same statistics. The
classifier tests use the same number of showers per class for the floor and every
candidate (the smallest of |A|, |B| and each candidate's subsample, at most the
classifier's ``max_per_class``). Histogram metrics, response and resolution use the whole
reference. A metric *flags* a candidate at ``FLAG_SIGMA`` = 5 standard deviations above its
floor: for the AUCs z = (AUC − floor) / sqrt(σ² + σ_floor²) with the run-averaged AUCs and
their combined uncertainties (``calogan.metrics.classifiers``); for χ² metrics the
one-sided Gaussian significance of the χ² (``chi2_sigma``).

metrics.json, schema version 2
------------------------------
Numbers with an uncertainty are objects ``{"value": v, "uncertainty": u}``; a number that
is undefined (e.g. χ²/ndf with ndf = 0, a metric of an energy bin without showers) is
``null``. Top-level keys, all always present:

- ``schema`` (``"calogan-metrics"``), ``schema_version`` (2), ``calogan_version``,
  ``created_utc`` (ISO 8601).
- ``settings``: ``seed``, ``threshold_mev``, ``energy_bins`` (the requested spec),
  ``hist_bins``, ``resolution_bins``, ``resolution_bin_edges_gev`` (edges of the response and
  resolution bins), ``n_boot``, ``nn_queries``, ``classifiers`` (bool:
  false with ``--fast``), ``classifier`` (level -> the ``ClassifierConfig`` fields of
  ``low``, ``high`` and ``low_calochallenge``), ``subsample`` (showers per sample kept whole),
  ``allow_condition_mismatch``.
- ``geometry``: ``name``, ``n_layers``, ``n_cells``, ``layers`` (names).
- ``energy_bins_gev``: list of ``[lo, hi]`` incident-energy bins of the per-bin metrics.
- ``observables``: list of ``{"name", "label", "unit"}`` in report order.
- ``warnings``: list of strings (condition mismatches allowed by the user, ...).
- ``reference``: ``label``, ``source``, ``n_showers``, ``particles``, ``conditions``,
  ``e_inc_gev`` ([min, max]), ``response``, ``resolution_fit``, ``condition_trends`` and
  ``profiles`` (``longitudinal`` and ``radial`` with ``mean_mev`` only; ``radial`` also
  ``edges_mm``), as for candidates.
- ``floor``: ``n_showers_per_class``, ``classifier_low``, ``classifier_high``,
  ``classifier_low_calochallenge`` (classifier result objects, or ``null`` with ``--fast``),
  ``fpd``, ``kpd`` (measurements).
- ``candidates``: one object per candidate, in command-line order, with
  - ``label``, ``source``, ``n_showers``, ``particles``, ``conditions``, ``e_inc_gev``;
  - ``summary``: ``classifier_low`` (the headline low-level test: gradient-boosted trees on
    log-scaled cells), ``classifier_high`` (observables), ``classifier_low_calochallenge``
    (the CaloChallenge protocol's MLP on cells / E_inc, for published tables; all three
    ``null`` with ``--fast``), ``fpd``, ``kpd``, ``energy_chi2``, ``energy_chi2_sigma`` (its
    one-sided Gaussian significance), ``response_deviation`` (``chi2``, ``ndf`` and
    ``sigma`` of the mean response per resolution bin against the reference's, with both
    bootstrap errors), ``separation_power_mean``, ``chi2_ndf_mean``,
    ``worst_observables`` (the five names of largest separation power), ``nn_ratio``,
    ``nn_copies``;
  - ``observables``: name -> ``{"all": {...}, "energy_bins": [{...} or null, ...]}``,
    each ``{...}`` holding ``separation_power``, ``chi2_ndf``, ``wasserstein``
    (measurements), ``separation_power_null`` (the separation two samples of one
    distribution reach at these statistics, (bins used)/4 · (1/N + 1/M)), ``ndf``, ``n``
    ([reference, candidate] entries used) and ``undefined_fraction`` ([reference,
    candidate] fraction of NaN entries, e.g. the centroid of an empty layer); ``null``
    when a sample has no defined value;
  - ``cell_spectrum``: ``separation_power``, ``chi2_ndf`` of log10(cell energy / MeV)
    (cells above threshold, pooled);
  - ``response``: per resolution bin lists ``energy_gev``, ``n``, ``response``,
    ``resolution`` (measurements); ``resolution_fit``: ``a``, ``b`` (measurements;
    σ/E = a/√E ⊕ b, E in GeV), ``chi2_ndf``;
  - ``condition_trends``: for samples with x0, y0 or theta, ``"<observable>_<layer> vs
    <condition>"`` -> ``slope`` (measurement: least-squares slope, mm per mm or mm per rad),
    ``intercept``, ``n``, for the layer centroids against x0 and y0 and the widths against
    theta (``condition_trends``); empty otherwise;
  - ``mean_images``: layer name -> ``{"relative_l1": measurement}`` (value from every
    shower, uncertainty from the subsamples);
  - ``profiles``: ``longitudinal`` (mean energy per layer) and ``radial`` (mean energy per
    ring of transverse distance, ``observables.radial_profile``), each ``mean_mev``
    (measurements: mean over every shower, standard error from the subsample's spread),
    ``ratio`` (candidate / reference, measurements), ``compared`` (the bins whose
    reference mean is at least ``PROFILE_FLOOR`` of its peak) and ``max_deviation``
    (measurement: the largest |ratio − 1| over those bins, with that bin's uncertainty); the
    summary repeats ``longitudinal_max_deviation`` and ``radial_max_deviation``;
  - ``nearest_neighbours``: ``ratio``, ``copies`` (measurements), ``n_query``.
- A classifier result object holds ``auc`` (measurement: mean over the runs, combined
  uncertainty), ``auc_std`` (spread of the runs), ``auc_runs`` (each run's AUC),
  ``n_runs``, ``n_per_class``, ``model`` (``gbdt`` or ``mlp``), ``features`` (the level),
  ``auc_raw``, ``jsd``, ``best_epoch``, ``epochs`` (medians over runs; trees count
  boosting iterations), ``n_train``, ``n_val``, ``n_test`` (per run, both classes),
  ``seconds``; inside a candidate's summary it also holds ``floor`` (measurement),
  ``excess_sigma`` ((auc − floor) / combined uncertainty) and ``flagged`` (excess_sigma ≥ 5).
- ``timings_s``: stage name -> seconds (``read`` streams every sample).

New keys may be added in later versions with the same ``schema_version``; renaming or
removing a key increments it.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import chi2 as chi2_dist
from scipy.stats import ks_2samp, norm

from calogan import __version__
from calogan import metrics as m
from calogan import observables as obs
from calogan.data import ShowerData, particle_name
from calogan.errors import CaloganError
from calogan.geometry import Geometry
from calogan.io import inspect, iter_showers

__all__ = [
    "CLASSIFIER_LEVELS",
    "CONDITION_TRENDS",
    "FLAG_SIGMA",
    "PROFILE_FLOOR",
    "SCHEMA_VERSION",
    "Evaluation",
    "EvaluationConfig",
    "EvaluationError",
    "Sample",
    "SampleSummary",
    "check_compatible",
    "chi2_sigma",
    "condition_trends",
    "evaluate",
    "summarise",
    "to_json_value",
]

SCHEMA_VERSION = 2
FLAG_SIGMA = 5.0  # a candidate is flagged by a metric at this many standard deviations above its floor
# Profile bins compared: those whose reference mean is at least this fraction of its peak.
PROFILE_FLOOR = 0.01
# The classifier tests of every evaluation, in report order.
CLASSIFIER_LEVELS = ("low", "high", "low_calochallenge")
# Observable-versus-condition trends of conditional samples: (observable key, condition) per layer.
CONDITION_TRENDS = (("centroid_x", "x0"), ("centroid_y", "y0"), ("width_x", "theta"), ("width_y", "theta"))


class EvaluationError(CaloganError, ValueError):
    """Samples that cannot be compared (geometry or condition mismatch, too few showers)."""


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``evaluate`` computes and how.

    ``energy_bins``: ``"auto"``, a number of bins or edges in GeV (``metrics.energy_bin_edges``)
    for the per-bin histogram metrics; ``resolution_bins``: bins equally spaced in log E for
    the response and resolution curves (narrow where σ/E changes fastest); ``hist_bins``: bins per histogram; ``threshold``: cells at
    or below it (MeV) count as empty everywhere; ``classifiers=False`` skips the classifier
    tests (``--fast``); ``classifier``: the ``metrics.ClassifierConfig`` of every level, or a
    dict level -> config (levels not given keep ``metrics.default_classifier``), or ``None``
    for the defaults; ``n_boot``: bootstrap replicas of the histogram metrics and the
    resolution; ``nn_queries``: candidate showers matched to the reference in the
    nearest-neighbour check; ``allow_condition_mismatch`` turns condition and particle
    mismatches into warnings. ``subsample``: showers per sample, drawn at random, that the
    metrics needing whole showers in memory see (classifiers, FPD and KPD, nearest
    neighbours, the uncertainty of the mean-image difference); everything else streams over
    all showers in chunks of ``chunk_size``.
    """

    seed: int = 0
    threshold: float = 0.0
    energy_bins: str | int | tuple[float, ...] = "auto"
    resolution_bins: int = 10
    hist_bins: int = 40
    classifiers: bool = True
    classifier: m.ClassifierConfig | dict | None = None
    n_boot: int = 30
    nn_queries: int = 1000
    allow_condition_mismatch: bool = False
    subsample: int = 40000
    chunk_size: int = 8192

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise EvaluationError(f"threshold must be >= 0 MeV, got {self.threshold}")
        if self.hist_bins < 2 or self.resolution_bins < 1 or self.n_boot < 2 or self.nn_queries < 1:
            raise EvaluationError("hist_bins must be >= 2, resolution_bins >= 1, n_boot >= 2 and nn_queries >= 1")
        if self.subsample < 20 or self.chunk_size < 1:
            raise EvaluationError(f"subsample must be >= 20 showers and chunk_size >= 1, got {self.subsample} and {self.chunk_size}")
        if isinstance(self.classifier, dict) and set(self.classifier) - set(CLASSIFIER_LEVELS):
            raise EvaluationError(f"classifier configs for unknown levels {sorted(set(self.classifier) - set(CLASSIFIER_LEVELS))}")

    def classifier_config(self, level: str) -> m.ClassifierConfig:
        """The ``metrics.ClassifierConfig`` of one classifier level."""
        if isinstance(self.classifier, m.ClassifierConfig):
            return self.classifier
        if isinstance(self.classifier, dict) and level in self.classifier:
            return self.classifier[level]
        return m.default_classifier(level)


@dataclass(frozen=True)
class Sample:
    """A labelled shower sample: showers in memory (``data``), or a file streamed in chunks (``Sample.file``).

    ``source`` is the file path (or empty). A file sample reads ``max_showers`` random
    showers of the file (``seed``) or all of them.
    """

    label: str
    data: ShowerData | None = None
    source: str = ""
    geometry: str | Geometry | None = None
    strict: bool = False
    max_showers: int | None = None
    seed: int = 0

    @classmethod
    def file(cls, label: str, path, *, geometry=None, strict: bool = False, max_showers: int | None = None, seed: int = 0) -> Sample:
        """A sample streamed from a shower file; the file is checked now (``io.inspect``)."""
        info = inspect(path, geometry)
        return cls(label, None, str(info.path), info.geometry, strict, max_showers, seed)

    def chunks(self, size: int) -> Iterator[ShowerData]:
        """The sample's showers in chunks of at most ``size`` (files: read and validated chunk by chunk)."""
        if self.data is not None:
            yield from self.data.batches(size)
            return
        n = inspect(self.source, self.geometry).n
        keep = None
        if self.max_showers is not None and self.max_showers < n:
            keep = np.zeros(n, dtype=bool)
            keep[np.random.default_rng(self.seed).choice(n, self.max_showers, replace=False)] = True
        start = 0
        for chunk in iter_showers(self.source, size, geometry=self.geometry, strict=self.strict):
            sel = None if keep is None else keep[start : start + len(chunk)]
            start += len(chunk)
            if sel is None:
                yield chunk
            elif sel.any():
                yield chunk.select(sel)


@dataclass
class SampleSummary:
    """What ``evaluate`` keeps of one sample after streaming over it.

    Per shower (N,): ``e_inc`` (GeV), ``pdg``, ``conditions``, ``observables`` (name -> values
    of ``observables.high_level``); ``image_sum`` (n_cells,) summed cells (MeV, after the
    threshold); ``spectrum`` cell energies above the threshold (MeV; a uniform random
    subsample of at most 10⁶); ``subsample`` a random subsample of at most
    ``EvaluationConfig.subsample`` whole showers, in file order.
    """

    geometry: Geometry
    n: int
    e_inc: np.ndarray
    pdg: np.ndarray
    conditions: dict[str, np.ndarray]
    observables: dict[str, np.ndarray]
    image_sum: np.ndarray
    spectrum: np.ndarray
    subsample: ShowerData

    @property
    def particles(self) -> list[str]:
        return [particle_name(int(c)) for c in np.unique(self.pdg)]


_SPECTRUM_CAP = 1_000_000


def summarise(sample: Sample, config: EvaluationConfig, seed: int) -> SampleSummary:
    """Stream over a sample once: observables, sums and subsamples (``SampleSummary``); memory does not grow with the cells."""
    rng = np.random.default_rng(seed)
    n_total = len(sample.data) if sample.data is not None else inspect(sample.source, sample.geometry).n
    if sample.data is None and sample.max_showers is not None:
        n_total = min(n_total, sample.max_showers)
    keep_sub = np.zeros(n_total, dtype=bool)
    keep_sub[rng.choice(n_total, min(n_total, config.subsample), replace=False)] = True
    parts: dict[str, list] = {"e_inc": [], "pdg": [], "obs": [], "sub": [], "spec": []}
    conds: dict[str, list] = {}
    image_sum, geometry, start, keep_prob, n_spec = None, None, 0, 1.0, 0
    for chunk in sample.chunks(config.chunk_size):
        geometry = chunk.geometry
        cells = obs.apply_threshold(chunk.cells, config.threshold)
        parts["e_inc"].append(chunk.e_inc)
        parts["pdg"].append(chunk.pdg)
        for k, v in chunk.conditions.items():
            conds.setdefault(k, []).append(v)
        parts["obs"].append(obs.high_level(cells, geometry, chunk.e_inc))
        image_sum = cells.sum(axis=0) if image_sum is None else image_sum + cells.sum(axis=0)
        sel = keep_sub[start : start + len(chunk)]
        if sel.any():
            parts["sub"].append(chunk.select(sel))
        start += len(chunk)
        # the cell spectrum: a uniform subsample, thinned by half whenever it doubles the cap
        spec = obs.cell_spectrum(cells, config.threshold)
        if keep_prob < 1:
            spec = spec[rng.random(spec.size) < keep_prob]
        parts["spec"].append(spec)
        n_spec += spec.size
        if n_spec > 2 * _SPECTRUM_CAP:
            parts["spec"] = [x[rng.random(x.size) < 0.5] for x in parts["spec"]]
            keep_prob *= 0.5
            n_spec = sum(x.size for x in parts["spec"])
        del cells
    if geometry is None:
        raise EvaluationError(f"{sample.label}: no showers")
    spectrum = np.concatenate(parts["spec"]) if parts["spec"] else np.zeros(0)
    if spectrum.size > _SPECTRUM_CAP:
        spectrum = rng.choice(spectrum, _SPECTRUM_CAP, replace=False)
    names = list(parts["obs"][0])
    return SampleSummary(
        geometry=geometry,
        n=start,
        e_inc=np.concatenate(parts["e_inc"]),
        pdg=np.concatenate(parts["pdg"]),
        conditions={k: np.concatenate(v) for k, v in conds.items()},
        observables={name: np.concatenate([o[name] for o in parts["obs"]]) for name in names},
        image_sum=image_sum,
        spectrum=spectrum,
        subsample=ShowerData.concatenate(parts["sub"]),
    )


@dataclass(frozen=True)
class Evaluation:
    """Everything an evaluation produced.

    ``metrics`` is the ``metrics.json`` content. The rest feeds the figures, one entry per
    sample (reference first) unless stated: ``summaries`` (``SampleSummary``: per-shower
    observables, incident energies and conditions, the subsample of whole showers),
    ``energy_edges`` (GeV), ``resolution`` (``metrics.response_resolution`` outputs),
    ``resolution_fits``, ``mean_images`` (per layer (rows, cols) MeV), ``profiles``
    (``shower_profiles``: mean longitudinal and radial profiles with their standard errors),
    and per candidate ``nearest`` (the ``metrics.memorisation`` dictionaries; their indices
    point into the subsamples).
    """

    metrics: dict
    samples: list[Sample]
    summaries: list[SampleSummary]
    energy_edges: np.ndarray
    resolution: list[dict[str, np.ndarray]]
    resolution_fits: list[dict]
    mean_images: list[list[np.ndarray]]
    nearest: list[dict]
    profiles: list[dict[str, np.ndarray]] | None = None

    @property
    def geometry(self) -> Geometry:
        return self.summaries[0].geometry

    @property
    def observables(self) -> list[dict[str, np.ndarray]]:
        return [s.observables for s in self.summaries]

    @property
    def spectra(self) -> list[np.ndarray]:
        return [s.spectrum for s in self.summaries]


def to_json_value(x):
    """A metrics value as JSON: Measurement -> {"value", "uncertainty"}, NaN -> None, numpy -> Python."""
    if isinstance(x, m.Measurement):
        return {"value": to_json_value(x.value), "uncertainty": to_json_value(x.uncertainty)}
    if isinstance(x, dict):
        return {str(k): to_json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_json_value(v) for v in x]
    if isinstance(x, np.ndarray):
        return [to_json_value(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _distribution_mismatch(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def check_compatible(reference, candidate, label: str, *, allow_condition_mismatch: bool = False) -> list[str]:
    """Check that ``candidate`` can be compared with ``reference``; return warnings, raise ``EvaluationError``.

    The geometries must have the same layers (always an error). The condition keys, the
    particles and the distributions of incident energy and of every condition must agree:
    a two-sample Kolmogorov-Smirnov distance above 0.05 with p < 10⁻³ means the candidate
    was made at other conditions than the reference, and the comparison would measure that
    instead of the simulation. These are errors unless ``allow_condition_mismatch``.
    """
    g_ref, g_cand = reference.geometry, candidate.geometry
    if g_ref.layers != g_cand.layers:
        raise EvaluationError(
            f"{label}: geometry {g_cand.name!r} ({g_cand.n_layers} layers, {g_cand.n_cells} cells) differs from the reference's "
            f"{g_ref.name!r} ({g_ref.n_layers} layers, {g_ref.n_cells} cells)"
        )
    problems = []
    if set(reference.conditions) != set(candidate.conditions):
        problems.append(
            f"{label}: conditions {['e_inc', *candidate.conditions]} differ from the reference's {['e_inc', *reference.conditions]}"
        )
    p_ref, p_cand = set(np.unique(reference.pdg).tolist()), set(np.unique(candidate.pdg).tolist())
    if p_ref != p_cand and 0 not in p_ref | p_cand:
        problems.append(
            f"{label}: particles {sorted(particle_name(p) for p in p_cand)} differ from the reference's {sorted(particle_name(p) for p in p_ref)}"
        )
    keys = ["e_inc", *(k for k in reference.conditions if k in candidate.conditions)]
    for key in keys:
        a = reference.e_inc if key == "e_inc" else reference.conditions[key]
        b = candidate.e_inc if key == "e_inc" else candidate.conditions[key]
        d, p = _distribution_mismatch(a, b)
        if d > 0.05 and p < 1e-3:
            problems.append(
                f"{label}: its {key} distribution differs from the reference's (KS distance {d:.3f}, p = {p:.1e}; "
                f"range {b.min():.4g}-{b.max():.4g} vs {a.min():.4g}-{a.max():.4g}); generate the candidate at the reference's conditions"
            )
    if problems and not allow_condition_mismatch:
        raise EvaluationError(problems[0] + " (--allow-condition-mismatch compares anyway)")
    return problems


def _sample_info(s: Sample, d: SampleSummary) -> dict:
    return {
        "label": s.label,
        "source": s.source,
        "n_showers": d.n,
        "particles": d.particles,
        "conditions": ["e_inc", *d.conditions],
        "e_inc_gev": [float(d.e_inc.min()), float(d.e_inc.max())],
    }


def _classifier_json(r: m.ClassifierResult) -> dict:
    out = asdict(r)
    out["auc"] = r.measurement
    del out["auc_uncertainty"]
    out["auc_runs"] = list(r.auc_runs)
    return out


def _hist_metrics(a: np.ndarray, b: np.ndarray, config: EvaluationConfig, seed: int) -> dict | None:
    """Separation power, χ²/ndf and W1 of one observable's reference and candidate values."""
    fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
    if fa.size == 0 or fb.size == 0:
        return None
    edges = m.shared_bins(fa, fb, config.hist_bins)
    chi2, ndf = m.chi2_test(fa, fb, bins=edges)
    return {
        "separation_power": m.separation_power(fa, fb, bins=edges, n_boot=config.n_boot, seed=seed),
        # what two samples of one distribution reach at these statistics: E[S] = (bins used)/4 (1/N + 1/M)
        "separation_power_null": (ndf + 1) / 4 * (1 / fa.size + 1 / fb.size),
        "chi2_ndf": m.Measurement(chi2 / ndf, math.sqrt(2 / ndf)) if ndf > 0 else m.Measurement(float("nan"), float("nan")),
        "ndf": ndf,
        "wasserstein": m.wasserstein(fa, fb, n_boot=config.n_boot, seed=seed),
        "n": [int(fa.size), int(fb.size)],
        "undefined_fraction": [float(1 - fa.size / a.size), float(1 - fb.size / b.size)],
    }


def _mean_measurement(values: list[m.Measurement]) -> m.Measurement:
    v = np.array([x.value for x in values if math.isfinite(x.value)])
    u = np.array([x.uncertainty for x in values if math.isfinite(x.value)])
    if v.size == 0:
        return m.Measurement(float("nan"), float("nan"))
    return m.Measurement(float(v.mean()), float(np.sqrt(np.nansum(u**2)) / v.size))


def _subsample(data: ShowerData, n: int, rng: np.random.Generator) -> ShowerData:
    return data if len(data) <= n else data.select(np.sort(rng.choice(len(data), n, replace=False)))


def chi2_sigma(chi2: float, ndf: int) -> float | None:
    """The one-sided Gaussian significance of a χ² with ``ndf`` degrees of freedom: Φ⁻¹(1 − p); 0 at p ≥ 0.5, capped at 40."""
    if not (math.isfinite(chi2) and ndf > 0):
        return None
    log_p = float(chi2_dist.logsf(chi2, ndf))
    return float(min(max(-norm.ppf(math.exp(log_p)) if log_p > -700 else 40.0, 0.0), 40.0))


def _response_deviation(ref: dict, cand: dict) -> dict:
    """χ² of the candidate's mean response against the reference's over the resolution bins, and its significance."""
    d = cand["response"] - ref["response"]
    var = cand["response_unc"] ** 2 + ref["response_unc"] ** 2
    ok = np.isfinite(d) & np.isfinite(var) & (var > 0)
    chi2, ndf = float(np.sum(d[ok] ** 2 / var[ok])), int(ok.sum())
    return {"chi2": chi2, "ndf": ndf, "sigma": chi2_sigma(chi2, ndf)}


def condition_trends(summary: SampleSummary, geometry: Geometry) -> dict:
    """Least-squares slope of each ``CONDITION_TRENDS`` observable against its condition, per layer, for the conditions the sample has.

    Returns ``"<observable>_<layer> vs <condition>"`` -> ``{"slope", "intercept", "n"}`` with
    the slope a ``Measurement`` (standard error of the fit; unit of the observable per unit
    of the condition); showers where the observable is undefined are left out.
    """
    out = {}
    for key, cond in CONDITION_TRENDS:
        if cond not in summary.conditions:
            continue
        x_all = summary.conditions[cond]
        for layer in geometry.layers:
            y_all = summary.observables[f"{key}_{layer.name}"]
            ok = np.isfinite(y_all)
            x, y = x_all[ok], y_all[ok]
            if x.size < 3 or np.ptp(x) == 0:
                continue
            xm, ym = x.mean(), y.mean()
            sxx = float(((x - xm) ** 2).sum())
            slope = float(((x - xm) * (y - ym)).sum() / sxx)
            resid = y - ym - slope * (x - xm)
            se = math.sqrt(float((resid**2).sum()) / (x.size - 2) / sxx)
            out[f"{key}_{layer.name} vs {cond}"] = {
                "slope": m.Measurement(slope, se),
                "intercept": float(ym - slope * xm),
                "n": int(x.size),
            }
    return out


def shower_profiles(summary: SampleSummary, cells: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Mean longitudinal (per layer) and radial (per ring, ``edges`` mm) profiles in MeV of a sample.

    The means come from every shower (``summary.image_sum``); their standard errors from the
    spread of the per-shower profiles of ``cells`` (N', n_cells), the sample's subsample.
    Returns ``longitudinal``, ``longitudinal_unc`` (n_layers,), ``radial``, ``radial_unc``
    (n_rings,) and ``radial_edges``.
    """
    g, mean = summary.geometry, (summary.image_sum / summary.n)[None, :]
    out = {"radial_edges": edges}
    for key, values, spread in (
        ("longitudinal", obs.layer_energies(mean, g)[0], obs.layer_energies(cells, g)),
        ("radial", obs.radial_profile(mean, g, edges)[0], obs.radial_profile(cells, g, edges)),
    ):
        out[key] = values
        out[f"{key}_unc"] = spread.std(axis=0, ddof=1) / math.sqrt(summary.n) if len(cells) > 1 else np.full(values.shape, np.nan)
    return out


def _profile_json(ref: dict, cand: dict, key: str) -> dict:
    """Candidate / reference ratio of one mean profile, and its largest deviation over the bins above PROFILE_FLOOR of the peak."""
    r, u_r, c, u_c = ref[key], ref[f"{key}_unc"], cand[key], cand[f"{key}_unc"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = c / r
        ratio_unc = np.abs(ratio) * np.sqrt((u_c / c) ** 2 + (u_r / r) ** 2)
    compared = r >= PROFILE_FLOOR * r.max() if r.max() > 0 else np.zeros(r.shape, bool)
    out = {
        "mean_mev": [m.Measurement(v, e) for v, e in zip(c, u_c)],
        "ratio": [m.Measurement(v, e) for v, e in zip(ratio, ratio_unc)],
        "compared": compared,
        "max_deviation": m.Measurement(float("nan"), float("nan")),
    }
    if compared.any():
        worst = int(np.flatnonzero(compared)[np.argmax(np.abs(ratio[compared] - 1))])
        out["max_deviation"] = m.Measurement(float(abs(ratio[worst] - 1)), float(ratio_unc[worst]))
    return out


def evaluate(reference: Sample, candidates: list[Sample], config: EvaluationConfig = EvaluationConfig(), *, progress=None) -> Evaluation:
    """Compare every candidate with the reference; see the module docstring for what is computed.

    Samples are streamed once (``summarise``): memory grows with the number of showers only
    by their observables, not their cells. ``progress(stage)`` is called before each stage
    when given (the CLI prints it). Raises ``EvaluationError`` for samples that cannot be
    compared.
    """
    if not candidates:
        raise EvaluationError("nothing to evaluate: give at least one candidate sample")
    say = progress or (lambda stage: None)
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(stage: str) -> None:
        now = time.perf_counter()
        timings[stage] = round(timings.get(stage, 0.0) + now - clock[0], 3)
        clock[0] = now

    samples = [reference, *candidates]
    summaries = []
    for i, s in enumerate(samples):
        say(f"reading {s.source or s.label}: observables, sums, subsample")
        summaries.append(summarise(s, config, config.seed + 101 * i))
    lap("read")
    ref = summaries[0]
    g = ref.geometry
    if ref.n < 20:
        raise EvaluationError(f"{reference.label}: {ref.n} showers; the evaluation needs at least 20 reference showers")
    warnings = []
    for c, d in zip(candidates, summaries[1:]):
        if d.n < 10:
            raise EvaluationError(f"{c.label}: {d.n} showers; the evaluation needs at least 10 per candidate")
        warnings += check_compatible(ref, d, c.label, allow_condition_mismatch=config.allow_condition_mismatch)
    lap("checks")
    observables = [d.observables for d in summaries]
    names = list(observables[0])

    say("histogram metrics")
    try:
        edges = m.energy_bin_edges(ref.e_inc, config.energy_bins)
    except m.MetricError as err:
        raise EvaluationError(f"energy_bins: {err}") from None
    bin_of = [m.energy_bin_index(d.e_inc, edges) for d in summaries]
    n_ebins = len(edges) - 1
    per_candidate = []
    for ci, d in enumerate(summaries[1:], start=1):
        entry = {"observables": {}}
        for name in names:
            a, b = observables[0][name], observables[ci][name]
            per_bin = []
            for k in range(n_ebins):
                sa, sb = a[bin_of[0] == k], b[bin_of[ci] == k]
                per_bin.append(_hist_metrics(sa, sb, config, config.seed + k + 1) if sa.size and sb.size else None)
            entry["observables"][name] = {"all": _hist_metrics(a, b, config, config.seed), "energy_bins": per_bin}
        la, lb = np.log10(ref.spectrum), np.log10(d.spectrum)
        if la.size and lb.size:
            sbins = m.shared_bins(la, lb, config.hist_bins)
            entry["cell_spectrum"] = {
                "separation_power": m.separation_power(la, lb, bins=sbins, n_boot=config.n_boot, seed=config.seed),
                "chi2_ndf": m.chi2_ndf(la, lb, bins=sbins),
            }
        else:
            entry["cell_spectrum"] = {"separation_power": None, "chi2_ndf": None}
        entry["energy_chi2"] = m.energy_chi2((observables[0]["e_tot"], ref.e_inc), (observables[ci]["e_tot"], d.e_inc), n_bins=10)
        per_candidate.append(entry)
    lap("histogram metrics")

    say("response and resolution")
    res_edges = m.energy_bin_edges(ref.e_inc, config.resolution_bins, spacing="log")
    resolution, fits = [], []
    for d in summaries:
        r = m.response_resolution(d.observables["e_tot"], d.e_inc, res_edges, n_boot=config.n_boot, seed=config.seed)
        resolution.append(r)
        fits.append(m.fit_resolution(r["energy"], r["resolution"], r["resolution_unc"]))
    for ci in range(1, len(summaries)):
        per_candidate[ci - 1]["response_deviation"] = _response_deviation(resolution[0], resolution[ci])
    trends = [condition_trends(d, g) for d in summaries]
    lap("response and resolution")

    say("mean images")
    images = [m.mean_images((d.image_sum / d.n)[None, :], g) for d in summaries]
    subs = [obs.apply_threshold(d.subsample.cells, config.threshold) for d in summaries]
    for ci in range(1, len(summaries)):
        layers = {}
        for i, layer in enumerate(g.layers):
            if images[0][i].sum() <= 0:  # an empty reference layer: nothing to compare with
                layers[layer.name] = {"relative_l1": m.Measurement(float("nan"), float("nan"))}
                continue
            sl = g.layer_slice(i)
            # the value from every shower; the uncertainty by bootstrap of the subsamples (an overestimate when they are smaller)
            value = float(np.abs(images[0][i] - images[ci][i]).sum() / images[0][i].sum())
            unc = m.mean_image_difference(subs[0][:, sl], subs[ci][:, sl], n_boot=min(config.n_boot, 20), seed=config.seed).uncertainty
            layers[layer.name] = {"relative_l1": m.Measurement(value, unc)}
        per_candidate[ci - 1]["mean_images"] = layers
    lap("mean images")
    say("longitudinal and radial profiles")
    ring_edges = obs.radial_bin_edges(g)
    profiles = [shower_profiles(d, sub, ring_edges) for d, sub in zip(summaries, subs)]
    for ci in range(1, len(summaries)):
        per_candidate[ci - 1]["profiles"] = {key: _profile_json(profiles[0], profiles[ci], key) for key in ("longitudinal", "radial")}
    del subs
    lap("profiles")

    # reference halves A and B of the reference's subsample: candidates are compared with A, the floor is B against A
    half_a, half_b = ref.subsample.split((0.5, 0.5), seed=config.seed)
    say("FPD and KPD")
    feats_a, feats_b = (m.classifier_features(h, "high", config.threshold) for h in (half_a, half_b))
    floor = {"fpd": m.fpd(feats_a, feats_b, seed=config.seed), "kpd": m.kpd(feats_a, feats_b, seed=config.seed)}
    for ci, d in enumerate(summaries[1:], start=1):
        feats = m.classifier_features(d.subsample, "high", config.threshold)
        per_candidate[ci - 1]["fpd"] = m.fpd(feats_a, feats, seed=config.seed)
        per_candidate[ci - 1]["kpd"] = m.kpd(feats_a, feats, seed=config.seed)
    lap("FPD and KPD")

    n_cls = min(len(half_a), len(half_b), *(len(d.subsample) for d in summaries[1:]))
    floor["n_showers_per_class"] = n_cls
    for level in CLASSIFIER_LEVELS:
        key = f"classifier_{level}"
        floor[key] = None
        for entry in per_candidate:
            entry[key] = None
        if not config.classifiers:
            continue
        cfg = config.classifier_config(level)
        need = math.ceil(5 / min(cfg.splits))
        if n_cls < need:
            raise EvaluationError(
                f"the classifier tests need at least {need} showers per class (half the reference and each candidate), "
                f"have {n_cls}; give more showers or skip them with --fast"
            )
        say(f"classifier ({level}), floor")
        crng = np.random.default_rng(config.seed + 17)
        a_n = _subsample(half_a, n_cls, crng)
        kwargs = dict(level=level, config=cfg, seed=config.seed, threshold=config.threshold)
        floor[key] = m.classifier_test(a_n, _subsample(half_b, n_cls, crng), **kwargs)
        for ci, (c, d) in enumerate(zip(candidates, summaries[1:]), start=1):
            say(f"classifier ({level}), {c.label}")
            per_candidate[ci - 1][key] = m.classifier_test(a_n, _subsample(d.subsample, n_cls, crng), **kwargs)
        lap(f"classifier {level}")

    say("nearest neighbours")
    nearest = []

    def nn_features(d: ShowerData) -> np.ndarray:
        return obs.apply_threshold(d.cells, config.threshold) / (1000.0 * d.e_inc[:, None])

    ref_nn = nn_features(ref.subsample)
    for ci, d in enumerate(summaries[1:], start=1):
        result = m.memorisation(ref_nn, nn_features(d.subsample), n_query=config.nn_queries, seed=config.seed)
        nearest.append(result)
        per_candidate[ci - 1]["nearest_neighbours"] = {
            "ratio": result["ratio"],
            "copies": result["copies"],
            "n_query": int(result["candidate_distances"].size),
        }
    lap("nearest neighbours")

    metrics = _assemble(samples, summaries, config, g, edges, names, warnings, floor, per_candidate, resolution, fits, res_edges, trends)
    metrics["reference"]["profiles"] = {
        "longitudinal": {"mean_mev": [m.Measurement(v, e) for v, e in zip(profiles[0]["longitudinal"], profiles[0]["longitudinal_unc"])]},
        "radial": {
            "edges_mm": ring_edges,
            "mean_mev": [m.Measurement(v, e) for v, e in zip(profiles[0]["radial"], profiles[0]["radial_unc"])],
        },
    }
    metrics["timings_s"] = timings
    return Evaluation(
        metrics=to_json_value(metrics),
        samples=samples,
        summaries=summaries,
        energy_edges=edges,
        resolution=resolution,
        resolution_fits=fits,
        mean_images=images,
        nearest=nearest,
        profiles=profiles,
    )


def _response_json(r: dict) -> dict:
    return {
        "energy_gev": r["energy"],
        "n": r["n"],
        "response": [m.Measurement(v, u) for v, u in zip(r["response"], r["response_unc"])],
        "resolution": [m.Measurement(v, u) for v, u in zip(r["resolution"], r["resolution_unc"])],
    }


def _assemble(samples, summaries, config, g, edges, names, warnings, floor, per_candidate, resolution, fits, res_edges, trends) -> dict:
    """The metrics.json dictionary (before ``to_json_value``)."""
    settings = {
        "seed": config.seed,
        "threshold_mev": config.threshold,
        "energy_bins": config.energy_bins if isinstance(config.energy_bins, (str, int)) else list(config.energy_bins),
        "hist_bins": config.hist_bins,
        "resolution_bins": config.resolution_bins,
        "resolution_bin_edges_gev": res_edges,
        "n_boot": config.n_boot,
        "nn_queries": config.nn_queries,
        "classifiers": config.classifiers,
        "classifier": {level: asdict(config.classifier_config(level)) for level in CLASSIFIER_LEVELS},
        "subsample": config.subsample,
        "allow_condition_mismatch": config.allow_condition_mismatch,
    }
    floor_json = {k: (_classifier_json(v) if isinstance(v, m.ClassifierResult) else v) for k, v in floor.items()}
    candidates = []
    for ci, entry in enumerate(per_candidate, start=1):
        sep = {n: entry["observables"][n]["all"] for n in names}
        valid = {n: v for n, v in sep.items() if v is not None}
        summary = {}
        for level in CLASSIFIER_LEVELS:
            key = f"classifier_{level}"
            r, f = entry[key], floor[key]
            if r is None:
                summary[key] = None
                continue
            s = _classifier_json(r)
            s["floor"] = f.measurement
            s["excess_sigma"] = m.auc_excess(r, f)
            s["flagged"] = s["excess_sigma"] is not None and s["excess_sigma"] >= FLAG_SIGMA
            summary[key] = s
        worst = sorted(valid, key=lambda n: -valid[n]["separation_power"].value)[:5]
        e_chi2 = entry["energy_chi2"]
        ndf = round(2 / e_chi2.uncertainty**2) if e_chi2.uncertainty > 0 else 0
        summary |= {
            "fpd": entry["fpd"],
            "kpd": entry["kpd"],
            "energy_chi2": e_chi2,
            "energy_chi2_sigma": chi2_sigma(e_chi2.value * ndf, ndf),
            "response_deviation": entry["response_deviation"],
            "separation_power_mean": _mean_measurement([v["separation_power"] for v in valid.values()]),
            "chi2_ndf_mean": _mean_measurement([v["chi2_ndf"] for v in valid.values()]),
            "worst_observables": worst,
            "longitudinal_max_deviation": entry["profiles"]["longitudinal"]["max_deviation"],
            "radial_max_deviation": entry["profiles"]["radial"]["max_deviation"],
            "nn_ratio": entry["nearest_neighbours"]["ratio"],
            "nn_copies": entry["nearest_neighbours"]["copies"],
        }
        candidates.append(
            _sample_info(samples[ci], summaries[ci])
            | {
                "summary": summary,
                "observables": entry["observables"],
                "cell_spectrum": entry["cell_spectrum"],
                "response": _response_json(resolution[ci]),
                "resolution_fit": fits[ci],
                "condition_trends": trends[ci],
                "mean_images": entry["mean_images"],
                "profiles": entry["profiles"],
                "nearest_neighbours": entry["nearest_neighbours"],
            }
        )
    return {
        "schema": "calogan-metrics",
        "schema_version": SCHEMA_VERSION,
        "calogan_version": __version__,
        "created_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings,
        "geometry": {"name": g.name, "n_layers": g.n_layers, "n_cells": g.n_cells, "layers": [layer.name for layer in g.layers]},
        "energy_bins_gev": [[float(a), float(b)] for a, b in zip(edges[:-1], edges[1:])],
        "observables": [{"name": n, "label": obs.observable_unit(n, g)[0], "unit": obs.observable_unit(n, g)[1]} for n in names],
        "warnings": warnings,
        "reference": _sample_info(samples[0], summaries[0])
        | {"response": _response_json(resolution[0]), "resolution_fit": fits[0], "condition_trends": trends[0]},
        "floor": floor_json,
        "candidates": candidates,
    }
