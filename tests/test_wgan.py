import numpy as np
import pytest
import torch

from calogan.errors import ConfigError
from calogan.geometry import preset
from calogan.models import FAMILIES, build_model
from calogan.models.base import ConditionSpec
from calogan.models.blocks import Swish
from calogan.models.wgan import WGAN, WGANConfig, physics_fractions
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

SMALL = {"critic_hidden": [16, 16, 16], "generator_hidden": [8, 16], "physics_hidden": [8], "latent_dim": 4}


def make(geometry, data, model=None, keys=("e_inc",), transform=None):
    torch.manual_seed(0)  # a fixed init: a unit dead on a tiny batch would read as a broken graph
    t = ShowerTransform.fit(transform or TransformConfig(), data.cells, data.e_inc)
    spec = ConditionSpec.from_data(data, keys)
    m = build_model("wgan", geometry, spec, t, {**SMALL, **(model or {})})
    m.prepare(data)
    return m, t, spec


def test_registry_builds_the_wgan(toy_geometry):
    assert FAMILIES["wgan"] == "calogan.models.wgan:WGAN"
    m, _, _ = make(toy_geometry, toy_showers(toy_geometry))
    assert isinstance(m, WGAN) and m.family == "wgan" and m.config.latent_dim == 4


def test_output_shapes(toy_geometry):
    data = toy_showers(toy_geometry, n=12)
    m, t, spec = make(toy_geometry, data)
    cond = spec.tensor(data)
    x = m(cond)
    assert x.shape == (12, toy_geometry.n_cells) and (x >= 0).all()  # ReLU output
    assert m.latent(5).shape == (5, 4)
    z = m.latent(12)
    torch.testing.assert_close(m(cond, z), m(cond, z))
    assert m.physics_variables(x, cond).shape == (12, 1 + toy_geometry.n_layers)
    loss, logs = m.discriminator_loss(torch.from_numpy(t.forward(data.cells, data.e_inc)), cond)
    assert loss.dim() == 0 and {"w", "gp", "w_phys"} <= set(logs)
    loss, logs = m.generator_loss(cond)
    assert loss.dim() == 0 and {"g", "g_phys"} <= set(logs)


def test_conditions_with_position_and_particles(toy_geometry):
    n = 10
    data = toy_showers(toy_geometry, n=n, x0=np.linspace(-5, 5, n), theta=np.linspace(0, 0.3, n))
    data = data.__class__(data.geometry, data.cells, data.e_inc, np.where(np.arange(n) % 2, 22, -11), data.conditions)
    m, _, spec = make(toy_geometry, data, keys=("e_inc", "x0", "theta"))
    assert spec.n_cond == 3 + 2 and spec.particles == (-11, 22)
    assert m(spec.tensor(data)).shape == (n, toy_geometry.n_cells)


def test_any_preset_geometry():
    g = preset("atlas-barrel")
    t = ShowerTransform(TransformConfig(), np.zeros(g.n_cells), np.ones(g.n_cells))
    m = WGAN(g, ConditionSpec(), t, WGANConfig())
    assert m(torch.tensor([[10.0], [50.0]])).shape == (2, 266)
    # the ATLAS open config: critic of three dense layers of n_cells units, generator 50-100-200
    assert [layer.out_features for layer in m.critic if isinstance(layer, torch.nn.Linear)] == [266, 266, 266, 1]
    assert [layer.out_features for layer in m.generator if isinstance(layer, torch.nn.Linear)] == [50, 100, 200, 266]
    assert m.generator[0].in_features == 50 + 1


@pytest.mark.parametrize("model", [{}, {"physics_critic": False}, {"physics_features": "total", "output_activation": "linear"}])
def test_gradients_reach_every_parameter(toy_geometry, model):
    data = toy_showers(toy_geometry, n=16)
    m, t, spec = make(toy_geometry, data, model=model, transform=TransformConfig(log=True, scale="standard") if model else None)
    cond = spec.tensor(data)
    real = torch.from_numpy(t.forward(data.cells, data.e_inc))
    loss, _ = m.discriminator_loss(real, cond)
    loss.backward()
    # A critic's output bias shifts D(real) and D(fake) alike and cancels from the Wasserstein
    # loss: its gradient is exactly zero unless the drift penalty is on (checked below).
    output_biases = [m.critic[-1].bias] + ([m.physics[-1].bias] if m.physics is not None else [])
    for name, p in m.named_parameters():
        if any(p is q for q in m.discriminator_parameters()):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert (p.grad.abs().sum() > 0) != any(p is b for b in output_biases), name
        else:  # the fakes are constants of the critic update
            assert p.grad is None, name
    m.zero_grad(set_to_none=True)
    loss, _ = m.generator_loss(cond)
    loss.backward()
    gen = m.generator_parameters()
    assert len(gen) + len(m.discriminator_parameters()) == len(list(m.parameters()))
    for p in gen:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_drift_penalty_trains_the_output_bias(toy_geometry):
    data = toy_showers(toy_geometry, n=16)
    m, t, spec = make(toy_geometry, data, model={"drift": 1e-3})
    m.discriminator_loss(torch.from_numpy(t.forward(data.cells, data.e_inc)), spec.tensor(data))[0].backward()
    assert m.critic[-1].bias.grad.abs().sum() > 0


def test_physics_critic_gradient_flows_through_the_inverse_transform(toy_geometry):
    # With the cell critic's output cut off, the generator still learns from the physics critic.
    data = toy_showers(toy_geometry, n=16)
    m, _, spec = make(toy_geometry, data)
    for p in m.critic.parameters():
        torch.nn.init.zeros_(p)
    loss, logs = m.generator_loss(spec.tensor(data))
    loss.backward()
    assert logs["g"] == 0
    assert all(p.grad.abs().sum() > 0 for p in m.generator_parameters())


def test_physics_fractions_known_values():
    layer_matrix = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    cells = torch.tensor([[100.0, 300.0, 600.0]])  # MeV
    out = physics_fractions(cells, torch.tensor([2.0]), layer_matrix, with_layers=True)
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.2, 0.3]]))
    assert physics_fractions(cells, torch.tensor([2.0]), layer_matrix, with_layers=False).shape == (1, 1)


def test_prepare_standardises_the_physics_variables(toy_geometry):
    data = toy_showers(toy_geometry, n=50, seed=1)
    # toy showers deposit exactly half their energy: give the total a spread to standardise
    data = data.__class__(data.geometry, data.cells * np.random.default_rng(0).uniform(0.8, 1.2, (50, 1)), data.e_inc)
    m, t, spec = make(toy_geometry, data, model={"physics_scaling": "none"})
    p = m.physics_variables(torch.from_numpy(t.forward(data.cells, data.e_inc)), spec.tensor(data)).double()
    torch.testing.assert_close(p.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(p.std(0), torch.ones(3, dtype=torch.float64), atol=1e-3, rtol=0)


def test_physics_variables_stay_float32_under_bf16_autocast(toy_geometry):
    # bf16 would round E_tot / E_inc to 3 digits: more than a high-energy shower's spread
    data = toy_showers(toy_geometry, n=16, seed=1)
    m, t, spec = make(toy_geometry, data)
    x, cond = torch.from_numpy(t.forward(data.cells, data.e_inc)), spec.tensor(data)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        p = m.physics_variables(x.bfloat16(), cond)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p, m.physics_variables(x.bfloat16().float(), cond))


def test_swish_known_values_and_trainable_beta():
    act = Swish(2, beta=1.0)
    x = torch.tensor([[0.0, 1.0], [-2.0, 3.0]])
    torch.testing.assert_close(act(x), x * torch.sigmoid(x))
    with torch.no_grad():
        act.beta.fill_(2.0)
    torch.testing.assert_close(act(x), x * torch.sigmoid(2 * x))
    act(x).sum().backward()
    assert act.beta.grad.shape == (2,) and (act.beta.grad.abs() > 0).all()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"generator_activation": "tanh"}, "model.generator_activation must be one of"),
        ({"lambda_gp": -1.0}, "model.lambda_gp must be >= 0"),
        ({"critic_hidden": []}, "model.critic_hidden must be a non-empty list"),
        ({"lamda_gp": 10.0}, "unknown option model.lamda_gp; valid options of model: "),
        ({"latent_dim": "fifty"}, "option model.latent_dim must be an integer"),
    ],
)
def test_bad_model_options_are_named(toy_geometry, config, message):
    data = toy_showers(toy_geometry)
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    with pytest.raises(ConfigError, match=message):
        build_model("wgan", toy_geometry, ConditionSpec(), t, config)


def test_unknown_family_is_named(toy_geometry):
    with pytest.raises(ConfigError, match="unknown model family 'flow'; known: "):
        build_model("flow", toy_geometry, ConditionSpec(), None, {})


@pytest.mark.parametrize("transform", [TransformConfig(), TransformConfig(scale="standard"), TransformConfig(log=True, scale="standard")])
def test_relu_output_makes_exact_zeros_in_any_transform(toy_geometry, transform):
    data = toy_showers(toy_geometry, n=16)
    m, t, spec = make(toy_geometry, data, transform=transform)
    with torch.no_grad():
        m.generator[-1].bias.fill_(-1e3)  # every cell pushed below empty
        cells = t.inverse(m(spec.tensor(data)), spec.tensor(data)[:, 0])
    assert (cells == 0).all()


def test_moment_matching_loss_known_values():
    from calogan.losses import moment_matching_loss

    features = torch.tensor([[1.0], [3.0], [10.0], [10.0]])
    groups = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]])
    # group 0: mean 2, std sqrt(2); group 1: mean 10, std 0
    target_mean, target_std = torch.tensor([[2.0], [9.0]]), torch.tensor([[2.0**0.5], [1.0]])
    torch.testing.assert_close(moment_matching_loss(features, groups, target_mean, target_std), torch.tensor(1.0), atol=1e-5, rtol=0)
    lonely = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 1]])  # a group of one has no spread: left out
    out = moment_matching_loss(
        features, lonely, torch.tensor([[14.0 / 3], [0.0]]), torch.tensor([[float(np.std([1, 3, 10], ddof=1))], [0.0]])
    )
    torch.testing.assert_close(out, torch.tensor(0.0), atol=1e-5, rtol=0)


def test_moment_targets_and_generator_term(toy_geometry):
    data = toy_showers(toy_geometry, n=60, seed=4)
    data = data.__class__(data.geometry, data.cells * np.random.default_rng(1).uniform(0.8, 1.2, (60, 1)), data.e_inc)
    m, t, spec = make(toy_geometry, data, model={"moment_weight": 1.0, "moment_bins": 3})
    # three bins of equal population in the training energies
    counts = m._groups(torch.log(torch.from_numpy(data.e_inc)).float(), m.moment_edges).sum(0)
    assert counts.tolist() == [20.0, 20.0, 20.0]
    # the training showers themselves match their targets exactly
    p = m.physics_variables(torch.from_numpy(t.forward(data.cells, data.e_inc)), spec.tensor(data))
    groups = m._groups(torch.log(spec.tensor(data)[:, 0]), m.moment_edges)
    from calogan.losses import moment_matching_loss

    assert moment_matching_loss(p, groups, m.moment_mean, m.moment_std) < 1e-3
    _, logs = m.generator_loss(spec.tensor(data))
    assert "g_mom" in logs and logs["g_mom"] > 0
    with pytest.raises(ConfigError, match="model.moment_weight needs model.physics_critic: true"):
        WGANConfig(physics_critic=False, moment_weight=1.0)


def test_cell_noise_is_drawn_from_the_latent_and_learned(toy_geometry):
    data = toy_showers(toy_geometry, n=16)
    m, _, spec = make(toy_geometry, data, model={"cell_noise": True})
    assert m.config.latent_dim == 4 and m.latent(3).shape == (3, 4)  # the latent keeps its width
    cond = spec.tensor(data)
    z = m.latent(16)
    torch.testing.assert_close(m(cond, z), m(cond, z))  # a seed still fixes every shower
    noise = m.cell_noise(torch.randn(20000, 4, generator=torch.Generator().manual_seed(1)))  # (N, n_cells)
    torch.testing.assert_close(noise.mean(0), torch.zeros(toy_geometry.n_cells), atol=0.03, rtol=0)
    torch.testing.assert_close(noise.std(0), torch.ones(toy_geometry.n_cells), atol=0.03, rtol=0)
    corr = torch.corrcoef(noise.T) - torch.eye(toy_geometry.n_cells)
    assert corr.abs().max() < 0.05  # practically independent cells
    m.generator_loss(cond)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.noise_scale.parameters())
    assert all(any(p is q for q in m.generator_parameters()) for p in m.noise_scale.parameters())


def test_cell_noise_starts_at_a_third_of_each_cells_spread(toy_geometry):
    data = toy_showers(toy_geometry, n=200, seed=5)
    cells = data.cells.copy()
    cells[:, 3] = 0.0  # a cell no shower reaches
    data = data.__class__(data.geometry, cells, data.e_inc, data.pdg)
    m, t, spec = make(toy_geometry, data, model={"cell_noise": True, "moment_bins": 1})
    with torch.no_grad():
        scale = torch.exp(m.noise_scale(spec.normalise(spec.tensor(data)))).mean(0)  # (n_cells,)
    spread = torch.from_numpy(t.forward(data.cells, data.e_inc)).std(0)
    assert scale[3] < 1e-6
    hit = torch.arange(toy_geometry.n_cells) != 3
    torch.testing.assert_close(scale[hit], 0.3 * spread[hit], rtol=0.02, atol=0)


HITS = TransformConfig(energy="gev", log=True, scale="hits")
FIDELITY = {
    "output_activation": "linear",
    "physics_features": "shapes",
    "physics_scaling": "binned",
    "physics_bins": 2,
    "physics_batch_std": True,
    "layer_energies": True,
    "marginal_weight": 1.0,
    "marginal_chunks": 2,
    "init_output": True,
}


def sparse_showers(geometry, n=24, seed=0):
    """Toy showers with empty cells: about half the cells of each shower are zero."""
    d = toy_showers(geometry, n=n, seed=seed)
    keep = np.random.default_rng(seed + 1).random(d.cells.shape) < 0.5
    keep[:, 0] = True  # every shower hits its first cell
    return d.__class__(d.geometry, (d.cells * keep).astype(np.float32), d.e_inc, d.pdg)


def test_fidelity_options_shapes_gradients_and_round_trip(toy_geometry, tmp_path):
    data = sparse_showers(toy_geometry)
    m, t, spec = make(toy_geometry, data, model=FIDELITY, transform=HITS)
    cond = spec.tensor(data)
    real = t.dequantise(torch.from_numpy(t.forward(data.cells, data.e_inc)))
    n_phys = 1 + 7 * toy_geometry.n_layers
    assert m.physics_variables(real, cond).shape == (24, n_phys)
    m.discriminator_loss(real, cond)[0].backward()
    m.zero_grad(set_to_none=True)
    loss, logs = m.generator_loss(cond, real)
    assert "g_marg" in logs
    loss.backward()
    for name, p in m.named_parameters():
        if any(p is q for q in m.generator_parameters()):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert any(p is m.layer_head.weight for p in m.generator_parameters())
    # init_output: the untrained generator starts near the mean model-space shower
    x_mean = torch.from_numpy(t.forward(data.cells, data.e_inc)).mean(0)
    torch.testing.assert_close(m.generator[-1].bias.detach(), x_mean)
    # save/load round trip through the one checkpoint loader
    from calogan.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "m.pt", m, step=1)
    z = m.latent(24)
    torch.testing.assert_close(load_checkpoint(tmp_path / "m.pt").model(cond, z), m.eval()(cond, z))


def test_layer_energies_set_each_layers_sum(toy_geometry):
    data = sparse_showers(toy_geometry)
    m, t, spec = make(toy_geometry, data, model=FIDELITY, transform=HITS)
    cond = spec.tensor(data)
    x = torch.from_numpy(t.forward(data.cells, data.e_inc))
    target = torch.tensor([[0.5, -1.0]]).expand(24, 2)  # standardised log10 E_layer / E_inc
    out = m._rescale_layers(x, target, cond[:, 0])
    sums = t.inverse(out, cond[:, 0]) @ m.layer_matrix
    expect = torch.pow(10.0, target * m.layer_std + m.layer_mean) * 1000.0 * cond[:, :1]
    torch.testing.assert_close(sums, expect, rtol=1e-4, atol=1e-6)
    assert ((out > t.threshold()) == (x > t.threshold())).all()  # the hit pattern is the generator's own


def test_shape_features_known_values():
    from calogan.geometry import Geometry, Layer
    from calogan.models.wgan import shape_features

    g = Geometry("g", (Layer("a", (1, 3), (1.0, 10.0)),))
    cells = torch.tensor([[1000.0, 3000.0, 0.0]])  # MeV; cell centres y = -10, 0, 10 mm
    f = shape_features(cells, torch.tensor([8.0]), torch.ones(3, 1), torch.from_numpy(np.stack(g.cell_centres())).float(), [slice(0, 3)])
    # log10 E_tot/E_inc, log10 E_l/E_inc, centroid x, log width x, centroid y, log width y, E_ratio
    expect = [np.log10(0.5 + 1e-7), np.log10(0.5 + 1e-7), 0.0, 0.0, -2.5, 0.5 * np.log(18.75 + 1), (3000 - 1000) / (4000 + 1e-3)]
    assert f[0].tolist() == pytest.approx(expect, rel=1e-5)


def test_fidelity_options_need_the_hits_transform(toy_geometry):
    data = sparse_showers(toy_geometry)
    with pytest.raises(ConfigError, match="model.layer_energies needs the transform scale 'hits'"):
        make(toy_geometry, data, model=FIDELITY, transform=TransformConfig(log=True, scale="standard"))
