import json
import math
import re
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from calogan import evaluation as ev_mod
from calogan import metrics as m
from calogan import report
from calogan.data import ShowerData
from calogan.evaluation import EvaluationConfig, EvaluationError, Sample, evaluate
from calogan.geometry import Geometry, Layer
from calogan.report import ReportError, check_output, format_measurement, render_html, write_report
from conftest import toy_showers

TINY = m.ClassifierConfig(n_runs=2, max_trees=30, tree_patience=5)
QUICK = EvaluationConfig(classifier=TINY, n_boot=5, nn_queries=60, hist_bins=20, energy_bins=2)


def smeared(geometry, n, seed, scale=1.0):
    """Toy showers with a 5 % spread of E_tot / E_inc, optionally scaled."""
    d = toy_showers(geometry, n=n, seed=seed)
    f = np.random.default_rng(seed + 100).normal(1.0, 0.05, n)[:, None] * scale
    return replace(d, cells=d.cells * f)


@pytest.fixture(scope="module")
def evaluation():
    g = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))
    ref = Sample("Reference", smeared(g, 300, 1), "ref.h5")
    same = Sample("Same", smeared(g, 250, 2), "same.h5")
    scaled = Sample("Scaled", smeared(g, 200, 3, scale=1.2), "")
    return evaluate(ref, [same, scaled], QUICK)


# Every key the metrics.json schema documents (calogan.evaluation module docstring).
TOP = {
    "schema",
    "schema_version",
    "calogan_version",
    "created_utc",
    "settings",
    "geometry",
    "energy_bins_gev",
    "observables",
    "warnings",
    "reference",
    "floor",
    "candidates",
    "timings_s",
}
SETTINGS = {
    "seed",
    "threshold_mev",
    "energy_bins",
    "hist_bins",
    "resolution_bins",
    "resolution_bin_edges_gev",
    "n_boot",
    "nn_queries",
    "classifiers",
    "classifier",
    "subsample",
    "allow_condition_mismatch",
}
SAMPLE = {"label", "source", "n_showers", "particles", "conditions", "e_inc_gev"}
CANDIDATE = SAMPLE | {
    "summary",
    "observables",
    "cell_spectrum",
    "response",
    "resolution_fit",
    "condition_trends",
    "mean_images",
    "profiles",
    "nearest_neighbours",
}
SUMMARY = {
    "classifier_low",
    "classifier_high",
    "classifier_low_calochallenge",
    "energy_chi2_sigma",
    "response_deviation",
    "fpd",
    "kpd",
    "energy_chi2",
    "separation_power_mean",
    "chi2_ndf_mean",
    "worst_observables",
    "longitudinal_max_deviation",
    "radial_max_deviation",
    "nn_ratio",
    "nn_copies",
}
CLASSIFIER = {"auc", "auc_raw", "jsd", "best_epoch", "epochs", "n_train", "n_val", "n_test", "seconds"}
CLASSIFIER_RUNS = {"auc_std", "auc_runs", "n_runs", "n_per_class", "model", "features"}
HIST = {"separation_power", "separation_power_null", "chi2_ndf", "wasserstein", "ndf", "n", "undefined_fraction"}


def test_metrics_schema_keys(evaluation):
    mt = json.loads(json.dumps(evaluation.metrics, allow_nan=False))  # valid JSON: NaN became null
    assert set(mt) == TOP
    assert mt["schema"] == "calogan-metrics" and mt["schema_version"] == ev_mod.SCHEMA_VERSION == 2
    assert set(mt["settings"]) == SETTINGS  # every settings key is documented (checked below)
    assert set(mt["geometry"]) == {"name", "n_layers", "n_cells", "layers"}
    assert SAMPLE | {"response", "resolution_fit"} <= set(mt["reference"])
    assert set(mt["floor"]) == {"n_showers_per_class", "classifier_low", "classifier_high", "classifier_low_calochallenge", "fpd", "kpd"}
    assert CLASSIFIER | CLASSIFIER_RUNS == set(mt["floor"]["classifier_low"])
    assert set(mt["settings"]["classifier"]) == set(ev_mod.CLASSIFIER_LEVELS)
    names = [o["name"] for o in mt["observables"]]
    assert len(names) == 23 and all(set(o) == {"name", "label", "unit"} for o in mt["observables"])
    assert [c["label"] for c in mt["candidates"]] == ["Same", "Scaled"]
    for c in mt["candidates"]:
        assert set(c) == CANDIDATE
        assert set(c["summary"]) == SUMMARY
        assert CLASSIFIER | CLASSIFIER_RUNS | {"floor", "excess_sigma", "flagged"} == set(c["summary"]["classifier_high"])
        assert set(c["summary"]["response_deviation"]) == {"chi2", "ndf", "sigma"} and c["condition_trends"] == {}
        assert set(c["observables"]) == set(names)
        for o in c["observables"].values():
            assert set(o["all"]) == HIST and len(o["energy_bins"]) == len(mt["energy_bins_gev"])
        assert set(c["mean_images"]) == {"front", "back"} and set(c["mean_images"]["front"]) == {"relative_l1"}
        assert set(c["nearest_neighbours"]) == {"ratio", "copies", "n_query"}
        assert set(c["response"]) == {"energy_gev", "n", "response", "resolution"}
        assert set(c["resolution_fit"]) == {"a", "b", "chi2_ndf"}
        assert set(c["summary"]["fpd"]) == {"value", "uncertainty"}
        assert set(c["profiles"]) == {"longitudinal", "radial"} and len(c["profiles"]["longitudinal"]["ratio"]) == 2
        assert set(c["profiles"]["radial"]) == {"mean_mev", "ratio", "compared", "max_deviation"}
    assert set(mt["reference"]["profiles"]["radial"]) == {"edges_mm", "mean_mev"}
    # every top-level and summary key is documented in the schema docstring
    for key in TOP | SUMMARY | CANDIDATE | SETTINGS | CLASSIFIER | CLASSIFIER_RUNS | {"flagged", "excess_sigma"}:
        assert f"``{key}``" in ev_mod.__doc__, key


def test_metrics_tell_the_scaled_candidate_apart(evaluation):
    same, scaled = evaluation.metrics["candidates"]
    assert same["observables"]["response"]["all"]["separation_power"]["value"] < 0.1
    assert scaled["observables"]["response"]["all"]["separation_power"]["value"] > 0.9
    chi2_same, chi2_scaled = same["summary"]["energy_chi2"], scaled["summary"]["energy_chi2"]
    assert abs(chi2_same["value"] - 1) < 4 * chi2_same["uncertainty"]
    assert chi2_scaled["value"] > 1 + 5 * chi2_scaled["uncertainty"]
    assert scaled["summary"]["classifier_high"]["auc"]["value"] > 0.8
    assert scaled["summary"]["fpd"]["value"] > same["summary"]["fpd"]["value"]
    assert scaled["mean_images"]["back"]["relative_l1"]["value"] == pytest.approx(0.2, abs=0.05)
    assert abs(same["summary"]["classifier_low"]["excess_sigma"]) < 4


@pytest.fixture(scope="module")
def written(evaluation, tmp_path_factory):
    """The report of ``evaluation`` written once (rendering takes seconds)."""
    return write_report(evaluation, tmp_path_factory.mktemp("written") / "report")


def test_report_is_self_contained(written):
    page = written["report.html"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"(src|href)=[\"'](https?:)?//", page)  # nothing loaded from elsewhere
    assert "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") >= 8
    for heading in (
        "Summary",
        "Mean shower images",
        "Energy response and resolution",
        "Classifier tests",
        "Nearest neighbours",
        "Definitions",
    ):
        assert heading in page
    mt = json.loads(written["metrics.json"].read_text())
    assert mt["timings_s"]["report"] > 0
    assert sorted(p.name for p in written["report.html"].parent.parent.iterdir()) == ["report"]  # no temporary directory left


def test_output_policy(evaluation, tmp_path, monkeypatch):
    from calogan import report

    monkeypatch.setattr(report, "render_html", lambda ev, dpi=80: "<!DOCTYPE html><html></html>")  # the policy, not the drawing
    out = tmp_path / "deep" / "report"
    write_report(evaluation, out)  # missing parents are created
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]
    with pytest.raises(ReportError, match="already holds metrics.json, report.html; pass --force"):
        write_report(evaluation, out)
    (out / "notes.txt").write_text("keep me")
    write_report(evaluation, out, force=True)
    assert (out / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt", "report.html"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_report(evaluation, empty)  # an existing directory without a report is fine
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ReportError, match="not a directory"):
        check_output(afile)


def test_labels_are_escaped(evaluation):
    from calogan import report

    ev = replace(evaluation, samples=[replace(evaluation.samples[0], label="<b>ref</b>"), *evaluation.samples[1:]])
    ev.metrics["reference"] = dict(ev.metrics["reference"], label="<b>ref</b>")
    section = report._samples_section(ev)
    assert "<b>ref</b>" not in section and "&lt;b&gt;ref&lt;/b&gt;" in section


def test_format_measurement():
    assert format_measurement({"value": 0.51234, "uncertainty": 0.0061}) == "0.5123 ± 0.0061"
    assert format_measurement({"value": 12.3456, "uncertainty": 1.2}) == "12.3 ± 1.2"
    assert format_measurement({"value": None, "uncertainty": None}) == "–"
    assert format_measurement({"value": 0.07, "uncertainty": 0.003}, 100) == "7.00 ± 0.30"
    assert format_measurement({"value": 2e-18, "uncertainty": 0.09}) == "0.000 ± 0.090"
    assert format_measurement({"value": 1.0, "uncertainty": 0.0}) == "1.000"


# --- robustness ----------------------------------------------------------------------------


def test_geometry_and_condition_mismatch(toy_geometry):
    ref = smeared(toy_geometry, 200, 1)
    other = Geometry("other", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (25.0, 25.0), 60.0)))
    cand = ShowerData(other, ref.cells, ref.e_inc, ref.pdg)
    with pytest.raises(EvaluationError, match="geometry 'other' .* differs from the reference's 'toy'"):
        evaluate(Sample("ref", ref), [Sample("cand", cand)], QUICK)
    high = replace(ref, e_inc=ref.e_inc * 10)
    with pytest.raises(EvaluationError, match="e_inc distribution differs .*--allow-condition-mismatch"):
        evaluate(Sample("ref", ref), [Sample("high", high)], QUICK)
    photons = replace(ref, pdg=np.full(len(ref), 22, np.int32))
    with pytest.raises(EvaluationError, match=r"particles \['gamma'\] differ from the reference's \['e\+'\]"):
        evaluate(Sample("ref", ref), [Sample("photons", photons)], QUICK)
    moved = replace(ref, conditions={"x0": np.zeros(len(ref))})
    with pytest.raises(EvaluationError, match="conditions"):
        evaluate(Sample("ref", ref), [Sample("moved", moved)], QUICK)
    ok = evaluate(Sample("ref", ref), [Sample("photons", photons)], replace(QUICK, allow_condition_mismatch=True, classifiers=False))
    assert any("particles" in w for w in ok.metrics["warnings"])


def test_all_zero_showers_empty_layers_and_different_n(toy_geometry):
    """Documented results, never a crash: an all-zero candidate is fully separated; NaN observables are counted."""
    ref = smeared(toy_geometry, 300, 4)
    zero = replace(smeared(toy_geometry, 120, 5), cells=np.zeros((120, toy_geometry.n_cells), np.float32))
    no_front = smeared(toy_geometry, 150, 6)
    no_front = replace(no_front, cells=np.where(np.arange(toy_geometry.n_cells) < 8, 0.0, no_front.cells).astype(np.float32))
    ev = evaluate(Sample("ref", ref), [Sample("zero", zero), Sample("no front", no_front)], replace(QUICK, classifiers=False))
    zero_m, front_m = ev.metrics["candidates"]
    assert zero_m["n_showers"] == 120 and front_m["n_showers"] == 150
    assert zero_m["observables"]["e_tot"]["all"]["separation_power"]["value"] == pytest.approx(1.0)
    assert zero_m["observables"]["shower_depth"]["all"] is None  # undefined for every zero shower: no comparison
    assert zero_m["observables"]["centroid_x_back"]["all"] is None
    und = front_m["observables"]["centroid_x_front"]["all"]
    assert und is None
    assert front_m["observables"]["e_front"]["all"]["separation_power"]["value"] == pytest.approx(1.0)
    assert zero_m["summary"]["classifier_low"] is None and ev.metrics["floor"]["classifier_high"] is None
    assert math.isfinite(zero_m["summary"]["fpd"]["value"])
    json.dumps(ev.metrics, allow_nan=False)
    render_html(ev)  # the page renders with empty panels


def test_too_few_showers(toy_geometry):
    with pytest.raises(EvaluationError, match="at least 20 reference showers"):
        evaluate(Sample("ref", smeared(toy_geometry, 10, 1)), [Sample("c", smeared(toy_geometry, 50, 2))], QUICK)
    with pytest.raises(EvaluationError, match="at least 25 showers per class .* --fast"):
        evaluate(Sample("ref", smeared(toy_geometry, 40, 1)), [Sample("c", smeared(toy_geometry, 50, 2))], QUICK)
    with pytest.raises(EvaluationError, match="at least one candidate"):
        evaluate(Sample("ref", smeared(toy_geometry, 50, 1)), [], QUICK)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (optional visual check)")
def test_report_renders_in_headless_chromium(written, tmp_path):
    paths = written
    shot = tmp_path / "shot.png"
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--screenshot={shot}",
        "--window-size=1400,2400",
        paths["report.html"].resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 20_000
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.std() > 0.05  # not a blank page


def test_heavy_tailed_observables_get_a_log_axis(toy_geometry):
    from calogan import plotting

    rng = np.random.default_rng(0)
    tail = np.concatenate([np.zeros(50), rng.lognormal(0.0, 2.0, 950)])  # 99.9 % quantile ~ 500 x the median, 5 % zeros
    assert plotting._heavy_tailed([tail, tail])
    assert not plotting._heavy_tailed([rng.normal(10, 1, 1000), rng.normal(10, 1, 500)])
    assert not plotting._heavy_tailed([tail - 1.0, tail])  # negative values: a linear axis
    fig = plotting.histogram_grid([{"e_front": tail}, {"e_front": tail * 2}], ["ref", "cand"], ["e_front"], toy_geometry)
    main, ratio = fig.axes[:2]
    assert main.get_xscale() == ratio.get_xscale() == "log"
    assert [t.get_text() for t in main.texts] == ["zeros 5.0 %", "zeros 5.0 %"]


def test_condition_trends_and_panels(toy_geometry):
    """Conditional samples get the slopes of centroids against x0 (exact here) and the observables-against-conditions panels."""
    rng = np.random.default_rng(5)

    def sample(n, seed):
        d = smeared(toy_geometry, n, seed)
        f = rng.uniform(0.1, 0.9, n)  # share of the front layer's first row (x = -5 mm)
        cells = d.cells.copy()
        front = cells[:, :8].sum(1)
        cells[:, :4] = (front * f / 4)[:, None]
        cells[:, 4:8] = (front * (1 - f) / 4)[:, None]
        x0 = 5.0 - 10.0 * f  # the front centroid along x, exactly
        return replace(d, cells=cells, conditions={"x0": x0, "theta": rng.uniform(0, 0.3, n)})

    ev = evaluate(Sample("ref", sample(200, 1)), [Sample("cand", sample(150, 2))], replace(QUICK, classifiers=False))
    trend = ev.metrics["candidates"][0]["condition_trends"]["centroid_x_front vs x0"]
    assert trend["slope"]["value"] == pytest.approx(1.0, abs=1e-6) and trend["n"] == 150
    assert set(ev.metrics["reference"]["condition_trends"]) == {
        "centroid_x_front vs x0",
        "centroid_x_back vs x0",
        "width_x_front vs theta",
        "width_x_back vs theta",
        "width_y_front vs theta",
        "width_y_back vs theta",
    }
    assert report._has_trends(ev) and "centroid_x_front vs x0" in report._conditions_section(ev, 40)  # the figure and the slope table


def test_voxel_block_profiles_and_report(tmp_path):
    # 8 layers of 5 x 5 cells: more layers than the image figure draws side by side
    g = Geometry("block", tuple(Layer(f"z{i}", (5, 5), (5.0, 5.0), 3.0, "W", 2.8, "Si", 0.5) for i in range(8)))
    ref = toy_showers(g, n=120, seed=4)
    scaled = replace(ref, cells=ref.cells * np.where(np.arange(g.n_cells) < 25, 1.25, 1.0).astype(np.float32))  # layer z0 x 1.25
    ev = evaluate(Sample("G4", ref), [Sample("Same", ref), Sample("Hot front", scaled)], replace(QUICK, classifiers=False))
    same, hot = ev.metrics["candidates"]
    assert same["summary"]["longitudinal_max_deviation"]["value"] == 0 and same["summary"]["radial_max_deviation"]["value"] == 0
    ratio = [r["value"] for r in hot["profiles"]["longitudinal"]["ratio"]]
    np.testing.assert_allclose(ratio, [1.25] + [1.0] * 7, rtol=1e-6)
    assert hot["summary"]["longitudinal_max_deviation"]["value"] == pytest.approx(0.25, rel=1e-6)
    assert all(hot["profiles"]["longitudinal"]["compared"])  # every layer holds about 1/8 of the energy
    edges = ev.metrics["reference"]["profiles"]["radial"]["edges_mm"]
    assert edges[:3] == [0.0, 2.5, 7.5] and len(hot["profiles"]["radial"]["ratio"]) == len(edges) - 1
    html = render_html(ev)
    assert "Longitudinal and radial profiles" in html and "layers compared" in html and "25.0" in html


def test_a_log_axis_with_one_candidate_value_draws_quietly(toy_geometry):
    # A candidate that leaves layer 2 empty in all showers but one: its ratio panel holds one
    # point, and matplotlib divided by the zero width of a log axis autoscaled to it (the
    # limits are now set before the points are drawn).
    import warnings

    from calogan import plotting

    ref = np.random.default_rng(10).lognormal(-7.0, 1.3, 149)  # 99.9 % quantile > 10 x the median: a log axis
    cand = np.concatenate([np.zeros(148), [0.00377]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plotting.histogram_grid([{"e_front": ref}, {"e_front": cand}], ["ref", "cand"], ["e_front"], toy_geometry)
    main, ratio = fig.axes[:2]
    assert main.get_xscale() == ratio.get_xscale() == "log"
    assert ratio.get_xlim() == main.get_xlim()
