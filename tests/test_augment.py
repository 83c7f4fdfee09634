import math

import numpy as np
import pytest
import torch

from calogan.augment import Mirror, check_mirror_symmetry, mirror_conditions, mirror_images, mirror_permutation
from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.geometry import Geometry, Layer, preset


def test_mirror_permutation_of_the_calogan_geometry():
    g = preset("calogan")
    for axis in ("x", "y"):
        p = mirror_permutation(g, axis)
        assert sorted(p.tolist()) == list(range(g.n_cells)) and (p[p] == np.arange(g.n_cells)).all()  # an involution
        xs, ys = g.cell_centres()
        coord, other = (xs, ys) if axis == "x" else (ys, xs)
        assert np.allclose(coord[p], -coord) and np.allclose(other[p], other)  # the mirror image of every centre
    layer0 = np.arange(3 * 96).reshape(3, 96)
    assert mirror_permutation(g, "x")[:288].tolist() == layer0[::-1].reshape(-1).tolist()


def test_polar_layers_have_no_mirror_image():
    g = Geometry("polar", (Layer("r", (4, 3), binning="polar", r_edges=(0.0, 1.0, 2.0, 3.0)),))
    with pytest.raises(ConfigError, match="no mirror image"):
        mirror_permutation(g, "x")


def test_conditions_follow_the_mirror():
    keys = ("e_inc", "x0", "y0", "theta", "phi")
    cond = torch.tensor([[10.0, 3.0, -2.0, 0.2, 0.5]])
    mx, my = mirror_conditions(cond, keys, "x"), mirror_conditions(cond, keys, "y")
    assert mx[0].tolist() == pytest.approx([10.0, -3.0, -2.0, 0.2, math.pi - 0.5])
    assert my[0].tolist() == pytest.approx([10.0, 3.0, 2.0, 0.2, 2 * math.pi - 0.5])
    # the direction's transverse components tan(theta) (cos phi, sin phi) flip sign along the axis
    assert math.cos(mx[0, 4]) == pytest.approx(-math.cos(0.5)) and math.sin(my[0, 4]) == pytest.approx(-math.sin(0.5))


def test_mirror_images_and_the_batch_mirror(toy_geometry):
    rng = np.random.default_rng(0)
    cells = rng.random((3, toy_geometry.n_cells)).astype(np.float32)
    d = ShowerData(toy_geometry, cells, np.array([1.0, 2.0, 3.0]), conditions={"x0": np.array([1.0, 2.0, 3.0])})
    both = mirror_images(d, ("x", "y"))
    p = mirror_permutation(toy_geometry, "x")
    assert len(both) == 12 and np.array_equal(both.cells[3:6], cells[:, p]) and both.conditions["x0"][3:6].tolist() == [-1.0, -2.0, -3.0]
    mirror = Mirror(toy_geometry, ("x",), ("e_inc", "x0"), "cpu")
    torch.manual_seed(1)
    x, c = mirror(torch.from_numpy(cells), torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    flipped = c[:, 1] < 0
    assert flipped.any() and not flipped.all()  # each shower on its own coin
    for i in range(3):
        expect = cells[i, p] if flipped[i] else cells[i]
        assert np.array_equal(x[i].numpy(), expect)


def test_an_off_centre_beam_is_refused(toy_geometry):
    rng = np.random.default_rng(0)
    cells = np.zeros((200, toy_geometry.n_cells), np.float32)
    cells[:, 0] = rng.uniform(1, 2, 200)  # every shower in the first row of the first layer
    with pytest.raises(ConfigError, match="not symmetric along x"):
        check_mirror_symmetry(cells, toy_geometry, "x", ("e_inc",), where="f.h5")
    check_mirror_symmetry(cells, toy_geometry, "x", ("e_inc", "x0"), where="f.h5")  # the impact point moves with it
    sym = np.concatenate([cells, cells[:, mirror_permutation(toy_geometry, "x")]])
    check_mirror_symmetry(sym, toy_geometry, "x", ("e_inc",), where="f.h5")
