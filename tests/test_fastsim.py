import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from calogan.checkpoint import save_checkpoint
from calogan.config import config_from_dict
from calogan.errors import ConfigError
from calogan.export import export_onnx
from calogan.fastsim import (
    OnnxBackend,
    ParametrizedBackend,
    Route,
    RouteConfig,
    Router,
    RouterConfig,
    TorchBackend,
    derive_seed,
    latent_noise,
    load_backend,
    load_router,
    track_conditions,
)
from calogan.geometry import Geometry, Layer
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.simulate import simulate
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

GEOMETRY = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def wgan(keys=("e_inc",)):
    """A tiny e+ WGAN trained on nothing, for E in [1, 10] GeV (and x0 in [-5, 5] mm)."""
    data = toy_showers(GEOMETRY, n=40, **({"x0": np.linspace(-5, 5, 40)} if "x0" in keys else {}))
    data = type(data)(GEOMETRY, data.cells, np.linspace(1.0, 10.0, 40), data.pdg, data.conditions)
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    m = build_model(
        "wgan", GEOMETRY, ConditionSpec.from_data(data, keys), t, {"latent_dim": 4, "generator_hidden": [16], "critic_hidden": [8]}
    )
    m.prepare(data)
    with torch.no_grad():
        m.generator[-1].bias.add_(0.5)
    return m.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint and its ONNX export (active convention)."""
    folder = tmp_path_factory.mktemp("fastsim")
    model = wgan()
    ckpt = save_checkpoint(folder / "best.pt", model, step=5, data_attrs={"convention": "active", "particle": "e+"})
    onnx = export_onnx(model, folder / "model.onnx", attrs={"convention": "active", "particle": "e+", "step": 5}, n_check=32).path
    return ckpt, onnx


@pytest.fixture
def router(files):
    onnx = files[1]
    gan = Route("gan", (-11,), (1.0, 10.0), OnnxBackend(onnx, threads=1))
    fallback = Route("param", (-11, 22, 211), (0.5, 50.0), ParametrizedBackend(GEOMETRY, mode="active", energy=(0.5, 50.0)))
    return Router([gan], fallback, seed=3)


def test_latent_noise_is_counter_based():
    z = latent_noise(11, 0, 40, 7)
    assert z.shape == (40, 7) and z.dtype == np.float32
    parts = np.concatenate([latent_noise(11, 0, 1, 7), latent_noise(11, 1, 16, 7), latent_noise(11, 17, 23, 7)])
    np.testing.assert_array_equal(parts, z)  # any batching, the same noise
    np.testing.assert_array_equal(latent_noise(11, 5, 3, 7), z[5:8])
    assert not np.array_equal(latent_noise(12, 0, 40, 7), z)
    big = latent_noise(0, 0, 20000, 50)
    assert abs(big.mean()) < 0.005 and abs(big.std() - 1) < 0.005 and np.abs(big).max() <= 5.8
    assert abs(np.corrcoef(big[:, 0], big[:, 25])[0, 1]) < 0.03  # the cos and sin halves of Box-Muller
    with pytest.raises(ConfigError, match="seed must be in"):
        latent_noise(-1, 0, 1, 1)


def test_track_conditions_conventions():
    c = track_conditions(3, [[1.0, 2.0, 0.0], [0.0, 0.0, -10.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [0.6, 0.0, 0.8], [0.0, -0.6, 0.8]])
    np.testing.assert_allclose(c["theta"], [0.0, math.acos(0.8), math.acos(0.8)])
    np.testing.assert_allclose(c["phi"], [0.0, 0.0, 1.5 * math.pi])  # from x towards y, in [0, 2 pi)
    np.testing.assert_allclose(c["x0"], [1.0, 7.5, 0.0])  # (0, 0, -10) carried 10 mm along (0.6, 0, 0.8)
    np.testing.assert_allclose(c["y0"], [2.0, 0.0, 0.0])
    d = track_conditions(2, None, [[0.2, -0.5], [0.0, 7.0]])
    np.testing.assert_allclose(d["theta"], [0.2, 0.0])
    np.testing.assert_allclose(d["phi"], [2 * math.pi - 0.5, 7.0 - 2 * math.pi])
    assert all((v == 0).all() for v in track_conditions(4).values())
    bad = [
        (dict(position=[1.0, 2.0]), r"position must have shape \(B, 2\) or \(B, 3\) with B = 2"),
        (dict(position=[[0, 0, 5.0], [0, 0, 0]]), "position z must be <= 0"),
        (dict(direction=[[0, 0, 1], [0, 0, 2]]), "row 1 has length 2"),
        (dict(direction=[[0, 0, 1], [1, 0, 0]]), r"into the calorimeter \(dz > 0\); row 1"),
        (dict(direction=[[0.0, 0.0], [2.0, 0.0]]), r"theta must be in \[0, pi/2\)"),
        (dict(position=[[np.nan, 0], [0, 0]]), "position must be finite"),
        (dict(position=[[0, 0], [0, 0, 0]]), "got ragged or non-numeric rows"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ConfigError, match=message):
            track_conditions(2, **kwargs)


def test_router_choices_and_fallback(router):
    particles = ["e+", "e+", "e+", "gamma", "pi+", "e+"]
    energy = [5.0, 30.0, 5.0, 5.0, 5.0, 10.0]
    position = [[0, 0], [0, 0], [20.0, 0], [0, 0], [0, 0], [0, 0]]
    names = router.assign(particles, energy, position)
    # in range and centred -> the model; above its range, off-centre, other particles -> the fallback
    assert list(names) == ["gan", "param", "param", "param", "param", "gan"]
    assert list(router.assign("e+", [5.0], direction=[[0.01, 0.0]])) == ["param"]  # tilted: the model knows only along z
    assert list(router.assign(["mu+", "e+"], [5.0, 80.0])) == ["", ""]


def test_router_simulates_each_shower_with_its_backend(router, files):
    particles = ["e+", "gamma", "e+", "e+"]
    energy = np.array([2.0, 3.0, 40.0, 9.0])
    cells = router.simulate(particles, energy, seed=7)
    assert cells.shape == (4, GEOMETRY.n_cells) and cells.dtype == np.float32 and (cells >= 0).all()
    np.testing.assert_array_equal(router.simulate(particles, energy, seed=7), cells)
    assert not np.array_equal(router.simulate(particles, energy, seed=8), cells)
    # route 0 (the model) got showers 0 and 3 with its sub-seed; the fallback showers 1 and 2 with its own
    gan = OnnxBackend(files[1], threads=1)
    np.testing.assert_allclose(cells[[0, 3]], gan.generate(np.array([[2.0], [9.0]], np.float32), derive_seed(7, 0)), rtol=1e-6)
    g = simulate(GEOMETRY, "gamma", [3.0], seed=derive_seed(derive_seed(7, 1), 22), mode="active", x0=0.0, y0=0.0, theta=0.0, phi=0.0)
    np.testing.assert_array_equal(cells[1], g.cells[0])
    # no seed: the router's own sequence, different at each call and reproducible from its seed
    a, b = router.simulate(particles, energy), router.simulate(particles, energy)
    assert not np.array_equal(a, b)


def test_router_errors(router, files):
    cases = [
        (("mu+", [5.0]), "particle mu\\+ is not simulated by any route"),
        (("e+", [5.0, 80.0]), "no route covers e\\+ at 80 GeV: it is outside every range"),
        (("tau", [5.0]), "unknown particle 'tau'"),
        ((["e+", "e+"], [5.0]), "particle must be one name or PDG code, or B = 1"),
        (("e+", [[5.0]]), "energy must be a 1-D array"),
        (("e+", [-1.0]), "energies must be finite and > 0 GeV"),
    ]
    for args, message in cases:
        with pytest.raises(ConfigError, match=message):
            router.simulate(*args)
    with pytest.raises(ConfigError, match=r"position must have shape"):
        router.simulate("e+", [5.0, 6.0], position=[[0.0, 0.0]])
    other = Geometry("toy2", GEOMETRY.layers[:1])
    with pytest.raises(ConfigError, match="one router, one geometry"):
        Router([router.routes[0]], Route("p", (22,), (1.0, 2.0), ParametrizedBackend(other, mode="active", energy=(1, 2))))
    with pytest.raises(ConfigError, match="disagree on the cell convention"):
        Router([router.routes[0]], Route("p", (22,), (1.0, 2.0), ParametrizedBackend(GEOMETRY, mode="total", energy=(1, 2))))


def test_backends_agree_and_check_their_range(files):
    ckpt, onnx = files
    torch_b, onnx_b = load_backend(ckpt), load_backend(onnx, threads=1)
    assert isinstance(torch_b, TorchBackend) and isinstance(onnx_b, OnnxBackend)
    assert torch_b.convention == onnx_b.convention == "active" and torch_b.particles == onnx_b.particles == (-11,)
    e = np.linspace(1.0, 10.0, 9)
    a, b = torch_b.simulate("e+", e, seed=4), onnx_b.simulate(-11, e, seed=4)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * a.max())
    with pytest.raises(ConfigError, match=r"cannot simulate e\+ at 20 GeV"):
        torch_b.simulate("e+", [20.0])
    with pytest.raises(ConfigError, match="cannot simulate gamma at 5 GeV"):
        onnx_b.simulate("gamma", [5.0])
    with pytest.raises(ConfigError, match=r"entering at \(3, 0\) mm"):
        onnx_b.simulate("e+", [5.0], position=[[3.0, 0.0]])
    # a model trained on x0 covers x0 within its range, but still only the beam along z
    xb = TorchBackend(wgan(("e_inc", "x0")))
    assert xb.simulate("e+", [5.0], position=[[3.0, 0.0]], seed=1).shape == (1, GEOMETRY.n_cells)
    with pytest.raises(ConfigError, match="cannot simulate"):
        xb.simulate("e+", [5.0], position=[[8.0, 0.0]])
    with pytest.raises(ConfigError, match="cannot simulate"):
        xb.simulate("e+", [5.0], position=[[3.0, 1.0]])


def test_torch_precision_and_device_paths(files):
    ckpt, onnx = files
    fp32 = load_backend(ckpt)
    cond = np.linspace(1, 10, 16, dtype=np.float32)[:, None]
    ref = fp32.generate(cond, 1)
    bf16 = load_backend(ckpt, precision="bf16")  # the autocast path, on the CPU here
    got = bf16.generate(cond, 1)
    assert got.dtype == np.float32 and not np.array_equal(got, ref)
    np.testing.assert_allclose(got, ref, rtol=0.05, atol=0.02 * ref.max())
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            load_backend(ckpt, device="cuda")
    with pytest.raises(ConfigError, match="precision must be one of"):
        load_backend(ckpt, precision="fp8")
    with pytest.raises(ConfigError, match="backend torch needs a checkpoint"):
        load_backend(onnx, backend="torch")
    with pytest.raises(ConfigError, match="backend onnxruntime needs an exported .onnx file"):
        load_backend(ckpt, backend="onnxruntime")
    with pytest.raises(ConfigError, match="precision and compile are torch options"):
        load_backend(onnx, compile=True)
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        load_backend(ckpt, device="tpu")


def test_parametrized_backend_is_the_simulator():
    b = ParametrizedBackend(GEOMETRY, mode="total", energy=(1.0, 20.0), particles=["e+", "pi+"])
    pos, d = [[2.0, -1.0], [0.0, 0.0]], [[0.1, 0.5], [0.0, 0.0]]
    cells = b.simulate(["e+", "pi+"], [4.0, 6.0], position=pos, direction=d, seed=9)
    e = simulate(GEOMETRY, "e+", [4.0], seed=derive_seed(9, -11), mode="total", x0=2.0, y0=-1.0, theta=0.1, phi=0.5)
    np.testing.assert_array_equal(cells[0], e.cells[0])
    with pytest.raises(ConfigError, match=r"cannot simulate gamma at 4 GeV"):
        b.simulate("gamma", [4.0])
    with pytest.raises(ConfigError, match="does not model mu-"):
        ParametrizedBackend(GEOMETRY, mode="total", energy=(1, 2), particles=["mu-"])
    with pytest.raises(ConfigError, match="mode must be one of"):
        ParametrizedBackend(GEOMETRY, mode="visible", energy=(1, 2))


def test_load_router_from_yaml(files, tmp_path):
    ckpt, onnx = files
    table = {
        "convention": "active",
        "seed": 2,
        "routes": [
            {"backend": "onnxruntime", "model": str(onnx), "threads": 1},
            {"name": "t", "backend": "torch", "model": str(ckpt), "energy": [0.5, 12]},
        ],
        "fallback": {"backend": "parametrized", "particles": ["e+", "gamma"], "energy": [0.1, 100]},
    }
    path = tmp_path / "route.yaml"
    path.write_text(yaml.safe_dump(table))
    r = load_router(path)
    assert [x.name for x in r.table] == ["onnxruntime:model.onnx", "t", "parametrized-active"]
    assert r.routes[0].energy == pytest.approx((1.0, 10.0)) and r.routes[1].energy == (0.5, 12.0)  # default: the model's range
    assert r.geometry == GEOMETRY and r.convention == "active" and r.fallback.particles == (-11, 22)
    assert list(r.assign("e+", [5.0, 11.0, 50.0])) == ["onnxruntime:model.onnx", "t", "parametrized-active"]

    def broken(change, message):
        bad = yaml.safe_load(yaml.safe_dump(table))
        change(bad)
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=message):
            load_router(path)

    broken(lambda t: t["routes"][0].update(modle="x"), r"route.yaml: unknown option routes\[0\].modle")
    broken(lambda t: t["routes"][0].pop("model"), r"route.yaml: routes\[0\]: backend onnxruntime needs model: PATH")
    broken(lambda t: t["fallback"].pop("energy"), r"fallback: the parametrized backend needs energy")
    broken(lambda t: t["routes"][1].update(particles=["gamma"]), r"routes\[1\]: .*best.pt was trained on e\+, not gamma")
    broken(lambda t: t.update(convention="total"), "disagree on the cell convention")
    broken(lambda t: t["routes"][0].update(backend="tensorflow"), "backend must be one of torch, onnxruntime, parametrized")
    broken(lambda t: t.update(geometry="calogan"), r"routes\[0\]: the model simulates geometry 'toy', the table names 'calogan'")


def test_sample_routing_table_is_valid():
    values = yaml.safe_load((CONFIGS / "fastsim_eplus.yaml").read_text())
    config = config_from_dict(RouterConfig, values, where="")
    routes = [config_from_dict(RouteConfig, r, where="routes") for r in config.routes]
    fallback = config_from_dict(RouteConfig, config.fallback, where="fallback")
    assert [r.backend for r in routes] == ["onnxruntime"] and fallback.backend == "parametrized"
    assert config.geometry == "calogan" and config.convention == "active"
    ParametrizedBackend(config.geometry, mode=config.convention, energy=fallback.energy, particles=fallback.particles)
