"""The VAE family: the flow's exact log-determinant, the evidence lower bound, and training without a discriminator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from calogan.checkpoint import load_checkpoint
from calogan.errors import ConfigError
from calogan.io import write_showers
from calogan.losses import gaussian_kl
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.models.vae import IAFStep
from calogan.training import TrainConfig, TrainState, _Sampler, apply_overrides, train
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = {"latent_dim": 3, "encoder_hidden": [16], "decoder_hidden": [16]}


def make(geometry, model=None, transform=None, n=16):
    torch.manual_seed(0)
    data = toy_showers(geometry, n=n)
    t = ShowerTransform.fit(transform or TransformConfig(), data.cells, data.e_inc)
    spec = ConditionSpec.from_data(data)
    m = build_model("vae", geometry, spec, t, {**SMALL, **(model or {})})
    m.prepare(data)
    return m, torch.from_numpy(t.forward(data.cells, data.e_inc)), spec.tensor(data)


def test_iaf_step_is_autoregressive_with_the_exact_log_determinant():
    torch.manual_seed(1)
    step = IAFStep(4, hidden=12, context=3)
    for p in step.parameters():  # leave the near-identity start: a generic flow step
        torch.nn.init.normal_(p, std=0.5)
    z, h = torch.randn(1, 4), torch.randn(1, 3)
    jac = torch.autograd.functional.jacobian(lambda v: step(v, h)[0], z).reshape(4, 4)
    assert torch.equal(jac.triu(1), torch.zeros(4, 4))  # output i depends on z_1 .. z_i only
    torch.testing.assert_close(step(z, h)[1], torch.log(torch.diagonal(jac).abs()).sum().reshape(1))


def test_kl_is_closed_form_without_the_flow_and_log_q_minus_log_p_with_it(toy_geometry):
    m, x, cond = make(toy_geometry)
    cn = m.conditions.normalise(cond)
    h = m.encoder(torch.cat([x, cn], dim=1))
    torch.manual_seed(5)
    _, kl = m.encode(x, cn)
    torch.testing.assert_close(kl, gaussian_kl(m.to_mu(h), m.to_log_var(h)))

    flow, x, cond = make(toy_geometry, {"iaf_layers": 1})
    for p in flow.flow[0].out.parameters():  # m = 0, s = 0: the step is z' = sigmoid(1) z
        torch.nn.init.zeros_(p)
    cn = flow.conditions.normalise(cond)
    h = flow.encoder(torch.cat([x, cn], dim=1))
    mu, log_var = flow.to_mu(h), flow.to_log_var(h)
    torch.manual_seed(5)
    z, kl = flow.encode(x, cn)
    torch.manual_seed(5)
    eps = torch.randn_like(mu)
    s = torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(z, (s * (mu + torch.exp(0.5 * log_var) * eps)).flip(1))
    log_q = -0.5 * (log_var + eps**2 + math.log(2 * math.pi)).sum(1) - 3 * torch.log(s)
    log_p = -0.5 * (z**2 + math.log(2 * math.pi)).sum(1)
    torch.testing.assert_close(kl, log_q - log_p)


def test_loss_terms(toy_geometry):
    m, x, cond = make(toy_geometry, {"energy_weight": 2.0, "layer_weight": 3.0})
    torch.manual_seed(2)
    loss, logs = m.generator_loss(cond, x)
    torch.testing.assert_close(loss.detach(), logs["rec"] + logs["kl"] + 2.0 * logs["e_tot"] + 3.0 * logs["e_layers"])
    with pytest.raises(ConfigError, match="needs the real batch"):
        m.generator_loss(cond)
    with pytest.raises(ConfigError, match="has no discriminator"):
        m.discriminator_loss(x, cond)


def test_gaussian_decoder_draws_cell_noise_from_the_latent(toy_geometry):
    m, _, cond = make(
        toy_geometry, {"reconstruction": "gaussian", "output_activation": "relu"}, TransformConfig(log=True, scale="standard")
    )
    z = m.latent(16)
    a, b = m.sample_cells(cond, z), m.sample_cells(cond, z.clone())
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # a function of (conditions, z)
    _, mean, _ = m.decode(z, cond, torch.zeros(16, toy_geometry.n_cells))
    smooth = m.transform.inverse(m._output(mean), cond[:, 0])
    assert not torch.allclose(a, smooth)  # the noise moves energy between cells ...
    layers = torch.stack([x.sum((1, 2)) for x in toy_geometry.split(a)], 1)
    torch.testing.assert_close(
        layers, torch.stack([x.sum((1, 2)) for x in toy_geometry.split(smooth)], 1), rtol=1e-4, atol=1e-3
    )  # ... within each layer
    with torch.no_grad():
        m.decoder[-1].bias[: toy_geometry.n_cells] = -50.0  # means far below empty: every cell clipped
    assert (m.sample_cells(cond, z) == 0).all()


@pytest.mark.parametrize(
    ("model", "transform", "message"),
    [
        (
            {"reconstruction": "bce", "output_activation": "relu"},
            None,
            "model.reconstruction 'bce' needs model.output_activation 'sigmoid'",
        ),
        ({}, TransformConfig(log=True, scale="standard"), "model.output_activation 'sigmoid' makes model-space cells in"),
        ({"iaf_layers": 2, "latent_dim": 1}, None, "model.iaf_layers needs model.latent_dim >= 2"),
        ({"reconstruction": "l1"}, None, "model.reconstruction must be one of bce, mse, gaussian"),
    ],
)
def test_bad_options_are_named(toy_geometry, model, transform, message):
    with pytest.raises(ConfigError, match=message):
        make(toy_geometry, model, transform)


@pytest.fixture
def toy_file(tmp_path, toy_geometry):
    return write_showers(tmp_path / "toy.h5", toy_showers(toy_geometry, n=80, seed=2))


def tiny(data) -> TrainConfig:
    return apply_overrides(
        TrainConfig.from_yaml(CONFIGS / "vae_tiny.yaml"),
        [f"data={data}", "max_steps=12", "checkpoint_every=4", "val_every=4", "val_bins=2", "progress=false", "threads=1"],
    )


def test_trains_without_a_discriminator_and_resumes_bit_for_bit(toy_file, tmp_path, monkeypatch):
    cfg = tiny(toy_file)
    assert cfg.family == "vae"
    train(cfg, tmp_path / "full")
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    assert full.training["opt_d"] is None and full.training["opt_g"]["state"][0]["step"].item() == 12
    take, calls = _Sampler.take, {"n": 0}

    def killed_at_step_11(self, k):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        assert k == cfg.batch_size  # one batch per step: no critic's big batch
        return take(self, k)

    monkeypatch.setattr(_Sampler, "take", killed_at_step_11)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed")
    monkeypatch.setattr(_Sampler, "take", take)
    assert train(cfg, tmp_path / "killed", resume=True).step == 12
    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    a, b = resumed.model.state_dict(), full.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_state_without_a_discriminator_has_no_optimiser_for_it(toy_geometry):
    m, _, _ = make(toy_geometry)
    state = TrainState.create(TrainConfig(family="vae", model=SMALL), m, _Sampler(10, 0), torch.device("cpu"))
    assert state.opt_d is None and len(state.opt_g.param_groups[0]["params"]) == len(list(m.parameters()))


def test_too_few_showers_for_a_step_names_g_steps(toy_file, tmp_path):
    with pytest.raises(ConfigError, match="g_steps \\* batch_size = 160 exceeds the 72 training showers"):
        train(apply_overrides(tiny(toy_file), ["g_steps=5", "batch_size=32"]), tmp_path / "run")


def test_eplus_config_builds_on_the_calogan_geometry():
    from calogan.geometry import preset

    config = TrainConfig.from_yaml(CONFIGS / "vae_eplus.yaml")
    g = preset("calogan")
    t = ShowerTransform(TransformConfig(**config.transform), np.zeros(g.n_cells), np.ones(g.n_cells))
    model = build_model("vae", g, ConditionSpec(), t, config.model)
    assert model.config.iaf_layers > 0 and model(torch.tensor([[10.0]])).shape == (1, 504)
