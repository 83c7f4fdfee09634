import numpy as np
import pytest
import torch

from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.cli import main
from calogan.data import Conditions, ShowerData
from calogan.errors import ConfigError
from calogan.fastsim import latent_noise
from calogan.generate import conditions_from_file, generate, generate_to_file, parse_values, sample_conditions
from calogan.io import inspect, read_showers, write_showers
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers


def make_model(data, keys=("e_inc",)):
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    m = build_model("wgan", data.geometry, ConditionSpec.from_data(data, keys), t, {"critic_hidden": [8], "latent_dim": 3})
    m.prepare(data)
    return m.eval()


@pytest.fixture
def data(toy_geometry):
    return toy_showers(toy_geometry, n=30, x0=np.linspace(-4.0, 4.0, 30))


@pytest.fixture
def checkpoint(data, tmp_path):
    return save_checkpoint(tmp_path / "best.pt", make_model(data), step=1, data_attrs={"convention": "active", "particle": "e+"})


def test_parse_values_rules():
    rng = np.random.default_rng(0)
    assert set(parse_values("50")(rng, 10)) == {50.0}
    assert set(parse_values("1,2,4")(rng, 200)) == {1.0, 2.0, 4.0}
    u = parse_values("1:100")(rng, 1000)
    assert u.min() >= 1 and u.max() <= 100 and 40 < u.mean() < 60
    lg = parse_values("1:100:log")(rng, 4000)
    assert lg.min() >= 1 and lg.max() <= 100 and abs(np.median(lg) - 10) < 1.5  # log-uniform: median sqrt(1 * 100)
    for bad in ("a:b", "1:2:3", "", "5:1", "0:10:log"):
        with pytest.raises(ConfigError, match="--energy"):
            parse_values(bad)(rng, 1)


def test_library_errors_name_parameters_and_the_cli_its_flags(data, checkpoint, tmp_path, capsys):
    from calogan.cli import main

    spec = ConditionSpec.from_data(data, ("e_inc",))
    for kwargs, message in [
        (dict(n=0), "n must be >= 1, got 0"),
        (dict(n=3, energy="ten"), "energy must be A:B"),
        (dict(n=3, energy="-2:-1"), "energy '-2:-1' gives non-positive energies"),
        (dict(n=3, particle="muon"), "particle: unknown particle 'muon'"),
    ]:
        with pytest.raises(ConfigError, match=f"^{message}"):
            list(sample_conditions(spec, **kwargs))
    for extra, message in [
        (["-n", "0"], "-n must be >= 1, got 0"),
        (["-n", "3", "--energy=-2:-1"], "--energy '-2:-1' gives non-positive energies"),
        (["-n", "3", "--particle", "muon"], "--particle: unknown particle 'muon'"),
    ]:
        assert main(["generate", "--model", str(checkpoint), "-o", str(tmp_path / "g.h5"), *extra]) == 2
        assert capsys.readouterr().err.startswith(f"calogan generate: error: {message}")


def test_sample_conditions_chunks_and_defaults(data):
    spec = ConditionSpec.from_data(data, ("e_inc", "x0"))
    chunks = list(sample_conditions(spec, 25, energy="2:3", seed=1, chunk_size=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    e = np.concatenate([c.e_inc for c in chunks])
    x0 = np.concatenate([c.conditions["x0"] for c in chunks])
    assert e.min() >= 2 and e.max() <= 3 and x0.min() >= -4 and x0.max() <= 4  # x0 over its training range
    assert all((c.pdg == -11).all() for c in chunks)  # the model's only particle
    again = np.concatenate([c.e_inc for c in sample_conditions(spec, 25, energy="2:3", seed=1, chunk_size=10)])
    np.testing.assert_array_equal(e, again)
    fixed = next(sample_conditions(spec, 4, energy="5", extra={"x0": "1.5"}))
    assert (fixed.conditions["x0"] == 1.5).all()
    with pytest.warns(UserWarning, match=r"e_inc outside the training range \[1.02\d*, 9.97\d*\]: the model extrapolates"):
        next(sample_conditions(spec, 4, energy="50"))
    with pytest.raises(ConfigError, match="the model was trained on e\\+, not gamma"):
        next(sample_conditions(spec, 4, particle="gamma"))
    with pytest.raises(ConfigError, match="not conditioned on \\['theta'\\]"):
        next(sample_conditions(spec, 4, extra={"theta": "0"}))


def test_generate_is_seeded_batched_and_physical(data):
    model = make_model(data)
    conds = Conditions(np.linspace(1, 10, 23), np.full(23, -11))
    out = list(generate(model, conds, seed=5, batch_size=10))
    assert [len(d) for d in out] == [10, 10, 3]
    cells = np.concatenate([d.cells for d in out])
    assert cells.shape == (23, data.geometry.n_cells) and (cells >= 0).all() and np.isfinite(cells).all()
    np.testing.assert_array_equal(np.concatenate([d.e_inc for d in out]), conds.e_inc)
    same = np.concatenate([d.cells for d in generate(model, conds, seed=5, batch_size=10)])
    other = np.concatenate([d.cells for d in generate(model, conds, seed=6, batch_size=10)])
    np.testing.assert_array_equal(cells, same)
    assert not np.array_equal(cells, other)
    # the same showers as the model's own forward pass and inverse transform, on the run's counter-based noise
    cond = torch.from_numpy(conds.e_inc[:10, None].astype(np.float32))
    with torch.no_grad():
        direct = model.transform.inverse(model(cond, torch.from_numpy(latent_noise(5, 0, 10, 3))), cond[:, 0])
    np.testing.assert_allclose(cells[:10], direct.numpy(), rtol=1e-6)


def test_generate_to_file_is_readable_and_carries_conditions(data, tmp_path):
    model = make_model(data, ("e_inc", "x0"))
    chunks = sample_conditions(model.conditions, 50, energy="1:10", seed=0, chunk_size=16)
    n = generate_to_file(tmp_path / "gen.h5", model, chunks, seed=0, batch_size=7, attrs={"convention": "active"})
    info = inspect(tmp_path / "gen.h5")
    assert n == 50 and info.n == 50 and info.particle == "e+" and info.conditions == ("x0",)
    assert info.attrs["convention"] == "active" and info.geometry == data.geometry


def test_cli_generate_sampled(checkpoint, tmp_path, capsys):
    out = tmp_path / "gen.h5"
    assert (
        main(
            [
                "generate",
                "--model",
                str(checkpoint),
                "--particle",
                "e+",
                "--energy",
                "2:9",
                "-n",
                "40",
                "--seed",
                "3",
                "-o",
                str(out),
                "--batch-size",
                "16",
            ]
        )
        == 0
    )
    assert "wrote 40 showers" in capsys.readouterr().out
    g = read_showers(out)
    assert len(g) == 40 and g.e_inc.min() >= 2 and g.e_inc.max() <= 9 and (g.pdg == -11).all()
    assert inspect(out).attrs["convention"] == "active" and inspect(out).attrs["generator"] == "calogan wgan"
    assert main(["info", str(out)]) == 0
    assert main(["generate", "--model", str(checkpoint), "-n", "5", "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_cli_generate_energy_from_reference_keeps_its_order(checkpoint, data, tmp_path):
    ref = write_showers(tmp_path / "ref.h5", data.select(np.arange(30)[::-1]))
    out = tmp_path / "gen.h5"
    assert main(["generate", "--model", str(checkpoint), "--energy-from", str(ref), "-o", str(out), "--batch-size", "8"]) == 0
    g, r = read_showers(out), read_showers(ref)
    np.testing.assert_array_equal(g.e_inc, r.e_inc)
    assert len(list(conditions_from_file(ref, load_checkpoint(checkpoint).model.conditions, chunk_size=8))) == 4


def test_cli_generate_errors(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "g.h5")
    cases = [
        (["--particle", "gamma", "-n", "5"], "the model was trained on e+, not gamma"),
        ([], "pass -n N (with --energy) or --energy-from REF.h5"),
        (["--energy-from", "ref.h5", "-n", "3"], "--energy-from takes the conditions from the file"),
        (["-n", "3", "--energy", "ten"], "--energy must be A:B"),
        (["-n", "3", "--condition", "x0"], "--condition expects KEY=RULE"),
    ]
    for extra, message in cases:
        assert main(["generate", "--model", str(checkpoint), "-o", out, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("calogan generate: error: ") and message in err, err
    assert main(["generate", "--model", str(tmp_path / "none.pt"), "-n", "3", "-o", out]) == 2
    assert "none.pt: no such checkpoint" in capsys.readouterr().err


def test_conditions_behave_like_shower_data(data):
    c = Conditions.from_data(data)
    spec = ConditionSpec.from_data(data, ("e_inc", "x0"))
    torch.testing.assert_close(spec.tensor(c), spec.tensor(data))
    assert isinstance(data, ShowerData) and len(c.select(slice(0, 4))) == 4
