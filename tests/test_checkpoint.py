import re

import numpy as np
import pytest
import torch

from calogan import __version__
from calogan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers


@pytest.fixture
def model(toy_geometry):
    data = toy_showers(toy_geometry, n=20, x0=np.linspace(-3, 3, 20))
    t = ShowerTransform.fit(TransformConfig(log=True, scale="standard"), data.cells, data.e_inc)
    m = build_model("wgan", toy_geometry, ConditionSpec.from_data(data, ("e_inc", "x0")), t, {"critic_hidden": [8], "latent_dim": 3})
    m.prepare(data)
    return m


def test_round_trip_rebuilds_the_same_model(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model, step=7, train_config={"seed": 3}, metrics={"chi2": 1.5}, data_attrs={"particle": "e+"})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # written atomically, no leftovers
    ck = load_checkpoint(path)
    m2 = ck.model
    assert (ck.family, ck.step, ck.train_config, ck.metrics, ck.data_attrs) == ("wgan", 7, {"seed": 3}, {"chi2": 1.5}, {"particle": "e+"})
    assert ck.calogan_version == __version__ and ck.training is None
    assert m2.config == model.config and m2.geometry == model.geometry and m2.conditions == model.conditions
    assert m2.transform.config == model.transform.config and not m2.training
    sd1, sd2 = model.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    cond = torch.tensor([[5.0, 1.0], [2.0, -2.0]])
    z = model.latent(2)
    torch.testing.assert_close(m2(cond, z), model(cond, z), rtol=0, atol=0)


def test_training_state_survives(model, tmp_path):
    opt = torch.optim.Adam(model.generator_parameters())
    model.generator_loss(torch.tensor([[5.0, 1.0]]))[0].backward()
    opt.step()
    state = {"opt": opt.state_dict(), "rng": torch.get_rng_state(), "sampler": {"rng": np.random.default_rng(1).bit_generator.state}}
    ck = load_checkpoint(save_checkpoint(tmp_path / "last.pt", model, step=1, training=state))
    assert torch.equal(ck.training["rng"], state["rng"])
    assert ck.training["sampler"]["rng"] == state["sampler"]["rng"]
    opt2 = torch.optim.Adam(ck.model.generator_parameters())
    opt2.load_state_dict(ck.training["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_errors_name_the_file(model, tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a calogan checkpoint \(it does not start like the zip archive"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt: not a calogan checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    bad = torch.load(save_checkpoint(tmp_path / "bad.pt", model, step=0), weights_only=True)
    bad["state_dict"].pop("critic.0.weight")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: cannot rebuild the 'wgan' model"):
        load_checkpoint(tmp_path / "bad.pt")


def test_files_are_recognised_before_anything_unpickles_them(model, tmp_path, monkeypatch):
    """Empty, truncated, foreign and legacy files are refused by their first bytes: torch.load never sees them."""
    good = save_checkpoint(tmp_path / "good.pt", model, step=0)
    data = good.read_bytes()
    legacy = tmp_path / "legacy.pt"
    torch.save({"step": 1}, legacy, _use_new_zipfile_serialization=False)
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("notes.txt", "x")
    files = {
        "empty.pt": (b"", "empty file (0 bytes), not a checkpoint"),
        "showers.pt": (b"\x89HDF\r\n\x1a\n" + bytes(100), "an HDF5 file (showers?), not a checkpoint"),
        "model.onnx": (b"\x08\x07\x12\x07pytorch", "an ONNX export, not a checkpoint"),
        "legacy.pt": (legacy.read_bytes(), "a pickle in torch's legacy format"),
        "other.pt": ((tmp_path / "other.zip").read_bytes(), "a zip archive but not a torch checkpoint"),
        "cut.pt": (data[: len(data) // 2], "a truncated or damaged checkpoint"),
    }
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    for name, (content, message) in files.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=rf"{re.escape(name)}: {re.escape(message)}"):
            load_checkpoint(tmp_path / name)
