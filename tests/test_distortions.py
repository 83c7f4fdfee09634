from dataclasses import replace

import numpy as np
import pytest

from calogan import distortions as dist
from calogan import observables as obs
from calogan.data import ShowerData
from calogan.distortions import DistortionError
from calogan.geometry import Geometry, Layer
from conftest import toy_showers


@pytest.fixture
def grid() -> Geometry:
    """A front layer of 2 x 8 strips and a 6 x 6 middle layer of 40 mm cells."""
    return Geometry("grid", (Layer("front", (2, 8), (40.0, 5.0), 30.0), Layer("middle", (6, 6), (40.0, 40.0), 300.0)))


def test_scale_threshold_drop_and_mirror_exact(toy_geometry):
    d = toy_showers(toy_geometry, n=50, seed=1)
    np.testing.assert_allclose(dist.scale_energy(d, 1.05).cells, d.cells * np.float32(1.05))
    z = dist.zero_below(d, 200.0)
    assert np.all((z.cells == 0) | (z.cells > 200.0)) and np.all(z.cells[d.cells > 200] == d.cells[d.cells > 200])
    dropped = dist.drop_hits(d, 0.1, np.random.default_rng(0))
    lost = (dropped.cells == 0) & (d.cells > 0)
    assert 0.07 < lost.mean() < 0.13 and np.all((dropped.cells == d.cells) | lost)
    m = dist.mirror_layer(d, "back", "x")
    back = d.layers()[1]
    np.testing.assert_array_equal(m.layers()[1], back[:, ::-1, :])
    np.testing.assert_array_equal(m.layers()[0], d.layers()[0])
    np.testing.assert_array_equal(dist.mirror_layer(m, 1, "x").cells, d.cells)  # twice is the identity
    np.testing.assert_array_equal(dist.mirror_layer(d, 0, "y").layers()[0], d.layers()[0][:, :, ::-1])
    for bad in (lambda: dist.scale_energy(d, 0), lambda: dist.mirror_layer(d, "nope"), lambda: dist.drop_hits(d, 2, None)):
        with pytest.raises(DistortionError):
            bad()


def test_shift_depth_keeps_the_total_and_moves_energy_back(toy_geometry):
    d = toy_showers(toy_geometry, n=40, seed=2)
    s = dist.shift_depth(d, 0.3)
    np.testing.assert_allclose(s.cells.sum(1), d.cells.sum(1), rtol=1e-5)
    f0, f1 = obs.energy_fractions(d.cells, toy_geometry), obs.energy_fractions(s.cells, toy_geometry)
    # layer fractions f_i -> f_i e^(0.3 i) / sum_j f_j e^(0.3 j)
    expected = f0 * np.exp(0.3 * np.arange(2)) / (f0 * np.exp(0.3 * np.arange(2))).sum(1, keepdims=True)
    np.testing.assert_allclose(f1, expected, rtol=1e-5)
    assert np.all(f1[:, 1] > f0[:, 1])


def test_stretch_matrix_conserves_and_moves_outward():
    centres = np.arange(6) * 40.0 - 100.0  # -100 ... 100 mm
    m = dist._stretch_matrix(centres, np.array([-20.0]), 1.1)[0]
    np.testing.assert_allclose(m.sum(axis=0), 1.0)  # every cell's energy lands somewhere
    # the cell at +20 mm (index 3) moves to -20 + 1.1 * 40 = 24 mm: 10 % of it to the next cell out
    np.testing.assert_allclose(m[:, 3], [0, 0, 0, 0.9, 0.1, 0])
    np.testing.assert_allclose(m[:, 2], [0, 0, 1, 0, 0, 0])  # the cell at the centroid does not move


def test_widen_lateral_keeps_energy_and_hits_and_widens(grid):
    rng = np.random.default_rng(3)
    n = 200
    x = rng.normal(0, 30, (n, 400))  # deposits scattered about the axis
    y = rng.normal(0, 30, (n, 400))
    cells = np.zeros((n, grid.n_cells), np.float32)
    mid = grid.layer_slice(1)
    ix = np.clip(((x + 120) // 40).astype(int), 0, 5)
    iy = np.clip(((y + 120) // 40).astype(int), 0, 5)
    for s in range(n):
        np.add.at(cells[s, mid], ix[s] * 6 + iy[s], 1.0)
    d = ShowerData(grid, cells, np.full(n, 10.0))
    w = dist.widen_lateral(d, 1.2, layers=(1,))
    np.testing.assert_allclose(w.cells.sum(1), d.cells.sum(1), rtol=1e-5)
    assert np.array_equal(w.cells > 0, d.cells > 0)  # the same hit cells
    before, after = obs.width(d.cells, grid, "x")[:, 1], obs.width(w.cells, grid, "x")[:, 1]
    assert np.mean(after) > 1.05 * np.mean(before)
    s = dist.stretch_for_width(d, 1.1)
    ratio = np.nanmean(obs.width(dist.widen_lateral(d, s, layers=(1,)).cells, grid, "y")[:, 1]) / np.nanmean(
        obs.width(d.cells, grid, "y")[:, 1]
    )
    assert ratio == pytest.approx(1.1, abs=0.01)


def test_smear_sampling_keeps_the_mean_and_adds_variance(toy_geometry):
    d = toy_showers(toy_geometry, n=4000, seed=4)
    c = 2.0
    s = dist.smear_sampling(d, 1.2, c, np.random.default_rng(5))
    e0, e1 = d.cells.sum(1).astype(float), s.cells.sum(1).astype(float)
    assert np.mean(e1 / e0) == pytest.approx(1.0, abs=0.002)
    # added variance (1.2^2 - 1) c E_tot per shower
    assert np.mean((e1 - e0) ** 2 / e0) == pytest.approx(0.44 * c, rel=0.1)
    assert np.all(s.cells >= 0) and np.all(s.cells[d.cells == 0] == 0)
    # sampling_constant recovers c of showers whose only fluctuation is sampling
    flat = replace(d, cells=np.tile(d.cells[:1], (4000, 1)), e_inc=np.full(4000, d.e_inc[0]))
    noisy = dist.smear_sampling(flat, np.sqrt(2.0), 1.0, np.random.default_rng(6))  # variance 1 MeV x E_tot
    assert dist.sampling_constant(noisy) == pytest.approx(1.0, rel=0.15)


def test_default_suite_names(toy_geometry):
    d = toy_showers(toy_geometry, n=200, seed=7)
    d = replace(d, cells=d.cells * np.random.default_rng(8).normal(1, 0.05, (200, 1)).astype(np.float32))
    names = [x.name for x in dist.default_suite(d)]
    assert names[0] == "self-copy" and "scale x1.05" in names and not any("mirrored" in n for n in names)
    with_x0 = replace(d, conditions={"x0": np.zeros(200)})
    assert dist.default_suite(with_x0)[-1].name == "back mirrored"
