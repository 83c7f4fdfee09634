import json
from dataclasses import replace

import numpy as np
import pytest

from calogan import report
from calogan.cli import main
from calogan.cli.evaluate import parse_energy_bins
from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.geometry import Geometry, Layer
from calogan.io import read_showers, split_file, write_showers
from conftest import geant4_file, toy_showers


@pytest.fixture
def no_drawing(monkeypatch):
    """These tests exercise the command, not the figures (tests/test_report.py draws)."""
    monkeypatch.setattr(report, "render_html", lambda ev, dpi=80: "<!DOCTYPE html><html></html>")


def _toy_file(path, geometry, n, seed, scale=1.0):
    d = toy_showers(geometry, n=n, seed=seed)
    f = np.random.default_rng(seed).normal(1.0, 0.05, n)[:, None] * scale
    return write_showers(path, replace(d, cells=d.cells * f))


def test_evaluate_fast_end_to_end(tmp_path, toy_geometry, capsys, no_drawing):
    ref = _toy_file(tmp_path / "ref.h5", toy_geometry, 200, 1)
    cand = _toy_file(tmp_path / "cand.h5", toy_geometry, 150, 2)
    far = _toy_file(tmp_path / "far.h5", toy_geometry, 120, 3, scale=1.3)
    out = tmp_path / "out"
    argv = [
        "evaluate",
        str(ref),
        str(cand),
        str(far),
        "--labels",
        "G4, GAN ,Far",
        "-o",
        str(out),
        "--fast",
        "--quiet",
        "--energy-bins",
        "2",
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "GAN:" in stdout and "AUC low-level       skipped (--fast)" in stdout and f"wrote {out / 'metrics.json'}" in stdout
    mt = json.loads((out / "metrics.json").read_text())
    assert [c["label"] for c in mt["candidates"]] == ["GAN", "Far"]
    assert mt["reference"]["source"] == str(ref) and mt["candidates"][1]["n_showers"] == 120
    assert mt["settings"]["classifiers"] is False and mt["settings"]["energy_bins"] == 2
    assert len(mt["energy_bins_gev"]) == 2 and "read" in mt["timings_s"]
    gan, far_m = mt["candidates"]
    assert far_m["observables"]["response"]["all"]["separation_power"]["value"] > 0.9
    assert gan["observables"]["response"]["all"]["separation_power"]["value"] < 0.2
    # the same command again is refused before any work; --force overwrites
    assert main(argv) == 2
    assert "already holds metrics.json, report.html; pass --force" in capsys.readouterr().err
    assert main([*argv, "--force", "--max-showers", "50", "--labels", "a,b,c"]) == 0
    mt = json.loads((out / "metrics.json").read_text())
    assert mt["reference"]["n_showers"] == 50 and mt["candidates"][0]["n_showers"] == 50


def test_default_labels_are_file_names(tmp_path, toy_geometry, no_drawing):
    ref = _toy_file(tmp_path / "geant4.h5", toy_geometry, 60, 1)
    cand = _toy_file(tmp_path / "gan.h5", toy_geometry, 60, 2)
    assert main(["evaluate", str(ref), str(cand), "-o", str(tmp_path / "o"), "--fast", "--quiet"]) == 0
    mt = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert mt["reference"]["label"] == "geant4" and mt["candidates"][0]["label"] == "gan"


def test_errors_are_one_line(tmp_path, toy_geometry, capsys, no_drawing):
    ref = _toy_file(tmp_path / "ref.h5", toy_geometry, 60, 1)
    cand = _toy_file(tmp_path / "cand.h5", toy_geometry, 60, 2)
    out = str(tmp_path / "o")
    cases = [
        (["--labels", "a,b,c"], "--labels needs 2 non-empty comma-separated labels (reference first), got 3"),
        (["--labels", "a,a"], "labels must differ"),
        (["--energy-bins", "10,5"], "--energy-bins: edges must be non-negative and increasing"),
        (["--energy-bins", "x"], "--energy-bins must be 'auto'"),
        (["--max-showers", "5"], "--max-showers must be >= 20"),
        (["--threshold", "-1"], "--threshold must be >= 0 MeV"),
    ]
    for extra, message in cases:
        assert main(["evaluate", str(ref), str(cand), "-o", out, "--fast", "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("calogan evaluate: error: ") and message in err and "\n" not in err, err
    assert main(["evaluate", str(ref), str(tmp_path / "missing.h5"), "-o", out, "--fast", "--quiet"]) == 2
    assert "missing.h5: no such file" in capsys.readouterr().err


def test_geometry_mismatch_between_files(tmp_path, toy_geometry, capsys, no_drawing):
    ref = _toy_file(tmp_path / "ref.h5", toy_geometry, 60, 1)
    other = Geometry("other", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (30.0, 30.0), 60.0)))
    d = toy_showers(toy_geometry, n=60, seed=2)
    cand = write_showers(tmp_path / "cand.h5", ShowerData(other, d.cells, d.e_inc, d.pdg))
    assert main(["evaluate", str(ref), str(cand), "-o", str(tmp_path / "o"), "--fast", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cand: geometry 'other' (2 layers, 17 cells) differs from the reference's 'toy' (2 layers, 17 cells)" in err
    assert not (tmp_path / "o").exists()


def test_parse_energy_bins():
    assert parse_energy_bins("auto") == "auto"
    assert parse_energy_bins("4") == 4
    assert parse_energy_bins("1, 10,100") == (1.0, 10.0, 100.0)
    with pytest.raises(ConfigError, match="positive integer"):
        parse_energy_bins("2.5")


@pytest.mark.slow
def test_geant4_split_at_floor_and_distortion_detected(tmp_path, capsys, no_drawing):
    """Halves of the Geant4 e+ file give AUCs at the floor; cells x 1.05 is seen."""
    src = geant4_file("g4_eplus_active.h5")
    ref, half = tmp_path / "ref.h5", tmp_path / "half.h5"
    split_file(src, [ref, half], [0.5, 0.5], seed=3)
    d = read_showers(half)
    scaled = write_showers(tmp_path / "x105.h5", replace(d, cells=d.cells * 1.05), attrs={"convention": "active"})
    out = tmp_path / "report"
    argv = [
        "evaluate",
        str(ref),
        str(half),
        str(scaled),
        "--labels",
        "Geant4,half,x1.05",
        "-o",
        str(out),
        "--quiet",
        "--classifier-runs",
        "1",
    ]
    assert main(argv) == 0
    mt = json.loads((out / "metrics.json").read_text())
    same, distorted = (c["summary"] for c in mt["candidates"])
    for level in ("classifier_low", "classifier_high"):
        assert abs(same[level]["excess_sigma"]) < 3, (level, same[level])
        assert abs(mt["floor"][level]["auc"]["value"] - 0.5) < 3 * mt["floor"][level]["auc"]["uncertainty"]
    assert distorted["classifier_high"]["auc"]["value"] > 0.9 and distorted["classifier_high"]["excess_sigma"] > 5
    assert abs(same["energy_chi2"]["value"] - 1) < 4 * same["energy_chi2"]["uncertainty"]
    assert distorted["energy_chi2"]["value"] > 5
    assert distorted["worst_observables"][0] in ("response", "e_tot")
    assert same["fpd"]["value"] < mt["floor"]["fpd"]["value"] + 5 * max(mt["floor"]["fpd"]["uncertainty"], same["fpd"]["uncertainty"])
    assert distorted["fpd"]["value"] > 1.0
    print(capsys.readouterr().out)
