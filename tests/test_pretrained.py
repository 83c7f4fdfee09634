import json

import numpy as np
import pytest
import torch

from calogan import pretrained
from calogan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, strip_checkpoint
from calogan.models.base import ConditionSpec
from calogan.models.wgan import WGAN, WGANConfig
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers


@pytest.fixture
def checkpoint(tmp_path, toy_geometry):
    data = toy_showers(toy_geometry, n=16)
    torch.manual_seed(0)
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    model = WGAN(toy_geometry, ConditionSpec.from_data(data), t, WGANConfig(generator_hidden=(8,), critic_hidden=(8,), physics_hidden=(4,)))
    model.prepare(data)
    return save_checkpoint(tmp_path / "full.pt", model, step=7, metrics={"chi2": 1.5}), model


def test_a_stripped_checkpoint_generates_the_same_showers(checkpoint, tmp_path):
    path, model = checkpoint
    small = strip_checkpoint(path, tmp_path / "gen.pt")
    assert small.stat().st_size < path.stat().st_size
    ckpt = load_checkpoint(small)
    assert ckpt.step == 7 and ckpt.metrics == {"chi2": 1.5} and ckpt.training is None
    cond, z = torch.tensor([[2.0], [8.0]]), torch.randn(2, 50)
    torch.testing.assert_close(ckpt.model.sample_cells(cond, z), model.eval().sample_cells(cond, z))
    assert all((p == 0).all() for p in ckpt.model.discriminator_parameters())  # no critic ships
    with pytest.raises(CheckpointError, match="exists already"):
        strip_checkpoint(path, small)


def test_generator_only_weights_that_miss_generator_parts_are_refused(checkpoint, tmp_path):
    path, _ = checkpoint
    payload = torch.load(strip_checkpoint(path, tmp_path / "gen.pt"), weights_only=True)
    del payload["state_dict"]["generator.0.weight"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken.pt: cannot rebuild the 'wgan' model: generator-only weights do not fit"):
        load_checkpoint(tmp_path / "broken.pt")


def test_shipped_names_resolve_to_their_files(checkpoint, tmp_path, monkeypatch):
    path, _ = checkpoint
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    strip_checkpoint(path, tmp_path / "toy-model.pt")
    (tmp_path / "toy-model.json").write_text(json.dumps({"particle": "e+", "figures": {"auc_low": 0.7}}))
    assert pretrained.names() == ["toy-model"]
    info = pretrained.card("toy-model")
    assert info["name"] == "toy-model" and info["size_bytes"] == (tmp_path / "toy-model.pt").stat().st_size
    assert load_checkpoint("toy-model").step == 7  # a name works wherever a checkpoint path does
    with pytest.raises(CheckpointError, match=r"no-model: no such checkpoint \(nor a shipped model: toy-model\)"):
        load_checkpoint("no-model")
    with pytest.raises(pretrained.PretrainedError, match="no shipped model 'nope'; shipped: toy-model"):
        pretrained.card("nope")
    (tmp_path / "toy-model.json").write_text("{broken")
    with pytest.raises(pretrained.PretrainedError, match="toy-model.json: not valid JSON"):
        pretrained.card("toy-model")


def test_shipped_models_load_without_the_shared_data():
    """Every shipped model loads from the package alone and makes finite, non-negative showers."""
    for name in pretrained.names():
        info = pretrained.card(name)
        ckpt = load_checkpoint(name)
        spec = ckpt.model.conditions
        lo, hi = spec.ranges[0]
        cond = torch.tensor([[lo] + [0.0] * (spec.n_cond - 1), [hi] + [0.0] * (spec.n_cond - 1)], dtype=torch.float32)
        with torch.no_grad():
            cells = ckpt.model.sample_cells(cond, ckpt.model.latent(2)).numpy()
        assert np.isfinite(cells).all() and (cells >= 0).all() and cells.shape[1] == ckpt.model.geometry.n_cells, name
        assert info["size_bytes"] <= 20e6, name
    total = sum(pretrained.card(n)["size_bytes"] for n in pretrained.names())
    assert total <= 60e6


def _fidelity_recipe_model(geometry):
    """A WGAN built from the shipped recipe (configs/pretrained/wgan_fidelity.yaml), every option
    as shipped except the layer widths, fitted on sparse toy showers."""
    from pathlib import Path

    from calogan.config import read_config
    from calogan.models import build_model

    recipe = read_config(Path(__file__).resolve().parent.parent / "configs" / "pretrained" / "wgan_fidelity.yaml")
    options = {
        **recipe["model"],
        "latent_dim": 6,
        "generator_hidden": [16, 16],
        "critic_hidden": [8],
        "physics_hidden": [8],
        "physics_bins": 2,
    }
    data = toy_showers(geometry, n=32)
    keep = np.random.default_rng(3).random(data.cells.shape) < 0.5
    data = data.__class__(data.geometry, (data.cells * keep).astype(np.float32), data.e_inc, data.pdg)
    t = ShowerTransform.fit(TransformConfig(**recipe["transform"]), data.cells, data.e_inc)
    model = build_model("wgan", geometry, ConditionSpec.from_data(data), t, options)
    model.prepare(data)
    return model.eval()


def test_the_shipped_recipe_exports_to_onnx_with_parity(toy_geometry, tmp_path):
    from calogan.export import export_onnx
    from calogan.marginals import fit_calibration

    model = _fidelity_recipe_model(toy_geometry)
    # as shipped: with the marginal calibration that scripts/pretrain.py fits after training
    model.calibration = fit_calibration(model, toy_showers(toy_geometry, n=64, seed=5), noise=0.8, n_energy=2, n_knots=8, n_generated=2000)
    report = export_onnx(model, tmp_path / "m.onnx", attrs={"convention": "active", "particle": "e+"})
    assert report.parity.ok and report.parity.n > 0


def test_shipped_models_say_whether_they_are_calibrated():
    from calogan.cli.models import describe

    calibrated = []
    for name in pretrained.names():
        card = pretrained.card(name)
        assert (card.get("calibration") is not None) == (load_checkpoint(name).model.calibration is not None), name
        if card.get("calibration"):
            calibrated.append(name)
            assert f"noise {card['calibration']['noise']:g}" in describe(card), name
    assert calibrated


@pytest.mark.slow
@pytest.mark.parametrize("name", pretrained.names())
def test_every_shipped_model_exports_to_onnx_with_parity(name, tmp_path):
    from calogan.export import export_onnx

    report = export_onnx(load_checkpoint(name).model, tmp_path / f"{name}.onnx", attrs={"particle": pretrained.card(name)["particle"]})
    assert report.parity.ok, report.parity
