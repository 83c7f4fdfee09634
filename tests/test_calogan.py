"""Contract tests of the CaloGAN and conditional CaloGAN families on a toy geometry (CPU, seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.io import write_showers
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.models.calogan import CaloGAN
from calogan.models.cond_calogan import CondCaloGAN, blur_kernel
from calogan.training import TrainConfig, train
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

TINY = {
    "latent_dim": 8,
    "dense_channels": 4,
    "conv_channels": 4,
    "local_channels": 3,
    "disc_channels": [4, 4, 3, 3],
    "minibatch_kernels": 3,
    "minibatch_dim": 2,
}
TINY_COND = {**TINY, "regression_hidden": [8, 8], "blur_mm": 12.0}
COND_KEYS = ("e_inc", "x0", "y0", "theta", "phi")


def toy_data(geometry, n=24, seed=0, particles=(-11,)) -> ShowerData:
    rng = np.random.default_rng(seed)
    d = toy_showers(
        geometry,
        n,
        seed,
        x0=rng.uniform(-20, 20, n),
        y0=rng.uniform(-20, 20, n),
        theta=rng.uniform(0, 0.3, n),
        phi=rng.uniform(0, 2 * np.pi, n),
    )
    # empty cells (a different number per shower) so that occupancies differ, then every shower
    # rescaled to deposit exactly half its energy again
    cells = d.cells * (rng.random(d.cells.shape) < rng.uniform(0.3, 0.9, (n, 1)))
    cells[:, 0] += 1.0
    cells *= (500.0 * d.e_inc / cells.sum(1))[:, None]
    return ShowerData(geometry, cells, d.e_inc, np.resize(np.asarray(particles), n), d.conditions)


def make(family, geometry, data, keys=("e_inc",), **overrides):
    transform = ShowerTransform.fit(TransformConfig(energy="gev", scale="none"), data.cells, data.e_inc)
    spec = ConditionSpec.from_data(data, keys)
    options = {**(TINY if family == "calogan" else TINY_COND), **overrides}
    model = build_model(family, geometry, spec, transform, options)
    model.prepare(data)
    return model, spec, transform


CASES = [
    ("calogan", ("e_inc",), (-11,)),
    ("calogan", ("e_inc",), (-11, 22)),  # ACGAN head over two particle types
    ("cond_calogan", COND_KEYS, (-11,)),
]


@pytest.mark.parametrize(("family", "keys", "particles"), CASES)
def test_output_shapes_and_zeros(family, keys, particles, toy_geometry):
    torch.manual_seed(0)
    data = toy_data(toy_geometry, particles=particles)
    model, spec, _ = make(family, toy_geometry, data, keys)
    cond = spec.tensor(data)
    assert cond.shape == (24, len(keys) + (len(particles) if len(particles) > 1 else 0))
    x = model(cond)
    assert x.shape == (24, toy_geometry.n_cells)
    assert torch.all(x >= 0)  # the ReLU output: a shower has exact zeros, never negative cells
    z = model.latent(24)
    assert z.shape == (24, 8)
    out = model.discriminate(x, cond)
    assert out["logit"].shape == (24,) and out["e_tot"].shape == (24,)
    torch.testing.assert_close(out["e_tot"], x.sum(1))  # model space is GeV here
    if len(particles) > 1:
        assert out["classes"].shape == (24, 2)
    if family == "cond_calogan":
        assert model.regress(out["cells"]).shape == (24, 5)  # x0, y0, theta and phi as two columns


@pytest.mark.parametrize(("family", "keys", "particles"), CASES)
def test_gradients_reach_every_parameter(family, keys, particles, toy_geometry):
    torch.manual_seed(1)
    data = toy_data(toy_geometry, particles=particles)
    model, spec, transform = make(family, toy_geometry, data, keys)
    real, cond = transform.forward(torch.from_numpy(data.cells), torch.from_numpy(data.e_inc)), spec.tensor(data)
    gen, disc = model.generator_parameters(), model.discriminator_parameters()
    assert {id(p) for p in gen}.isdisjoint({id(p) for p in disc})
    assert len(gen) + len(disc) == len(list(model.parameters()))
    for loss_fn, params, name in (
        (lambda: model.discriminator_loss(real, cond), disc, "discriminator"),
        (lambda: model.generator_loss(cond), gen, "generator"),
    ):
        model.zero_grad(set_to_none=True)
        loss, logs = loss_fn()
        assert loss.dim() == 0 and torch.isfinite(loss)
        assert all(v.dim() == 0 and not v.requires_grad for v in logs.values())
        loss.backward()
        names = {id(p): n for n, p in model.named_parameters()}
        missing = [names[id(p)] for p in params if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
        assert not missing, f"{name} parameters without gradient: {missing}"


@pytest.mark.parametrize(("family", "keys", "particles"), CASES)
def test_save_load_round_trip(family, keys, particles, toy_geometry, tmp_path):
    torch.manual_seed(2)
    data = toy_data(toy_geometry, particles=particles)
    model, spec, _ = make(family, toy_geometry, data, keys, sampling_fraction=None)
    model.train()
    model.generator_loss(spec.tensor(data))[0].backward()  # move the batch-norm running statistics off their start
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, step=7)
    back = load_checkpoint(path)
    assert type(back.model) is type(model) and back.step == 7 and back.model.config == model.config
    assert back.model.sampling_fraction.item() == pytest.approx(0.5, rel=1e-5)  # fitted by prepare, kept in the state
    cond, z = spec.tensor(data), model.latent(24)
    torch.testing.assert_close(back.model(cond, z), model(cond, z), rtol=0, atol=0)
    out_a, out_b = back.model.discriminate(model(cond, z), cond), model.discriminate(model(cond, z), cond)
    torch.testing.assert_close(out_a["logit"], out_b["logit"], rtol=0, atol=0)


def test_sampling_fraction_fit_and_energy_loss(toy_geometry):
    torch.manual_seed(3)
    data = toy_data(toy_geometry)  # every toy shower deposits exactly half its energy
    fitted, spec, _ = make("calogan", toy_geometry, data, sampling_fraction=None)
    assert fitted.sampling_fraction.item() == pytest.approx(0.5, rel=1e-6)
    paper, _, _ = make("calogan", toy_geometry, data)
    assert paper.sampling_fraction.item() == 1.0  # the paper's convention: E_tot compared with E
    cond = spec.tensor(data)
    torch.manual_seed(4)
    _, logs = fitted.generator_loss(cond)
    torch.manual_seed(4)
    fake = fitted(cond)
    want = (fake.sum(1) / 0.5 - cond[:, 0]).abs().mean()  # incident-equivalent GeV: |E_tot - f E| / f
    torch.testing.assert_close(logs["g_energy"], want.detach())


def test_energy_well_features(toy_geometry):
    data = toy_data(toy_geometry, n=4)
    model, _, _ = make("calogan", toy_geometry, data, sampling_fraction=0.5)
    model.eval()
    e = torch.tensor([10.0, 10.0, 50.0, 50.0])
    x = torch.zeros(4, toy_geometry.n_cells)
    x[:, 0] = torch.tensor([5.0, 1.0, 25.0, 28.0])  # E_tot / f = 10, 2, 50, 56 GeV
    feats = model.discriminate(x, e[:, None])["features"]
    # global block: L layer energies / 10, total / 100, |E_tot/f - E|, 10 * 1[... > 5 GeV], MBD
    n_layers = toy_geometry.n_layers
    scale = 100.0 / model.e_max
    start = feats.shape[1] - (n_layers + 3 + 3)
    well = feats[:, start + n_layers + 1]
    flag = feats[:, start + n_layers + 2]
    torch.testing.assert_close(well, torch.tensor([0.0, 8.0, 0.0, 6.0]) * scale)
    torch.testing.assert_close(flag, torch.tensor([0.0, 10.0, 0.0, 10.0]))


def test_attribute_encoding_and_blur(toy_geometry):
    data = toy_data(toy_geometry)
    model, spec, _ = make("cond_calogan", toy_geometry, data, COND_KEYS)
    lo, hi = spec.ranges[3]
    cond = torch.tensor([[10.0, 0.0, 0.0, hi, 0.0], [10.0, 0.0, 0.0, hi, math.pi / 2], [10.0, 0.0, 0.0, 0.0, 1.0]])
    xi = model.attributes(cond)
    torch.testing.assert_close(xi[:, 3:], torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(xi[:, 2], torch.tensor([1.0, 1.0, -1.0 - 2 * lo / (hi - lo)]))
    assert model.attribute_weights.tolist() == pytest.approx([0.2] * 5)
    # blur: toy layer 'front' has 10 x 5 mm cells -> (1, 3) at 12 mm; 'back' 20 x 20 mm -> none
    assert blur_kernel((10.0, 5.0), 12.0) == (1, 3) and blur_kernel((20.0, 20.0), 12.0) == (1, 1)
    assert [type(b).__name__ for b in model.blurs] == ["Blur2d", "Identity"]


def test_bad_inputs_are_refused(toy_geometry):
    data = toy_data(toy_geometry)
    with pytest.raises(ConfigError, match="use family cond_calogan"):
        make("calogan", toy_geometry, data, ("e_inc", "x0"))
    with pytest.raises(ConfigError, match="needs conditions beyond e_inc"):
        make("cond_calogan", toy_geometry, data)
    transform = ShowerTransform.fit(TransformConfig(energy="gev", log=True, scale="standard"), data.cells, data.e_inc)
    with pytest.raises(ConfigError, match="linear in the cell energies"):
        build_model("calogan", toy_geometry, ConditionSpec.from_data(data), transform, TINY)
    with pytest.raises(ConfigError, match="disc_channels"):
        build_model("calogan", toy_geometry, ConditionSpec.from_data(data), transform, {"disc_channels": [4, 4]})
    with pytest.raises(ConfigError, match="sampling_fraction"):
        build_model("calogan", toy_geometry, ConditionSpec.from_data(data), transform, {"sampling_fraction": 0})


@pytest.mark.parametrize(("family", "keys"), [("calogan", ["e_inc"]), ("cond_calogan", list(COND_KEYS))])
def test_trains_through_the_loop(family, keys, toy_geometry, tmp_path):
    path = write_showers(tmp_path / "toy.h5", toy_data(toy_geometry, n=48, seed=5))
    cfg = TrainConfig.from_dict(
        {
            "family": family,
            "model": TINY if family == "calogan" else TINY_COND,
            "transform": {"energy": "gev", "scale": "none"},
            "conditions": keys,
            "data": str(path),
            "batch_size": 8,
            "d_steps": 1,
            "g_steps": 2,
            "lr_d": 2e-5,
            "lr_g": 2e-4,
            "condition_sampling": "dataset",
            "max_steps": 4,
            "val_every": 2,
            "val_bins": 2,
            "checkpoint_every": 2,
            "progress": False,
            "threads": 1,
        }
    )
    result = train(cfg, tmp_path / "run")
    assert result.step == 4
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt.family == family and ckpt.training["opt_g"]["state"][0]["step"].item() == 8  # two G updates per D step
    assert ckpt.training["opt_d"]["state"][0]["step"].item() == 4
    assert isinstance(ckpt.model, CondCaloGAN if family == "cond_calogan" else CaloGAN)


def test_traverse_holds_the_noise_fixed(toy_geometry):
    torch.manual_seed(6)
    data = toy_data(toy_geometry)
    model, spec, _ = make("cond_calogan", toy_geometry, data, COND_KEYS)
    from calogan.interpolate import default_conditions, traverse

    base = default_conditions(spec)
    assert base["x0"] == 0.0 and base["theta"] == spec.ranges[3][0] and base["e_inc"] == 0.5 * sum(spec.ranges[0])  # toy E < 50 GeV
    same = traverse(model, "x0", [5.0, 5.0, 5.0], n_average=4, seed=1)
    assert same.mean_cells.shape == (3, toy_geometry.n_cells)
    np.testing.assert_array_equal(same.mean_cells[0], same.mean_cells[2])  # same noise, same condition: same showers
    moved = traverse(model, "x0", [-10.0, 10.0], n_average=4, seed=1)
    assert not np.array_equal(moved.mean_cells[0], moved.mean_cells[1])
    assert moved.observables["centroid_x"].shape == (2, 2) and moved.observables["e_tot"].shape == (2,)
    assert set(moved.conditions) == {"e_inc", "y0", "theta", "phi"}
    with pytest.raises(ConfigError, match="conditioned on"):
        traverse(model, "eta", [0.0, 1.0])


def test_cli_interpolate(toy_geometry, tmp_path, capsys):
    from calogan.cli import main

    torch.manual_seed(7)
    data = toy_data(toy_geometry)
    model, _, _ = make("cond_calogan", toy_geometry, data, COND_KEYS)
    ckpt = save_checkpoint(tmp_path / "m.pt", model.eval(), step=1)
    fig, js = tmp_path / "theta.png", tmp_path / "theta.json"
    args = ["interpolate", "--model", str(ckpt), "--vary", "theta", "--range", "0.05:0.2", "--steps", "4", "--n-average", "3"]
    assert main([*args, "--fix", "phi=1.0", "-o", str(fig), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "traversal of theta" in out and fig.stat().st_size > 0
    record = __import__("json").loads(js.read_text())
    assert record["values"] == pytest.approx([0.05, 0.1, 0.15, 0.2]) and record["conditions"]["phi"] == 1.0
    assert len(record["observables"]["width_x"]) == 4
    assert main([*args, "-o", str(fig)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--fix", "eta=1", "-o", str(tmp_path / "b.png")]) == 2
    assert "conditioned on" in capsys.readouterr().err


def test_library_errors_name_parameters_and_the_cli_its_flags(toy_geometry, tmp_path, capsys):
    from calogan.cli import main
    from calogan.interpolate import traverse

    torch.manual_seed(7)
    model, _, _ = make("cond_calogan", toy_geometry, toy_data(toy_geometry), COND_KEYS)
    for kwargs, message in [
        (dict(n_average=0), "n_average must be >= 1, got 0"),
        (dict(fixed={"eta": 1.0}), "fixed eta: the model is conditioned on"),
    ]:
        with pytest.raises(ConfigError, match=f"^{message}"):
            traverse(model, "x0", [0.0, 1.0], **kwargs)
    with pytest.raises(ConfigError, match="^key eta: "):
        traverse(model, "eta", [0.0, 1.0])
    ckpt = save_checkpoint(tmp_path / "m.pt", model.eval(), step=1)
    args = ["interpolate", "--model", str(ckpt), "--range", "0:1", "--steps", "2", "-o", str(tmp_path / "f.png")]
    for extra, message in [
        (["--vary", "x0", "--n-average", "0"], "--n-average must be >= 1, got 0"),
        (["--vary", "x0", "--fix", "eta=1"], "--fix eta: the model is conditioned on"),
        (["--vary", "eta"], "--vary eta: the model is conditioned on"),
    ]:
        assert main([*args, *extra]) == 2
        assert capsys.readouterr().err.startswith(f"calogan interpolate: error: {message}")


def test_linear_trend_exact_answers():
    from calogan.interpolate import linear_trend

    v = np.array([0.0, 1.0, 2.0, 3.0])
    obs = np.stack([2.0 * v + 1.0, -v, np.array([1.0, np.nan, 3.0, 4.0]), np.ones(4)], axis=1)  # (4, 4)
    slope, r = linear_trend(v, obs)
    np.testing.assert_allclose(slope[:3], [2.0, -1.0, 1.0])
    np.testing.assert_allclose(r[:2], [1.0, -1.0])
    assert r[2] == pytest.approx(1.0)  # the NaN row is left out, the rest lie on a line
    assert slope[3] == 0.0 and math.isnan(r[3])  # no spread in the observable: no correlation
    s, c = linear_trend(v[:2], v[:2])  # fewer than 3 rows
    assert math.isnan(s) and math.isnan(c)


def test_data_trends_follow_the_impact_point(toy_geometry):
    from calogan.interpolate import data_trends

    # one hot cell in layer 0 at the cell centre nearest to x0: the centroid is that centre
    x0 = np.array([-12.0, -4.0, 4.0, 12.0])
    centres = toy_geometry.cell_centres()[0][toy_geometry.layer_slice(0)]
    cells = np.zeros((4, toy_geometry.n_cells))
    for i, x in enumerate(x0):
        sl = toy_geometry.layer_slice(0)
        cells[i, sl.start + int(np.argmin(np.abs(centres - x)))] = 100.0
    data = ShowerData(toy_geometry, cells, np.full(4, 10.0), conditions={"x0": x0})
    slope, r = data_trends(data, "x0")["centroid_x"]
    hit = centres[[int(np.argmin(np.abs(centres - x))) for x in x0]]
    assert len(set(hit)) > 1  # the toy layer has rows enough to follow x0
    assert slope[0] == pytest.approx(np.polyfit(x0, hit, 1)[0]) and r[0] == pytest.approx(np.corrcoef(x0, hit)[0, 1])
    assert math.isnan(slope[1])  # layer 1 is empty in every shower
    with pytest.raises(ConfigError, match="no condition 'theta'"):
        data_trends(data, "theta")
    with pytest.raises(ConfigError, match="periodic"):
        data_trends(data, "phi")


def test_cli_interpolate_compare(toy_geometry, tmp_path, capsys):
    from calogan.cli import main

    torch.manual_seed(8)
    data = toy_data(toy_geometry)
    model, _, _ = make("cond_calogan", toy_geometry, data, COND_KEYS)
    ckpt = save_checkpoint(tmp_path / "m.pt", model.eval(), step=1)
    ref = write_showers(tmp_path / "ref.h5", data)
    args = ["interpolate", "--model", str(ckpt), "--range=-10:10", "--steps", "3", "--n-average", "2"]
    assert main([*args, "--vary", "x0", "--compare", str(ref), "-o", str(tmp_path / "x0.png")]) == 0
    out = capsys.readouterr().out
    assert "trend against x0" in out and "traversal (means)" in out and "ref.h5 (showers)" in out
    assert main([*args, "--vary", "phi", "--compare", str(ref), "-o", str(tmp_path / "phi.png")]) == 2
    assert "no trend is defined against phi" in capsys.readouterr().err
