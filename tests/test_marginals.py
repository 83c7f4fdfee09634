"""The marginal calibration of a trained generator (calogan.marginals, calogan calibrate-model)."""

import numpy as np
import pytest
import torch

from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.cli import main
from calogan.data import Conditions, ShowerData
from calogan.export import export_onnx
from calogan.generate import generate
from calogan.io import write_showers
from calogan.marginals import MarginalCalibration, _quantile_map, fit_calibration
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

SMALL = {"latent_dim": 4, "generator_hidden": [16, 16], "critic_hidden": [8]}


def sparse_showers(geometry, n, seed):
    """Toy showers with empty cells: cell c is hit with probability 0.2 + 0.6 c / n_cells."""
    data = toy_showers(geometry, n=n, seed=seed)
    rng = np.random.default_rng(seed + 100)
    p = 0.2 + 0.6 * np.arange(geometry.n_cells) / geometry.n_cells
    cells = np.where(rng.random(data.cells.shape) < p, data.cells, 0.0).astype(np.float32)
    return ShowerData(geometry, cells, data.e_inc, data.pdg, {})


def hits_wgan(data):
    t = ShowerTransform.fit(TransformConfig(energy="gev", log=True, scale="hits"), data.cells, data.e_inc)
    torch.manual_seed(0)
    return build_model("wgan", data.geometry, ConditionSpec.from_data(data), t, SMALL).eval()


def test_quantile_table_maps_one_distribution_onto_another():
    rng = np.random.default_rng(0)
    gen = rng.uniform(0.0, 1.0, (200_000, 1))
    real = 3.0 + 2.0 * rng.uniform(0.0, 1.0, (200_000, 1))  # the map is y = 3 + 2 x
    knots = np.linspace(0.05, 0.95, 11)[:, None]
    np.testing.assert_allclose(_quantile_map(gen, real, knots)[:, 0], 3.0 + 2.0 * knots[:, 0], atol=0.02)


def identity_state(model, n_energy=3, n_knots=10_000):
    """A calibration that changes a shower by at most half a knot: zero noise, each cell's table the
    transform's inverse at knots 0.004 apart, an identity response map."""
    n, lo, step = model.transform.n_cells, -20.0, 40.0 / n_knots
    knots = torch.tensor(lo + step * np.arange(n_knots + 1), dtype=torch.float32)[:, None].repeat(1, n)
    mev = model.transform.inverse(knots, torch.ones(n_knots + 1)).numpy().T  # (n_cells, knots)
    return {
        "proj": np.ones((model.config.latent_dim, n)),
        "noise": 0.0,
        "centers": np.log([1.0, 3.0, 9.0]),
        "a": np.full(n, 1.0 / step),
        "b": np.full(n, 0.5 - lo / step),
        "table": np.repeat(mev[None], n_energy, 0),
        "per_gev": 0.0,
        "r_lo": np.zeros(n_energy),
        "r_step": np.full(n_energy, 1000.0),
        "r_table": np.tile([0.0, 1000.0], (n_energy, 1)),  # u -> u on [0, 1000]
        "r_moments": np.array([[0.0], [0.0], [1.0], [0.0], [0.0], [1.0]]).repeat(n_energy, 1),  # u = r, then r = u
    }


def test_identity_calibration_changes_nothing_but_the_rounding_to_a_knot(toy_geometry):
    data = sparse_showers(toy_geometry, 64, 0)
    model = hits_wgan(data)
    cond, z = torch.tensor(data.e_inc, dtype=torch.float32)[:, None], torch.randn(64, 4)
    with torch.no_grad():
        bare = model.sample_cells(cond, z)
        model.calibration = MarginalCalibration(identity_state(model))
        calibrated = model.sample_cells(cond, z)
    same = (bare > 0) == (calibrated > 0)
    assert same.float().mean() > 0.99  # a hit moves across the threshold only within 0.002 of it
    # half a knot is 0.002 standard units of log energy: a relative change below 1 %
    torch.testing.assert_close(calibrated[same], bare[same], rtol=0.01, atol=1e-6)


def test_calibration_gives_an_untrained_generator_the_training_marginals(toy_geometry):
    train = sparse_showers(toy_geometry, 4000, 1)
    model = hits_wgan(train)
    cond = Conditions(train.e_inc, train.pdg, {})
    bare = np.concatenate([d.cells for d in generate(model, cond, seed=3)])
    assert np.abs((bare > 0).mean(0) - (train.cells > 0).mean(0)).max() > 0.2  # the untrained generator is far off
    model.calibration = fit_calibration(model, train, noise=0.5, n_energy=4, n_knots=32, n_generated=40_000)
    cells = np.concatenate([d.cells for d in generate(model, cond, seed=3)])
    # each cell's hit probability and mean energy, and the response and resolution, as in training
    np.testing.assert_allclose((cells > 0).mean(0), (train.cells > 0).mean(0), atol=0.03)
    np.testing.assert_allclose(cells.mean(0), train.cells.mean(0), rtol=0.15)
    r_gen, r_real = cells.sum(1) / train.e_inc, train.cells.sum(1) / train.e_inc
    assert r_gen.mean() == pytest.approx(r_real.mean(), rel=0.01)
    assert r_gen.std() == pytest.approx(r_real.std(), rel=0.05)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    from calogan.geometry import Geometry, Layer

    geometry = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))
    train = sparse_showers(geometry, 1000, 2)
    model = hits_wgan(train)
    model.calibration = fit_calibration(model, train, noise=0.3, n_energy=4, n_knots=16, n_generated=8000)
    return model, tmp_path_factory.mktemp("calibrated")


def test_calibration_travels_with_the_checkpoint(calibrated):
    model, folder = calibrated
    path = save_checkpoint(folder / "c.pt", model, step=5, generator_only=True)
    back = load_checkpoint(path).model
    cond, z = torch.linspace(1, 10, 32)[:, None], torch.randn(32, 4)
    assert back.calibration is not None
    torch.testing.assert_close(back.sample_cells(cond, z), model.sample_cells(cond, z))
    assert not any(k.startswith("calibration.") for k in back.state_dict())  # kept apart from the weights


def test_calibrated_generator_exports_with_parity(calibrated):
    model, folder = calibrated
    report = export_onnx(model, folder / "c.onnx")
    assert report.parity.ok and report.parity.n == 256


def test_calibrate_model_cli(calibrated, tmp_path, capsys):
    model, _ = calibrated
    model = hits_wgan(sparse_showers(model.geometry, 1000, 2))  # the same generator, uncalibrated
    save_checkpoint(tmp_path / "m.pt", model, step=5)
    write_showers(tmp_path / "train.h5", sparse_showers(model.geometry, 1000, 2))
    write_showers(tmp_path / "val.h5", sparse_showers(model.geometry, 300, 4))
    args = [
        "calibrate-model",
        "--model",
        str(tmp_path / "m.pt"),
        "--train",
        str(tmp_path / "train.h5"),
        "--validation",
        str(tmp_path / "val.h5"),
    ]
    assert main([*args, "-o", str(tmp_path / "c.pt"), "--noise", "0.3", "--energies", "4", "--knots", "16"]) == 0
    out = capsys.readouterr().out
    assert "fast low-level classifier AUC" in out and "uncalibrated: " in out and "noise 0.3: " in out
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.model.calibration is not None and ckpt.metrics["calibration"]["noise"] == pytest.approx(0.3)
    assert main([*args, "-o", str(tmp_path / "d.pt"), "--noise", "lots"]) == 2
    assert "--noise lots" in capsys.readouterr().err
    assert not (tmp_path / "d.pt").exists()
