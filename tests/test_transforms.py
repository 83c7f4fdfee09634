import numpy as np
import pytest
import torch

from calogan.errors import ConfigError
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

CONFIGS = [
    TransformConfig(),
    TransformConfig(energy="fraction", scale="none"),
    TransformConfig(energy="gev", scale="max"),
    TransformConfig(energy="fraction", log=True, scale="standard"),
    TransformConfig(energy="gev", log=True, eps=1e-4, scale="none"),
    TransformConfig(energy="fraction", log=False, scale="standard"),
]


@pytest.fixture
def sparse_data(toy_geometry):
    data = toy_showers(toy_geometry, n=40, seed=3)
    cells = data.cells.copy()
    cells[::3, ::2] = 0.0  # zeros, as real showers have
    return cells, data.e_inc


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.energy}-log{int(c.log)}-{c.scale}")
def test_inverse_undoes_forward_in_numpy_and_torch(config, sparse_data):
    cells, e_inc = sparse_data
    t = ShowerTransform.fit(config, cells, e_inc)
    x = t.forward(cells, e_inc)
    assert x.dtype == np.float32 and x.shape == cells.shape
    # exact up to the float32 rounding of model space: well below a keV
    np.testing.assert_allclose(t.inverse(x, e_inc), cells, rtol=1e-4, atol=1e-4)
    xt = t.forward(torch.from_numpy(cells), torch.from_numpy(e_inc))
    np.testing.assert_allclose(xt.numpy(), x, rtol=1e-5, atol=1e-5)
    back = t.inverse(torch.from_numpy(x), torch.from_numpy(e_inc))
    assert isinstance(back, torch.Tensor)
    np.testing.assert_allclose(back.numpy(), cells, rtol=1e-4, atol=1e-4)


def test_known_values_of_fraction_max():
    cells = np.array([[200.0, 0.0, 100.0], [0.0, 50.0, 0.0]])
    e_inc = np.array([2.0, 1.0])
    t = ShowerTransform.fit(TransformConfig(energy="fraction", scale="max"), cells, e_inc)
    # fractions: [[0.1, 0, 0.05], [0, 0.05, 0]]; the largest, 0.1, becomes 1
    np.testing.assert_allclose(t.forward(cells, e_inc), [[1.0, 0.0, 0.5], [0.0, 0.5, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(t.scale.numpy(), [0.1, 0.1, 0.1], rtol=1e-6)


def test_standard_scale_gives_zero_mean_unit_std(sparse_data):
    cells, e_inc = sparse_data
    t = ShowerTransform.fit(TransformConfig(log=True, scale="standard"), cells, e_inc)
    x = t.forward(cells, e_inc).astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1.0, rtol=1e-4)


def test_negative_cells_are_clipped_and_inverse_is_non_negative():
    cells = np.array([[-5.0, 10.0], [3.0, 1.0]])
    e_inc = np.array([1.0, 1.0])
    t = ShowerTransform.fit(TransformConfig(scale="none"), cells, e_inc)
    np.testing.assert_allclose(t.forward(cells, e_inc), [[0.0, 0.01], [0.003, 0.001]], rtol=1e-6)
    out = t.inverse(np.array([[-1.0, 0.5]]), np.array([2.0]))
    np.testing.assert_allclose(out, [[0.0, 1000.0]])
    out_t = t.inverse(torch.tensor([[-1.0, 0.5]]), torch.tensor([2.0]))
    np.testing.assert_allclose(out_t.numpy(), [[0.0, 1000.0]])


def test_torch_inverse_is_differentiable_and_traceable(sparse_data):
    cells, e_inc = sparse_data
    t = ShowerTransform.fit(TransformConfig(log=True, scale="standard"), cells, e_inc)
    x = torch.from_numpy(t.forward(cells, e_inc)).requires_grad_(True)
    e = torch.from_numpy(e_inc).float()
    t.inverse(x, e).sum().backward()
    hit = cells > 0  # empty cells sit on the clip at zero, where the gradient is zero
    assert torch.isfinite(x.grad).all() and (x.grad[hit].abs() > 0).all()

    # no data-dependent Python control flow: torch.export captures one graph (as ONNX will)
    class Inverse(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.t = t

        def forward(self, a, b):
            return self.t.inverse(a, b)

    exported = torch.export.export(Inverse(), (x.detach()[:4], e[:4]))
    torch.testing.assert_close(exported.module()(x.detach()[4:8], e[4:8]), t.inverse(x.detach()[4:8], e[4:8]))


def test_state_round_trip(sparse_data):
    cells, e_inc = sparse_data
    t = ShowerTransform.fit(TransformConfig(log=True, scale="standard", eps=1e-5), cells, e_inc)
    t2 = ShowerTransform.from_dict(t.to_dict())
    assert t2.config == t.config
    np.testing.assert_array_equal(t2.forward(cells, e_inc), t.forward(cells, e_inc))
    assert set(t.state_dict()) == {"shift", "scale"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"energy": "joules"}, "transform.energy must be one of fraction, gev"),
        ({"scale": "minmax"}, "transform.scale must be one of none, max, standard"),
        ({"eps": 0}, "transform.eps must be a positive number"),
        ({"log": True, "scale": "max"}, "use scale 'standard' with log: true"),
    ],
)
def test_bad_config_values_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TransformConfig(**kwargs)


def test_fit_refuses_all_zero_cells():
    with pytest.raises(ValueError, match="every training cell is zero"):
        ShowerTransform.fit(TransformConfig(), np.zeros((3, 4)), np.ones(3))


def test_hits_scale_sets_empty_cells_apart_and_inverts_exactly():
    cfg = TransformConfig(energy="gev", log=True, scale="hits", hit_floor=1e-6, gap=2.0, min_std=1.0)
    cells = np.array([[100.0, 0.0, 2.0], [50.0, 0.0005, 0.0], [10.0, 0.0, 4.0]])  # MeV
    t = ShowerTransform.fit(cfg, cells, np.ones(3))
    hits = np.log(np.array([100.0, 50.0, 10.0]) / 1000)
    assert t.shift[0].item() == pytest.approx(hits.mean()) and t.scale[0].item() == pytest.approx(max(hits.std(ddof=1), 1.0))
    # a cell hit once: its hit (0.0005 MeV, below the 1 keV floor) counts at the floor, spread min_std
    assert t.shift[1].item() == pytest.approx(np.log(1e-6)) and t.scale[1].item() == 1.0
    x = t.forward(cells, np.ones(3))
    zero = t.zero_point().numpy()
    assert x[0, 1] == pytest.approx(zero[1]) and zero[1] == pytest.approx(-2.0)  # floor at 0, empty 2 below
    assert t.threshold().numpy()[1] == pytest.approx(-1.0)  # halfway into the gap
    back = t.inverse(x, np.ones(3))
    expect = cells.copy()
    expect[1, 1] = 0.001  # the floor
    np.testing.assert_allclose(back, expect, rtol=1e-5)
    torch.testing.assert_close(t.inverse(torch.from_numpy(x), torch.ones(3)), torch.from_numpy(back), rtol=1e-5, atol=1e-7)
    # dequantise moves only the empty cells, each within half a unit of its value
    torch.manual_seed(0)
    d = t.dequantise(torch.from_numpy(np.repeat(x, 200, axis=0)))
    empty = np.repeat(cells, 200, axis=0) == 0
    moved = d.numpy() - np.repeat(x, 200, axis=0)
    assert (moved[~empty] == 0).all() and (np.abs(moved[empty]) <= 0.5).all() and moved[empty].std() > 0.25
    assert (t.inverse(d, torch.ones(600)).numpy()[empty] == 0).all()  # still empty after the inverse


def test_hits_scale_needs_log():
    with pytest.raises(ConfigError, match="scale 'hits' standardises log energies: it needs log: true"):
        TransformConfig(scale="hits")


@pytest.mark.parametrize(
    "config",
    [
        TransformConfig(),
        TransformConfig(log=True, scale="standard"),
        TransformConfig(energy="gev", scale="max"),
        TransformConfig(energy="gev", log=True, scale="hits"),
    ],
)
def test_numpy_paths_in_chunks_give_the_one_pass_answers(config, monkeypatch):
    import calogan.transforms as tr

    rng = np.random.default_rng(0)
    cells = (rng.exponential(100.0, (50, 7)) * (rng.random((50, 7)) < 0.7)).astype(np.float32)
    e_inc = rng.uniform(1, 100, 50)
    whole = ShowerTransform.fit(config, cells, e_inc)
    x_whole = whole.forward(cells, e_inc)
    monkeypatch.setattr(tr, "_CHUNK_CELLS", 7 * 8)  # chunks of 8 showers, the last one of 2
    chunked = ShowerTransform.fit(config, cells, e_inc)
    torch.testing.assert_close(chunked.shift, whole.shift, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(chunked.scale, whole.scale, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(whole.forward(cells, e_inc), x_whole)
