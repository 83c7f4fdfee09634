import math
import warnings

import numpy as np
import pytest

from calogan import observables as ob
from calogan.geometry import Geometry, Layer, preset


def _toy_cells(geometry):
    """Three hand-made showers on the toy geometry (front 2x4 cells of 10x5 mm, back 3x3 of 20x20 mm).

    0: front cells (0,0)=10 and (1,3)=30 MeV, back centre 60 MeV;
    1: all zero;
    2: front empty, back 1 MeV in every cell.
    """
    front = np.zeros((3, 2, 4))
    back = np.zeros((3, 3, 3))
    front[0, 0, 0], front[0, 1, 3], back[0, 1, 1] = 10.0, 30.0, 60.0
    back[2] = 1.0
    return geometry.flatten([front, back])


def test_hand_computed_observables(toy_geometry):
    cells = _toy_cells(toy_geometry)
    e_inc = np.array([0.2, 1.0, 0.009])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division or sqrt warning, even for the empty shower and layer
        o = ob.high_level(cells, toy_geometry, e_inc)
    assert list(o) == ob.observable_names(toy_geometry)
    assert len(o) == 5 + 9 * 2
    # shower 0
    assert o["e_tot"][0] == 100.0 and o["response"][0] == pytest.approx(0.5)
    assert o["e_front"][0] == 40.0 and o["e_back"][0] == 60.0
    assert o["frac_front"][0] == pytest.approx(0.4) and o["frac_back"][0] == pytest.approx(0.6)
    assert o["shower_depth"][0] == pytest.approx(0.6)
    assert o["depth_width"][0] == pytest.approx(math.sqrt(0.24))
    assert o["centroid_x_front"][0] == pytest.approx(2.5)  # (10 * -5 + 30 * 5) / 40 mm
    assert o["centroid_y_front"][0] == pytest.approx(3.75)  # (10 * -7.5 + 30 * 7.5) / 40 mm
    assert o["width_x_front"][0] == pytest.approx(math.sqrt(25 - 2.5**2))
    assert o["width_y_front"][0] == pytest.approx(math.sqrt(56.25 - 3.75**2))
    assert o["centroid_x_back"][0] == 0.0 and o["width_y_back"][0] == 0.0
    assert o["sparsity_front"][0] == 0.25 and o["sparsity_back"][0] == pytest.approx(1 / 9)
    assert o["e_ratio_front"][0] == pytest.approx(0.5) and o["e_ratio_back"][0] == 1.0
    assert o["e_max_front"][0] == 30.0 and o["e_max_back"][0] == 60.0
    assert o["n_hit"][0] == 3
    # shower 1: all zero -> energies, counts, sparsity 0; ratios NaN
    for name in ("e_tot", "response", "e_front", "e_back", "sparsity_front", "e_max_back", "n_hit"):
        assert o[name][1] == 0.0, name
    for name in ("frac_front", "shower_depth", "depth_width", "centroid_x_front", "width_y_back", "e_ratio_back"):
        assert np.isnan(o[name][1]), name
    # shower 2: empty front layer, uniform back layer
    assert np.isnan(o["centroid_x_front"][2]) and np.isnan(o["width_x_front"][2]) and np.isnan(o["e_ratio_front"][2])
    assert o["frac_front"][2] == 0.0 and o["shower_depth"][2] == 1.0 and o["depth_width"][2] == 0.0
    assert o["centroid_x_back"][2] == pytest.approx(0.0, abs=1e-12)
    assert o["width_x_back"][2] == pytest.approx(math.sqrt(800 / 3))
    assert o["e_ratio_back"][2] == 0.0 and o["sparsity_back"][2] == 1.0
    assert o["response"][2] == pytest.approx(1.0)


def test_single_functions_agree_with_high_level(toy_geometry):
    cells = _toy_cells(toy_geometry)
    o = ob.high_level(cells, toy_geometry, np.ones(3))
    np.testing.assert_array_equal(ob.layer_energies(cells, toy_geometry)[:, 1], o["e_back"])
    np.testing.assert_array_equal(ob.centroid(cells, toy_geometry, "y")[:, 0], o["centroid_y_front"])
    np.testing.assert_array_equal(ob.width(cells, toy_geometry, "x")[:, 1], o["width_x_back"])
    np.testing.assert_array_equal(ob.shower_depth(cells, toy_geometry), o["shower_depth"])
    np.testing.assert_array_equal(ob.depth_width(cells, toy_geometry), o["depth_width"])
    np.testing.assert_array_equal(ob.energy_fractions(cells, toy_geometry)[:, 0], o["frac_front"])
    assert sorted(ob.cell_spectrum(cells).tolist()) == [1.0] * 9 + [10.0, 30.0, 60.0]


def test_threshold_zeroes_cells_everywhere(toy_geometry):
    cells = _toy_cells(toy_geometry)
    o = ob.high_level(cells, toy_geometry, np.ones(3), threshold=15.0)
    assert o["e_front"][0] == 30.0 and o["n_hit"][0] == 2 and o["sparsity_front"][0] == 1 / 8
    assert o["centroid_x_front"][0] == pytest.approx(5.0) and o["e_ratio_front"][0] == 1.0
    assert o["e_tot"][2] == 0.0  # 1 MeV cells are below threshold
    assert ob.sparsity(cells, toy_geometry, 15.0)[0, 0] == 1 / 8
    assert ob.cell_spectrum(cells, 15.0).tolist() == [30.0, 60.0]
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        ob.high_level(cells, toy_geometry, np.ones(3), threshold=-1.0)


def test_polar_layers_use_cell_centres():
    g = Geometry(
        "polar",
        (
            Layer("ring", (1, 2), binning="polar", r_edges=(0.0, 5.0, 10.0)),
            Layer("wedges", (4, 2), binning="polar", r_edges=(0.0, 10.0, 30.0)),
        ),
    )
    cells = np.zeros((1, g.n_cells))
    cells[0, 0] = 5.0  # ring layer, inner bin: no azimuthal segmentation -> centroid on the axis
    wedge = np.zeros((4, 2))
    wedge[2, 1] = 8.0  # alpha bin 2 of 4: centre at alpha = pi/4, radius 20 mm
    cells[0, 2:] = wedge.ravel()
    o = ob.high_level(cells, g, np.ones(1))
    assert o["centroid_x_ring"][0] == 0.0 and o["centroid_y_ring"][0] == 0.0
    assert o["centroid_x_wedges"][0] == pytest.approx(20 * math.cos(math.pi / 4))
    assert o["centroid_y_wedges"][0] == pytest.approx(20 * math.sin(math.pi / 4))
    assert o["e_ratio_wedges"][0] == 1.0


def test_one_cell_layer_and_labels():
    g = Geometry("tiny", (Layer("a", (1, 1), (10.0, 10.0), 5.0), Layer("b", (2, 2), (10.0, 10.0), 5.0)))
    cells = np.array([[3.0, 1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    r = ob.e_ratio(cells, g)
    assert r[0, 0] == 1.0 and r[0, 1] == 0.0 and np.isnan(r[1]).all()
    assert ob.observable_label("width_x_b", g) == "width x, b [mm]"
    assert ob.observable_label("response", g) == "E_tot / E_inc"
    assert ob.observable_label("e_max_a", g) == "hottest cell, a [MeV]"
    with pytest.raises(KeyError, match="unknown observable"):
        ob.observable_label("e_c", g)


def test_shape_and_energy_errors(toy_geometry):
    with pytest.raises(ValueError, match=r"shape \(N, 17\)"):
        ob.high_level(np.zeros((2, 5)), toy_geometry, np.ones(2))
    with pytest.raises(ValueError, match="2 entries for 3 showers"):
        ob.response(np.zeros((3, 17)), np.ones(2))
    with pytest.raises(ValueError, match="> 0 GeV"):
        ob.response(np.zeros((1, 17)), np.zeros(1))
    with pytest.raises(ValueError, match="axis must be"):
        ob.centroid(np.zeros((1, 17)), toy_geometry, "z")


def test_calogan_geometry_vectorised():
    g = preset("calogan")
    rng = np.random.default_rng(0)
    cells = rng.exponential(1.0, (50, g.n_cells)) * (rng.random((50, g.n_cells)) < 0.3)
    cells[3] = 0.0
    o = ob.high_level(cells, g, np.full(50, 10.0))
    assert all(v.shape == (50,) for v in o.values())
    np.testing.assert_allclose(o["e_layer_0"] + o["e_layer_1"] + o["e_layer_2"], o["e_tot"])
    assert np.isnan(o["shower_depth"][3]) and o["n_hit"][3] == 0
    assert np.isfinite(np.delete(o["shower_depth"], 3)).all()


def test_layer_hits_core_fraction_and_rings_exact(toy_geometry):
    cells = _toy_cells(toy_geometry)
    np.testing.assert_array_equal(ob.layer_hits(cells, toy_geometry), [[2, 1], [0, 0], [0, 9]])
    np.testing.assert_array_equal(ob.layer_hits(cells, toy_geometry, threshold=10.0), [[1, 1], [0, 0], [0, 0]])
    # the 4 hottest of the front 8 cells hold all of it; the back layer of 9 cells: 4 of 9 uniform cells
    core = ob.core_fraction(cells, toy_geometry, k=4)
    assert core[0].tolist() == [1.0, 1.0] and np.isnan(core[1]).all()
    assert np.isnan(core[2, 0]) and core[2, 1] == pytest.approx(4 / 9)
    assert ob.core_fraction(cells, toy_geometry, k=1)[0].tolist() == [0.75, 1.0]
    # back cells of 20 mm: the centre at r = 0, four edge cells at 20 mm, four corners at 28.3 mm
    edges = [0.0, 10.0, 25.0, 30.0]
    np.testing.assert_array_equal(ob.ring_energy(cells, toy_geometry, 1, edges), [[60, 0, 0], [0, 0, 0], [1, 4, 4]])
    np.testing.assert_array_equal(ob.ring_hits(cells, toy_geometry, 1, edges), [[1, 0, 0], [0, 0, 0], [1, 4, 4]])
    # front cells (x = +-5, y = +-2.5, +-7.5): r = 5.6 and 9.0 mm; a ring ending before the far cells leaves them out
    np.testing.assert_array_equal(ob.ring_energy(cells, toy_geometry, 0, [0.0, 6.0]), [[0], [0], [0]])
    np.testing.assert_array_equal(ob.ring_energy(cells, toy_geometry, 0, [6.0, 10.0]), [[40], [0], [0]])
    with pytest.raises(ValueError, match="increasing"):
        ob.ring_energy(cells, toy_geometry, 0, [5.0, 1.0])
    with pytest.raises(ValueError, match="k must be"):
        ob.core_fraction(cells, toy_geometry, k=0)


def test_radial_profile_rings_on_cartesian_and_polar_layers():
    g = Geometry("block", (Layer("a", (3, 3), (10.0, 10.0), 5.0), Layer("b", (3, 3), (10.0, 10.0), 5.0)))
    np.testing.assert_allclose(ob.radial_bin_edges(g), [0.0, 5.0, 15.0])  # rings at 0 and 10 mm; the corners (14.1 mm) in the last
    cells = np.zeros((2, 18))
    cells[0, 4] = 3.0  # centre of layer a
    cells[0, 9 + 1] = 2.0  # edge cell of layer b, 10 mm out
    cells[1, [0, 2, 6, 8]] = 1.0  # the four corners of layer a
    np.testing.assert_allclose(ob.radial_profile(cells, g), [[3.0, 2.0], [0.0, 4.0]])
    polar = Geometry(
        "p",
        (Layer("l0", (4, 2), binning="polar", r_edges=(0.0, 5.0, 20.0)), Layer("l1", (1, 2), binning="polar", r_edges=(0.0, 5.0, 10.0))),
    )
    np.testing.assert_allclose(ob.radial_bin_edges(polar), [0.0, 5.0, 10.0, 20.0])
    cells = np.zeros((1, polar.n_cells))
    cells[0, [1, 8, 9]] = [1.0, 2.0, 4.0]  # l0: alpha 0, r 5-20 (middle 12.5); l1: r 0-5 and 5-10 (one alpha bin)
    np.testing.assert_allclose(ob.radial_profile(cells, polar), [[2.0, 4.0, 1.0]])
