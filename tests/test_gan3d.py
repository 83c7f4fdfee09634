"""The 3D GAN family: voxel geometries only, the open code's energy conditioning and losses, its configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.geometry import Geometry, Layer, from_calochallenge_xml, preset
from calogan.io import write_showers
from calogan.losses import mean_absolute_percentage_error
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.models.gan3d import GAN3D, check_voxel_geometry
from calogan.training import TrainConfig, apply_overrides, train
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BLOCK = Geometry("block", tuple(Layer(f"z{i}", (5, 5), (5.0, 5.0), 3.0, "W", 2.8, "Si", 0.5) for i in range(3)))
TINY = {"latent_dim": 6, "gen_channels": [2, 3, 2, 2], "gen_kernel": 3, "disc_channels": [3, 3], "disc_kernel": 3, "disc_strides": [1, 1]}


def make(data: ShowerData, keys=("e_inc",), **options) -> GAN3D:
    torch.manual_seed(0)
    t = ShowerTransform.fit(TransformConfig(energy="gev", scale="max"), data.cells, data.e_inc)
    model = build_model("gan3d", data.geometry, ConditionSpec.from_data(data, keys), t, {**TINY, **options})
    model.prepare(data)
    return model


def xml(tmp_path: Path, layers: list[tuple[str, int]]) -> Path:
    rows = "".join(f'<Layer id="{i}" r_edges="{edges}" n_bin_alpha="{n}"/>' for i, (edges, n) in enumerate(layers))
    path = tmp_path / "binning.xml"
    path.write_text(f'<Bins><Bin name="electron">{rows}</Bin></Bins>')
    return path


def test_voxel_geometries_are_accepted_and_others_refused(toy_geometry, tmp_path):
    assert check_voxel_geometry(preset("voxel-25")) == (25, 25, 25)
    regular = from_calochallenge_xml(xml(tmp_path, [("0,4,8,16", 6)] * 5))
    assert check_voxel_geometry(regular) == (5, 6, 3)
    with pytest.raises(
        ConfigError,
        match=r"model family gan3d needs a single-block voxel geometry .*'toy' differs: layers 'front' cartesian 2x4 and 'back' cartesian 3x3",
    ):
        build_model("gan3d", toy_geometry, ConditionSpec(), None, TINY)
    other_edges = from_calochallenge_xml(xml(tmp_path, [("0,4,8,16", 6), ("0,5,10,20", 6)]))
    with pytest.raises(ConfigError, match="have different radial bin edges"):
        check_voxel_geometry(other_edges)
    with pytest.raises(ConfigError, match="model.gen_kernel must be odd"):
        build_model("gan3d", BLOCK, ConditionSpec(), None, {"gen_kernel": 4})
    with pytest.raises(ConfigError, match=r"model.disc_strides must give one positive stride per discriminator layer \(2\)"):
        build_model("gan3d", BLOCK, ConditionSpec(), None, {**TINY, "disc_strides": [1]})


def test_a_regular_calochallenge_grid_trains_a_step(tmp_path):
    geometry = from_calochallenge_xml(xml(tmp_path, [("0,4,8,16", 4)] * 3))
    model = make(toy_showers(geometry, n=8))
    loss, _ = model.generator_loss(torch.tensor([[5.0], [9.0]]))
    loss.backward()
    assert model.eval()(torch.tensor([[5.0]])).shape == (1, geometry.n_cells)


def test_latent_times_energy_over_100_and_appended_conditions():
    data = toy_showers(BLOCK, n=10, theta=np.linspace(0.0, 0.2, 10))
    model = make(data)
    z = torch.ones(2, 6)
    torch.testing.assert_close(model.generator_input(torch.tensor([[50.0], [200.0]]), z), torch.tensor([[0.5] * 6, [2.0] * 6]))
    angled = make(data, keys=("e_inc", "theta"), append_energy=True)
    cond = torch.tensor([[10.0, 0.0], [10.0, 0.2]])
    h = angled.generator_input(cond, z)
    assert h.shape == (2, 6 + 2)
    torch.testing.assert_close(h[:, :6], torch.full((2, 6), 0.1))
    torch.testing.assert_close(h[:, 6:], angled.conditions.normalise(cond))  # log E and theta, normalised to about [-1, 1]
    torch.testing.assert_close(h[:, 7], torch.tensor([-1.0, 1.0]))


def test_summed_energy_fit_and_the_generator_losses():
    data = toy_showers(BLOCK, n=40, seed=3)  # every toy shower deposits exactly half its energy
    model = make(data)
    torch.testing.assert_close(model.ecal_coeffs, torch.tensor([0.0, 0.0, 0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(model.expected_energy(torch.tensor([2.0, 80.0])), torch.tensor([1.0, 40.0]))
    cond = torch.tensor([[4.0], [8.0]])
    z = model.latent(2)
    torch.manual_seed(1)
    loss, logs = model.generator_loss(cond)
    fake = model(cond, z)
    out = model.discriminate(fake, cond)
    torch.testing.assert_close(out["e_tot"], model.sample_cells(cond, z).sum(1) / 1000.0)  # GeV of the physical shower
    # the open code's weights: 2 x real/fake, 0.1 x energy regression, 0.1 x summed energy (both in percent)
    total = 2.0 * logs["g_adv"] + 0.1 * logs["g_aux"] + 0.1 * logs["g_ecal"]
    torch.testing.assert_close(loss.detach(), total)
    torch.testing.assert_close(
        mean_absolute_percentage_error(torch.tensor([2.5, 3.0]), model.expected_energy(cond[:, 0])), torch.tensor(25.0)
    )


def test_condition_regression_head_with_an_angle():
    data = toy_showers(BLOCK, n=12, theta=np.linspace(0.0, 0.3, 12))
    model = make(data, keys=("e_inc", "theta"))
    real = torch.from_numpy(model.transform.forward(data.cells, data.e_inc))
    cond = model.conditions.tensor(data)
    assert model.discriminate(real, cond)["conditions"].shape == (12, 1)
    _, logs = model.discriminator_loss(real, cond)
    assert {"d_real", "d_fake", "d_aux", "d_cond"} <= set(logs)
    _, logs = model.generator_loss(cond)
    assert {"g_adv", "g_aux", "g_ecal", "g_cond"} <= set(logs)


@pytest.mark.parametrize("name", ["gan3d_voxel25_cpu.yaml", "gan3d_voxel25.yaml"])
def test_shipped_configs_build_on_voxel_25(name):
    config = TrainConfig.from_yaml(CONFIGS / name)
    assert config.family == "gan3d" and config.optimizer == "rmsprop" and config.lr_g == config.lr_d == 1e-3
    g = preset("voxel-25")
    t = ShowerTransform(TransformConfig(**config.transform), np.zeros(g.n_cells), np.ones(g.n_cells))
    model = build_model("gan3d", g, ConditionSpec(), t, config.model)
    assert model.config.latent_dim == 200 and (model.config.gan_weight, model.config.aux_weight, model.config.ecal_weight) == (
        2.0,
        0.1,
        0.1,
    )
    if name == "gan3d_voxel25_cpu.yaml":
        with torch.no_grad():
            assert model.eval()(torch.tensor([[10.0], [90.0]])).shape == (2, 15625)


def test_cpu_config_trains_on_a_small_block(tmp_path):
    path = write_showers(tmp_path / "block.h5", toy_showers(BLOCK, n=40, seed=4))
    config = apply_overrides(
        TrainConfig.from_yaml(CONFIGS / "gan3d_voxel25_cpu.yaml"),
        [
            f"data={path}",
            "batch_size=8",
            "max_steps=2",
            "val_every=2",
            "val_bins=2",
            "val_copies=1",
            "max_minutes=null",
            "progress=false",
            "threads=1",
        ],
    )
    result = train(config, tmp_path / "run")
    assert result.step == 2 and result.best_step == 2
