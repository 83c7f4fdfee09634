"""One contract, run against every model family on tiny data: shapes, gradients reach every
parameter, save/load round trip, ONNX export parity, and a few steps from a `calogan train` config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from calogan.benchmark import BenchmarkConfig, run_benchmark
from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.cli import main
from calogan.data import ShowerData
from calogan.export import export_onnx
from calogan.fastsim import load_backend
from calogan.geometry import Geometry, Layer
from calogan.io import read_showers, write_showers
from calogan.models import FAMILIES, build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

TOY = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))
# A single voxel block: 4 layers of 6 x 5 cells (the 3D GAN's grid is cropped on every axis).
BLOCK = Geometry("block", tuple(Layer(f"z{i}", (6, 5), (5.0, 5.0), 3.0, "W", 2.8, "Si", 0.5) for i in range(4)))
ANGLES = ("e_inc", "x0", "y0", "theta", "phi")
CALOGAN_TINY = {"latent_dim": 8, "dense_channels": 4, "conv_channels": 4, "local_channels": 3, "disc_channels": [4, 4, 3, 3]}
GAN3D_TINY = {
    "latent_dim": 8,
    "gen_channels": [4, 4, 3, 3],
    "gen_kernel": 3,
    "disc_channels": [4, 4],
    "disc_kernel": 3,
    "disc_strides": [1, 2],
}

# name: (family, geometry, conditions, transform, model options)
CASES = {
    "wgan": (
        "wgan",
        TOY,
        ("e_inc",),
        {"log": True, "scale": "standard"},
        {"latent_dim": 4, "generator_hidden": [16], "critic_hidden": [16], "physics_critic": False, "drift": 1e-3},
    ),
    "calogan": (
        "calogan",
        TOY,
        ("e_inc",),
        {"energy": "gev", "scale": "none"},
        {**CALOGAN_TINY, "minibatch_kernels": 3, "minibatch_dim": 2},
    ),
    "cond_calogan": (
        "cond_calogan",
        TOY,
        ANGLES,
        {"energy": "gev", "scale": "none"},
        {**CALOGAN_TINY, "regression_hidden": [8], "blur_mm": 12.0},
    ),
    "gan3d": ("gan3d", BLOCK, ("e_inc",), {"energy": "gev", "scale": "max"}, GAN3D_TINY),
    "gan3d-angle": (
        "gan3d",
        BLOCK,
        ("e_inc", "theta"),
        {"log": True, "scale": "standard"},
        {**GAN3D_TINY, "gen_last_upsample": "transposed"},
    ),
    "vae": (
        "vae",
        TOY,
        ("e_inc",),
        {},
        {"latent_dim": 3, "encoder_hidden": [16], "decoder_hidden": [16], "energy_weight": 1.0, "layer_weight": 1.0},
    ),
    "vae-iaf-gaussian": (
        "vae",
        TOY,
        ("e_inc", "theta"),
        {"log": True, "scale": "standard"},
        {"latent_dim": 3, "encoder_hidden": [16], "decoder_hidden": [16], "iaf_layers": 2, "iaf_hidden": 8, "context_dim": 4},
    ),
}
CASES["vae-iaf-gaussian"][4].update(reconstruction="gaussian", output_activation="relu")


def showers(geometry: Geometry, n: int = 24, seed: int = 0) -> ShowerData:
    """Toy showers with conditions and empty cells (a different number per shower), each depositing half its energy."""
    rng = np.random.default_rng(seed)
    extra = {
        "x0": rng.uniform(-20, 20, n),
        "y0": rng.uniform(-20, 20, n),
        "theta": rng.uniform(0, 0.3, n),
        "phi": rng.uniform(0, 2 * np.pi, n),
    }
    d = toy_showers(geometry, n, seed, **extra)
    cells = d.cells * (rng.random(d.cells.shape) < rng.uniform(0.3, 0.9, (n, 1)))
    cells[:, 0] += 1.0
    cells *= (500.0 * d.e_inc / cells.sum(1))[:, None]
    return ShowerData(geometry, cells, d.e_inc, d.pdg, d.conditions)


def make(name: str, n: int = 24, seed: int = 0):
    family, geometry, keys, transform, options = CASES[name]
    torch.manual_seed(seed)  # a fixed init: a unit dead on a tiny batch would read as a broken graph
    data = showers(geometry, n, seed)
    t = ShowerTransform.fit(TransformConfig(**transform), data.cells, data.e_inc)
    spec = ConditionSpec.from_data(data, keys)
    model = build_model(family, geometry, spec, t, options)
    model.prepare(data)
    return model, data, spec, t


def test_every_family_has_a_contract_case():
    assert {family for family, *_ in CASES.values()} == set(FAMILIES)


@pytest.mark.parametrize("name", CASES)
def test_shapes(name):
    model, data, spec, _ = make(name)
    cond, z = spec.tensor(data), model.latent(24)
    assert z.shape == (24, model.config.latent_dim)
    x = model(cond, z)
    assert x.shape == (24, data.geometry.n_cells) and torch.isfinite(x).all()
    torch.testing.assert_close(model.eval()(cond, z), model(cond, z), rtol=0, atol=0)  # a function of (conditions, noise)
    cells = model.sample_cells(cond, z)
    assert cells.shape == (24, data.geometry.n_cells) and cells.dtype == torch.float32 and (cells >= 0).all()


@pytest.mark.parametrize("name", CASES)
def test_gradients_reach_every_parameter(name):
    model, data, spec, t = make(name)
    real, cond = torch.from_numpy(t.forward(data.cells, data.e_inc)), spec.tensor(data)
    gen, disc = model.generator_parameters(), model.discriminator_parameters()
    assert {id(p) for p in gen}.isdisjoint({id(p) for p in disc})
    assert len(gen) + len(disc) == len(list(model.parameters()))
    names = {id(p): n for n, p in model.named_parameters()}
    if model.adversarial:
        updates = [(lambda: model.discriminator_loss(real, cond), disc, gen), (lambda: model.generator_loss(cond), gen, ())]
    else:
        assert disc == []
        updates = [(lambda: model.generator_loss(cond, real), gen, ())]
    for loss_fn, trained, constant in updates:
        model.zero_grad(set_to_none=True)
        loss, logs = loss_fn()
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert all(v.dim() == 0 and not v.requires_grad for v in logs.values())
        loss.backward()
        missing = [names[id(p)] for p in trained if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
        assert not missing, f"parameters without gradient: {missing}"
        assert all(p.grad is None for p in constant)  # the fakes are constants of a discriminator update


@pytest.mark.parametrize("name", CASES)
def test_save_load_round_trip(name, tmp_path):
    model, data, spec, t = make(name)
    cond = spec.tensor(data)
    model.train()
    if model.adversarial:  # move batch-norm running statistics off their start
        model.generator_loss(cond)[0].backward()
    else:
        model.generator_loss(cond, torch.from_numpy(t.forward(data.cells, data.e_inc)))[0].backward()
    model.eval()
    back = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, step=3))
    assert type(back.model) is type(model) and back.model.config == model.config and back.step == 3
    sd1, sd2 = model.state_dict(), back.model.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    z = model.latent(24)
    torch.testing.assert_close(back.model(cond, z), model(cond, z), rtol=0, atol=0)


# test_export.py exports the wgan, calogan and cond_calogan families already, the next test the other two cases
THROUGH_EVERY_PATH = ("gan3d-angle", "vae-iaf-gaussian")


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[0] in ("gan3d", "vae") and n not in THROUGH_EVERY_PATH])
def test_export_parity(name, tmp_path):
    model, *_ = make(name)
    report = export_onnx(model.eval(), tmp_path / "m.onnx", n_check=32)
    assert report.parity.ok and report.parity.n == 32


@pytest.mark.parametrize("name", ["wgan", "gan3d-angle", "vae", "vae-iaf-gaussian"])
def test_trains_from_a_calogan_train_config(name, tmp_path, capsys):
    family, geometry, keys, transform, options = CASES[name]
    data = write_showers(tmp_path / "toy.h5", showers(geometry, 48, seed=5))
    config = {
        "family": family,
        "model": options,
        "transform": transform,
        "conditions": list(keys),
        "batch_size": 8,
        "d_steps": 2,
        "g_steps": 2,
        "max_steps": 3,
        "val_every": 3,
        "val_bins": 2,
        "checkpoint_every": 3,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--data", str(data), "-o", str(out), "--threads", "1", "--quiet"]) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.family == family and ckpt.step == 3
    assert ckpt.training["opt_g"]["state"][0]["step"].item() == 6  # two generator updates a step
    if ckpt.model.adversarial:
        assert ckpt.training["opt_d"]["state"][0]["step"].item() == 6
    else:
        assert ckpt.training["opt_d"] is None  # no discriminator, no optimiser for it
    assert load_checkpoint(out / "best.pt").step == 3


@pytest.mark.parametrize("name", THROUGH_EVERY_PATH)
def test_export_generate_fastsim_and_benchmark_paths(name, tmp_path):
    """ONNX export parity, then `calogan generate` (torch and onnxruntime), the fastsim backends and `calogan benchmark`, as for the GANs."""
    model, data, *_ = make(name)
    model.eval()
    attrs = {"convention": "active", "particle": "e+"}
    ckpt = save_checkpoint(tmp_path / "best.pt", model, step=2, data_attrs=attrs)
    report = export_onnx(model, tmp_path / "m.onnx", attrs={**attrs, "step": 2}, n_check=32)
    assert report.parity.ok and report.parity.n == 32
    onnx = report.path
    ref = write_showers(tmp_path / "ref.h5", data)
    for model_file, out in ((ckpt, "t.h5"), (onnx, "o.h5")):
        args = ["generate", "--model", str(model_file), "--energy-from", str(ref), "--seed", "4", "--batch-size", "7", "--threads", "1"]
        assert main([*args, "--no-progress", "-o", str(tmp_path / out)]) == 0
    by_torch, by_onnx = read_showers(tmp_path / "t.h5"), read_showers(tmp_path / "o.h5")
    np.testing.assert_array_equal(by_torch.e_inc, read_showers(ref).e_inc)
    assert by_torch.cells.shape == data.cells.shape and by_torch.cells.sum() > 0
    np.testing.assert_allclose(by_onnx.cells, by_torch.cells, rtol=1e-4, atol=1e-5 * by_torch.cells.max())

    torch_b, onnx_b = load_backend(ckpt), load_backend(onnx, threads=1)
    cond = np.stack([data.e_inc[:5], *(data.conditions[k][:5] for k in model.conditions.keys[1:])], axis=1).astype(np.float32)
    a, b = torch_b.generate(cond, seed=3), onnx_b.generate(cond, seed=3)
    assert a.shape == (5, data.geometry.n_cells)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * a.max())

    config = BenchmarkConfig(
        batch_sizes=(4,), backends=("torch", "onnxruntime"), devices=("cpu",), threads=1, min_time=0.0, min_repeats=2, ceiling_size=32
    )
    rows = run_benchmark(ckpt, onnx_path=onnx, config=config)["rows"]
    assert [r["backend"] for r in rows] == ["torch", "onnxruntime"] and all(r["showers_per_s"] > 0 for r in rows)
