import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.special import gammainc

from calogan.cli import main
from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.geometry import Geometry, Layer, preset
from calogan.io import read_showers
from calogan.simulate import default_params, media, simulate
from calogan.simulate.calibrate import calibrate, compare, format_table, layer_fractions_expected, resolution, shower_observables, summary
from calogan.simulate.params import Longitudinal
from conftest import geant4_file


def test_resolution_is_half_the_central_68_percent_over_the_mean():
    # evenly spaced values: every percentile interpolates linearly, so the answer is exact
    ratio = np.linspace(0.9, 1.1, 1001)
    assert resolution(ratio) == pytest.approx((0.84135 - 0.15865) * 0.2 / 2)
    assert resolution(np.full(10, 0.5)) == 0.0


def test_shower_observables_exact_values():
    g = Geometry("two", (Layer("a", (1, 2), (10.0, 10.0), 10.0), Layer("b", (2, 2), (20.0, 20.0), 10.0)))
    # layer b cell centres: x in (-10, 10) by row, y in (-10, 10) by column
    cells = np.array([[100.0, 100.0, 600.0, 0.0, 0.0, 200.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    obs = shower_observables(ShowerData(g, cells, np.array([1.0, 1.0])))
    np.testing.assert_allclose(obs["response"], [1.0, 0.0])
    np.testing.assert_allclose(obs["fractions"][0], [0.2, 0.8])
    assert obs["depth"][0] == pytest.approx(0.8) and np.isnan(obs["depth"][1])
    # layer b: 600 MeV at (-10, -10), 200 MeV at (10, 10): mean -5, RMS sqrt(100 - 25)
    assert obs["width_x"][0] == pytest.approx(np.sqrt(75.0)) and obs["width_y"][0] == pytest.approx(np.sqrt(75.0))
    assert np.isnan(obs["width_x"][1])


def test_compare_passes_identical_samples_and_flags_a_shifted_response():
    d = simulate("calogan", "e+", np.linspace(1, 40, 200), seed=0)
    rows = compare(d, d, bin_width=20)
    assert len({r.bin for r in rows}) == 2 and all(r.passed and r.deviation == 0 for r in rows)
    shifted = ShowerData(d.geometry, d.cells * 1.03, d.e_inc, d.pdg)
    rows = compare(d, shifted, bin_width=20)
    response = [r for r in rows if r.observable == "response"]
    assert all(not r.passed and r.deviation == pytest.approx(0.03, abs=1e-6) for r in response)
    assert all(r.passed for r in rows if r.observable.startswith("fraction"))  # a scale leaves fractions
    s = summary(rows)
    assert s["per_observable"]["response"] == "0/2" and s["passed"] == s["total"] - 2
    assert "FAIL" in format_table(rows) and "passed" in format_table(rows).splitlines()[-1]
    with pytest.raises(ConfigError, match="bin width"):
        compare(d, d, bin_width=0)


def test_expected_layer_fractions_are_incomplete_gamma_integrals():
    m = media(preset("calogan"))
    e = np.array([10.0, 50.0])
    normals = np.zeros((2, 2))
    lp = Longitudinal()
    frac = layer_fractions_expected(e, normals, np.zeros(2), np.ones(2), m, lp)
    from calogan.simulate.em import profiles

    t_max, alpha = profiles(e, normals, m, lp)
    beta = (alpha - 1) / t_max
    np.testing.assert_allclose(frac[:, 0], gammainc(alpha, beta * m.x0_boundaries[1]))
    assert (frac.sum(axis=1) <= 1).all() and (frac.sum(axis=1) > 0.99).all()
    # tilting by 60 deg doubles every path: the first layer holds the first 2 x 5.8 X0
    tilted = layer_fractions_expected(e, normals, np.zeros(2), np.full(2, 0.5), m, lp)
    np.testing.assert_allclose(tilted[:, 0], gammainc(alpha, beta * 2 * m.x0_boundaries[1]))
    # the active convention: the share integrates to ehat f_mip over a contained shower
    act = layer_fractions_expected(e, normals, np.zeros(2), np.ones(2), m, lp, default_params("e+").em.sampling)
    np.testing.assert_allclose(act.sum(axis=1), default_params("e+").em.sampling.ehat * m.sf_mip.mean(), rtol=0.03)


def _first(path, n):
    return read_showers(path, stop=n)


@pytest.mark.parametrize("particle", ["eplus", "gamma"])
@pytest.mark.parametrize("convention", ["total", "active"])
def test_shipped_parameters_reproduce_geant4(particle, convention):
    """Calibration quality on the first 600 Geant4 showers, in two 50 GeV bins.

    Response, fractions, depth and widths must meet the issue's targets. The resolution of
    ~300 showers per bin is itself uncertain by ~6 % (and the simulation's by ~5 %), so it is
    held to 30 % here; the full-statistics table (calogan calibrate --check) holds it to 20 %.
    """
    ref = _first(geant4_file(f"g4_{particle}_{convention}.h5"), 600)
    name = "e+" if particle == "eplus" else "gamma"
    sim = simulate(ref.geometry, name, np.tile(ref.e_inc, 2), seed=11, mode=convention)
    rows = compare(ref, sim, bin_width=50)
    assert len(rows) == 16
    for r in rows:
        tolerance = 0.30 if r.observable == "resolution" else r.tolerance
        assert abs(r.deviation) <= tolerance, format_table(rows)


def test_pions_are_reported_as_they_are():
    # every pion of the file: their response spreads by ~80 %, so the mean of 200 pions in a
    # bin is itself uncertain by ~7 %, and 400 of them leave too little margin to judge a model
    ref = _first(geant4_file("g4_piplus_total.h5"), 2000)
    sim = simulate(ref.geometry, "pi+", np.tile(ref.e_inc, 2), seed=3)
    rows = compare(ref, sim, bin_width=50)
    by = {(r.bin, r.observable): r for r in rows}
    # the approximate model gets the punch-through-dominated response and layer use roughly right
    for b in ("0-50", "50-100"):
        assert abs(by[(b, "response")].deviation) < 0.25
        assert abs(by[(b, "fraction_1")].deviation) < 0.1


def test_longitudinal_stage_recovers_the_layer_fractions():
    ref = _first(geant4_file("g4_eplus_total.h5"), 400)
    start = default_params("e+")
    wrong = replace(start, em=replace(start.em, longitudinal=Longitudinal()))  # plain GFlash
    lines = []
    fitted, names = calibrate(ref, particle="e+", convention="total", start=wrong, stages=("longitudinal",), log=lines.append)
    assert names == ["em.longitudinal"] and "longitudinal" in lines[-1]
    sim = simulate(ref.geometry, "e+", np.tile(ref.e_inc, 2), seed=2, params=fitted)
    rows = [r for r in compare(ref, sim, bin_width=50) if r.observable.startswith("fraction")]
    assert all(abs(r.deviation) < 0.015 for r in rows), format_table(rows)


def test_calibrate_rejects_bad_input(tmp_path):
    ref = simulate("calogan", "e+", np.linspace(1, 100, 100), seed=0)
    with pytest.raises(ConfigError, match="convention"):
        calibrate(ref, particle="e+", convention="visible", start=default_params("e+"))
    with pytest.raises(ConfigError, match="same showers"):
        calibrate(ref, particle="e+", convention="total", start=default_params("e+"), pair=ref.select(slice(0, 50)))
    with pytest.raises(ConfigError, match="unknown fit stage"):
        calibrate(ref, particle="e+", convention="total", start=default_params("e+"), stages=("mip",))


def test_cli_check_prints_the_table(capsys):
    path = geant4_file("g4_gamma_total.h5")
    assert main(["calibrate", str(path), "--check", "--limit", "300", "--bin-width", "50"]) == 0
    out = capsys.readouterr().out
    assert "gamma, total convention" in out and "response" in out and "width_y" in out and "passed" in out


def test_cli_fit_writes_reproducible_parameters(tmp_path, capsys):
    path = geant4_file("g4_eplus_total.h5")
    out = tmp_path / "p.json"
    argv = ["calibrate", str(path), "-o", str(out), "--stages", "longitudinal", "--limit", "300", "--bin-width", "50", "--oversample", "1"]
    assert main(argv) == 0
    d = json.loads(out.read_text())
    prov = d["provenance"]
    assert prov["command"].startswith("calogan calibrate g4_eplus_total.h5 -o p.json --stages longitudinal --limit 300")
    assert prov["reference"][0]["file"] == "g4_eplus_total.h5" and len(prov["reference"][0]["sha256"]) == 64
    assert prov["fitted"] == ["em.longitudinal"] and d["validation"]["total"]["total"] > 0
    assert main(argv) == 2 and "pass --force" in capsys.readouterr().err
    assert main(["calibrate", str(path)]) == 2
    assert "-o/--output is required" in capsys.readouterr().err
    assert main(["calibrate", str(path), "--check", "--convention", "active"]) == 2
    assert "the file says convention 'total'" in capsys.readouterr().err
