"""Evaluate candidate shower samples against a reference: every metric, as ``metrics.json`` plus arrays for the figures.

``evaluate(reference, candidates, labels, config)`` checks that the samples can be
compared, computes the observables of every sample and all metrics of ``calogan.metrics``
for each candidate, and returns an ``Evaluation``: the JSON-ready ``metrics`` dictionary
(schema below) and the arrays ``calogan.report`` draws. ``calogan evaluate`` is its
command line.

Reference halves and floors
---------------------------
The reference is split once, at random (``seed``), into halves A and B. The classifier,
FPD and KPD compare each candidate with half A; their *floor* compares half B with half A,
the value an indistinguishable candidate reaches with the same statistics. The classifier
tests use the same number of showers per class for the floor and every candidate (the
smallest of |A|, |B| and each candidate's size). Histogram metrics, response and
resolution use the whole reference.

metrics.json, schema version 1
------------------------------
Numbers with an uncertainty are objects ``{"value": v, "uncertainty": u}``; a number that
is undefined (e.g. χ²/ndf with ndf = 0, a metric of an energy bin without showers) is
``null``. Top-level keys, all always present:

- ``schema`` (``"calogan-metrics"``), ``schema_version`` (1), ``calogan_version``,
  ``created_utc`` (ISO 8601).
- ``settings``: ``seed``, ``threshold_mev``, ``energy_bins`` (the requested spec),
  ``hist_bins``, ``resolution_bins``, ``resolution_bin_edges_gev`` (edges of the response and
  resolution bins), ``n_boot``, ``nn_queries``, ``classifiers`` (bool:
  false with ``--fast``), ``classifier`` (the ``ClassifierConfig`` fields),
  ``allow_condition_mismatch``.
- ``geometry``: ``name``, ``n_layers``, ``n_cells``, ``layers`` (names).
- ``energy_bins_gev``: list of ``[lo, hi]`` incident-energy bins of the per-bin metrics.
- ``observables``: list of ``{"name", "label", "unit"}`` in report order.
- ``warnings``: list of strings (condition mismatches allowed by the user, ...).
- ``reference``: ``label``, ``source``, ``n_showers``, ``particles``, ``conditions``,
  ``e_inc_gev`` ([min, max]), ``response`` and ``resolution_fit`` (as for candidates).
- ``floor``: ``n_showers_per_class``, ``classifier_low``, ``classifier_high`` (classifier
  result objects, or ``null`` with ``--fast``), ``fpd``, ``kpd`` (measurements).
- ``candidates``: one object per candidate, in command-line order, with
  - ``label``, ``source``, ``n_showers``, ``particles``, ``conditions``, ``e_inc_gev``;
  - ``summary``: ``classifier_low``, ``classifier_high`` (``null`` with ``--fast``),
    ``fpd``, ``kpd``, ``energy_chi2``, ``separation_power_mean``, ``chi2_ndf_mean``,
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
  - ``mean_images``: layer name -> ``{"relative_l1": measurement}``;
  - ``nearest_neighbours``: ``ratio``, ``copies`` (measurements), ``n_query``.
- A classifier result object holds ``auc`` (measurement, calibrated), ``auc_raw``,
  ``jsd``, ``best_epoch``, ``epochs``, ``n_train``, ``n_val``, ``n_test``, ``seconds``;
  inside a candidate's summary it also holds ``floor`` (measurement) and
  ``excess_sigma`` ((auc − floor) / combined uncertainty).
- ``timings_s``: stage name -> seconds.

New keys may be added in later versions with the same ``schema_version``; renaming or
removing a key increments it.
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import ks_2samp

from calogan import __version__
from calogan import metrics as m
from calogan import observables as obs
from calogan.data import ShowerData, particle_name
from calogan.errors import CaloganError

__all__ = [
    "SCHEMA_VERSION",
    "Evaluation",
    "EvaluationConfig",
    "EvaluationError",
    "Sample",
    "check_compatible",
    "evaluate",
    "to_json_value",
]

SCHEMA_VERSION = 1


class EvaluationError(CaloganError, ValueError):
    """Samples that cannot be compared (geometry or condition mismatch, too few showers)."""


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``evaluate`` computes and how.

    ``energy_bins``: ``"auto"``, a number of bins or edges in GeV (``metrics.energy_bin_edges``)
    for the per-bin histogram metrics; ``resolution_bins``: bins equally spaced in log E for
    the response and resolution curves (narrow where σ/E changes fastest); ``hist_bins``: bins per histogram; ``threshold``: cells at
    or below it (MeV) count as empty everywhere; ``classifiers=False`` skips both classifier
    tests (``--fast``); ``n_boot``: bootstrap replicas of the histogram metrics and the
    resolution; ``nn_queries``: candidate showers matched to the reference in the
    nearest-neighbour check; ``allow_condition_mismatch`` turns condition and particle
    mismatches into warnings.
    """

    seed: int = 0
    threshold: float = 0.0
    energy_bins: str | int | tuple[float, ...] = "auto"
    resolution_bins: int = 10
    hist_bins: int = 40
    classifiers: bool = True
    classifier: m.ClassifierConfig = field(default_factory=m.ClassifierConfig)
    n_boot: int = 30
    nn_queries: int = 1000
    allow_condition_mismatch: bool = False

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise EvaluationError(f"threshold must be >= 0 MeV, got {self.threshold}")
        if self.hist_bins < 2 or self.resolution_bins < 1 or self.n_boot < 2 or self.nn_queries < 1:
            raise EvaluationError("hist_bins must be >= 2, resolution_bins >= 1, n_boot >= 2 and nn_queries >= 1")


@dataclass(frozen=True)
class Sample:
    """A labelled shower sample and where it came from (a file path, or empty)."""

    label: str
    data: ShowerData
    source: str = ""


@dataclass(frozen=True)
class Evaluation:
    """Everything an evaluation produced.

    ``metrics`` is the ``metrics.json`` content. The rest feeds the figures, one entry per
    sample (reference first) unless stated: ``observables`` name -> (N,) arrays,
    ``energy_edges`` (GeV), ``resolution`` (``metrics.response_resolution`` outputs),
    ``resolution_fits``, ``mean_images`` (per layer (rows, cols) MeV), ``spectra`` (cell
    energies, MeV, subsampled to at most 10⁶), and per candidate ``nearest`` (the
    ``metrics.memorisation`` dictionaries).
    """

    metrics: dict
    samples: list[Sample]
    observables: list[dict[str, np.ndarray]]
    energy_edges: np.ndarray
    resolution: list[dict[str, np.ndarray]]
    resolution_fits: list[dict]
    mean_images: list[list[np.ndarray]]
    spectra: list[np.ndarray]
    nearest: list[dict]

    @property
    def geometry(self):
        return self.samples[0].data.geometry


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


def check_compatible(reference: ShowerData, candidate: ShowerData, label: str, *, allow_condition_mismatch: bool = False) -> list[str]:
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


def _sample_info(s: Sample) -> dict:
    d = s.data
    return {
        "label": s.label,
        "source": s.source,
        "n_showers": len(d),
        "particles": d.particles,
        "conditions": ["e_inc", *d.conditions],
        "e_inc_gev": [float(d.e_inc.min()), float(d.e_inc.max())],
    }


def _classifier_json(r: m.ClassifierResult) -> dict:
    out = asdict(r)
    out["auc"] = r.measurement
    del out["auc_uncertainty"]
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


def evaluate(reference: Sample, candidates: list[Sample], config: EvaluationConfig = EvaluationConfig(), *, progress=None) -> Evaluation:
    """Compare every candidate with the reference; see the module docstring for what is computed.

    ``progress(stage)`` is called before each stage when given (the CLI prints it).
    Raises ``EvaluationError`` for samples that cannot be compared.
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

    ref = reference.data
    g = ref.geometry
    if len(ref) < 20:
        raise EvaluationError(f"{reference.label}: {len(ref)} showers; the evaluation needs at least 20 reference showers")
    warnings = []
    for c in candidates:
        if len(c.data) < 10:
            raise EvaluationError(f"{c.label}: {len(c.data)} showers; the evaluation needs at least 10 per candidate")
        warnings += check_compatible(ref, c.data, c.label, allow_condition_mismatch=config.allow_condition_mismatch)
    samples = [reference, *candidates]
    lap("checks")

    say("observables")
    observables = [obs.high_level(s.data.cells, g, s.data.e_inc, config.threshold) for s in samples]
    names = list(observables[0])
    lap("observables")

    say("histogram metrics")
    try:
        edges = m.energy_bin_edges(ref.e_inc, config.energy_bins)
    except m.MetricError as err:
        raise EvaluationError(f"energy_bins: {err}") from None
    bin_of = [m.energy_bin_index(s.data.e_inc, edges) for s in samples]
    n_ebins = len(edges) - 1
    spectra = []
    rng = np.random.default_rng(config.seed)
    for s in samples:
        spec = obs.cell_spectrum(s.data.cells, config.threshold)
        spectra.append(spec if spec.size <= 1_000_000 else rng.choice(spec, 1_000_000, replace=False))
    per_candidate = []
    for ci, c in enumerate(candidates, start=1):
        entry = {"observables": {}}
        for name in names:
            a, b = observables[0][name], observables[ci][name]
            per_bin = []
            for k in range(n_ebins):
                sa, sb = a[bin_of[0] == k], b[bin_of[ci] == k]
                per_bin.append(_hist_metrics(sa, sb, config, config.seed + k + 1) if sa.size and sb.size else None)
            entry["observables"][name] = {"all": _hist_metrics(a, b, config, config.seed), "energy_bins": per_bin}
        la, lb = np.log10(spectra[0]), np.log10(spectra[ci])
        if la.size and lb.size:
            sbins = m.shared_bins(la, lb, config.hist_bins)
            entry["cell_spectrum"] = {
                "separation_power": m.separation_power(la, lb, bins=sbins, n_boot=config.n_boot, seed=config.seed),
                "chi2_ndf": m.chi2_ndf(la, lb, bins=sbins),
            }
        else:
            entry["cell_spectrum"] = {"separation_power": None, "chi2_ndf": None}
        entry["energy_chi2"] = m.energy_chi2(ref, c.data, n_bins=10)
        per_candidate.append(entry)
    lap("histogram metrics")

    say("response and resolution")
    res_edges = m.energy_bin_edges(ref.e_inc, config.resolution_bins, spacing="log")
    resolution, fits = [], []
    for s, o in zip(samples, observables):
        r = m.response_resolution(o["e_tot"], s.data.e_inc, res_edges, n_boot=config.n_boot, seed=config.seed)
        resolution.append(r)
        fits.append(m.fit_resolution(r["energy"], r["resolution"], r["resolution_unc"]))
    lap("response and resolution")

    say("mean images")
    thresholded = [obs.apply_threshold(s.data.cells, config.threshold) for s in samples]
    images = [m.mean_images(cells, g) for cells in thresholded]
    for ci in range(1, len(samples)):
        per_candidate[ci - 1]["mean_images"] = {
            layer.name: {
                "relative_l1": m.mean_image_difference(
                    thresholded[0][:, g.layer_slice(i)],
                    thresholded[ci][:, g.layer_slice(i)],
                    n_boot=min(config.n_boot, 20),
                    seed=config.seed,
                )
                if images[0][i].sum() > 0
                else m.Measurement(float("nan"), float("nan"))  # an empty reference layer: nothing to compare with
            }
            for i, layer in enumerate(g.layers)
        }
    del thresholded
    lap("mean images")

    # reference halves A and B: candidates are compared with A, the floor is B against A
    half_a, half_b = ref.split((0.5, 0.5), seed=config.seed)
    say("FPD and KPD")
    feats_a, feats_b = (m.classifier_features(h, "high", config.threshold) for h in (half_a, half_b))
    floor = {"fpd": m.fpd(feats_a, feats_b, seed=config.seed), "kpd": m.kpd(feats_a, feats_b, seed=config.seed)}
    for ci, c in enumerate(candidates, start=1):
        feats = m.classifier_features(c.data, "high", config.threshold)
        per_candidate[ci - 1]["fpd"] = m.fpd(feats_a, feats, seed=config.seed)
        per_candidate[ci - 1]["kpd"] = m.kpd(feats_a, feats, seed=config.seed)
    lap("FPD and KPD")

    n_cls = min(len(half_a), len(half_b), *(len(c.data) for c in candidates))
    floor["n_showers_per_class"] = n_cls
    need = math.ceil(5 / min(config.classifier.splits))
    if config.classifiers and n_cls < need:
        raise EvaluationError(
            f"the classifier tests need at least {need} showers per class (half the reference and each candidate), "
            f"have {n_cls}; give more showers or skip them with --fast"
        )
    for level in ("low", "high"):
        key = f"classifier_{level}"
        floor[key] = None
        for entry in per_candidate:
            entry[key] = None
        if not config.classifiers:
            continue
        say(f"classifier ({level}-level), floor")
        crng = np.random.default_rng(config.seed + 17)
        a_n = _subsample(half_a, n_cls, crng)
        f = m.classifier_test(
            a_n, _subsample(half_b, n_cls, crng), level=level, config=config.classifier, seed=config.seed, threshold=config.threshold
        )
        floor[key] = f
        for ci, c in enumerate(candidates, start=1):
            say(f"classifier ({level}-level), {c.label}")
            r = m.classifier_test(
                a_n, _subsample(c.data, n_cls, crng), level=level, config=config.classifier, seed=config.seed, threshold=config.threshold
            )
            per_candidate[ci - 1][key] = r
        lap(f"classifier {level}-level")

    say("nearest neighbours")
    nearest = []

    def nn_features(d: ShowerData) -> np.ndarray:
        return obs.apply_threshold(d.cells, config.threshold) / (1000.0 * d.e_inc[:, None])

    ref_nn = nn_features(ref)
    for ci, c in enumerate(candidates, start=1):
        result = m.memorisation(ref_nn, nn_features(c.data), n_query=config.nn_queries, seed=config.seed)
        nearest.append(result)
        per_candidate[ci - 1]["nearest_neighbours"] = {
            "ratio": result["ratio"],
            "copies": result["copies"],
            "n_query": int(result["candidate_distances"].size),
        }
    lap("nearest neighbours")

    metrics = _assemble(samples, config, g, edges, names, observables, warnings, floor, per_candidate, resolution, fits, res_edges)
    metrics["timings_s"] = timings
    return Evaluation(
        metrics=to_json_value(metrics),
        samples=samples,
        observables=observables,
        energy_edges=edges,
        resolution=resolution,
        resolution_fits=fits,
        mean_images=images,
        spectra=spectra,
        nearest=nearest,
    )


def _response_json(r: dict) -> dict:
    return {
        "energy_gev": r["energy"],
        "n": r["n"],
        "response": [m.Measurement(v, u) for v, u in zip(r["response"], r["response_unc"])],
        "resolution": [m.Measurement(v, u) for v, u in zip(r["resolution"], r["resolution_unc"])],
    }


def _assemble(samples, config, g, edges, names, observables, warnings, floor, per_candidate, resolution, fits, res_edges) -> dict:
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
        "classifier": asdict(config.classifier),
        "allow_condition_mismatch": config.allow_condition_mismatch,
    }
    floor_json = {k: (_classifier_json(v) if isinstance(v, m.ClassifierResult) else v) for k, v in floor.items()}
    candidates = []
    for ci, entry in enumerate(per_candidate, start=1):
        sep = {n: entry["observables"][n]["all"] for n in names}
        valid = {n: v for n, v in sep.items() if v is not None}
        summary = {}
        for level in ("low", "high"):
            key = f"classifier_{level}"
            r, f = entry[key], floor[key]
            if r is None:
                summary[key] = None
                continue
            s = _classifier_json(r)
            s["floor"] = f.measurement
            s["excess_sigma"] = (
                (r.auc - f.auc) / math.hypot(r.auc_uncertainty, f.auc_uncertainty) if r.auc_uncertainty or f.auc_uncertainty else None
            )
            summary[key] = s
        worst = sorted(valid, key=lambda n: -valid[n]["separation_power"].value)[:5]
        summary |= {
            "fpd": entry["fpd"],
            "kpd": entry["kpd"],
            "energy_chi2": entry["energy_chi2"],
            "separation_power_mean": _mean_measurement([v["separation_power"] for v in valid.values()]),
            "chi2_ndf_mean": _mean_measurement([v["chi2_ndf"] for v in valid.values()]),
            "worst_observables": worst,
            "nn_ratio": entry["nearest_neighbours"]["ratio"],
            "nn_copies": entry["nearest_neighbours"]["copies"],
        }
        candidates.append(
            _sample_info(samples[ci])
            | {
                "summary": summary,
                "observables": entry["observables"],
                "cell_spectrum": entry["cell_spectrum"],
                "response": _response_json(resolution[ci]),
                "resolution_fit": fits[ci],
                "mean_images": entry["mean_images"],
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
        "reference": _sample_info(samples[0]) | {"response": _response_json(resolution[0]), "resolution_fit": fits[0]},
        "floor": floor_json,
        "candidates": candidates,
    }
