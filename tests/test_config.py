"""Config files: ``extends:`` chains, the shipped configs, and machine settings kept out of recipes."""

from pathlib import Path

import pytest
import torch

from calogan.cli import main
from calogan.config import config_from_dict, read_config
from calogan.errors import ConfigError
from calogan.fastsim import RouteConfig, RouterConfig
from calogan.io import write_showers
from calogan.training import TrainConfig, train
from conftest import toy_showers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_extends_merges_nested_mappings_key_by_key(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "root.yaml").write_text(
        "family: wgan\nbatch_size: 128\nbetas: [0.5, 0.999]\nmodel: {latent_dim: 50, lambda_gp: 10.0}\n"
    )
    (tmp_path / "base" / "mid.yaml").write_text("extends: root.yaml\nmodel: {lambda_gp: 5.0}\ntransform: {log: true, scale: standard}\n")
    (tmp_path / "leaf.yaml").write_text("extends: base/mid.yaml\nbetas: [0.0, 0.9]\nmodel: {latent_dim: 16}\n")
    assert read_config(tmp_path / "leaf.yaml") == {
        "family": "wgan",
        "batch_size": 128,
        "betas": [0.0, 0.9],  # lists are replaced whole
        "model": {"latent_dim": 16, "lambda_gp": 5.0},
        "transform": {"log": True, "scale": "standard"},
    }
    cfg = TrainConfig.from_yaml(tmp_path / "leaf.yaml")
    assert cfg.model == {"latent_dim": 16, "lambda_gp": 5.0} and cfg.betas == (0.0, 0.9) and cfg.batch_size == 128
    (tmp_path / "null.yaml").write_text("extends: base/root.yaml\nmodel: {lambda_gp: null}\n")
    assert read_config(tmp_path / "null.yaml")["model"] == {"latent_dim": 50, "lambda_gp": None}


def test_extends_errors_name_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nbatch_size: 8\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: extends cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        read_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("extends: ./self.yaml\n")
    with pytest.raises(ConfigError, match="extends cycle"):
        TrainConfig.from_yaml(tmp_path / "self.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: extends 'missing.yaml', but .*missing\.yaml does not exist"):
        read_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"d\.yaml: extends must name a base config file"):
        read_config(tmp_path / "d.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    (tmp_path / "e.yaml").write_text("extends: list.yaml\n")
    with pytest.raises(ConfigError, match=r"list\.yaml \(extended by .*e\.yaml\): expected a mapping"):
        read_config(tmp_path / "e.yaml")
    (tmp_path / "g.yaml").write_text("batch_size: 8\n")
    (tmp_path / "f.yaml").write_text("extends: g.yaml\nbatch_sise: 8\n")  # the variant's own typo is named
    with pytest.raises(ConfigError, match=r"f\.yaml: unknown option batch_sise"):
        TrainConfig.from_yaml(tmp_path / "f.yaml")


def test_every_shipped_config_parses_and_leaves_the_machine_out():
    paths = sorted(CONFIGS.rglob("*.yaml"))
    assert len(paths) >= 15
    for path in paths:
        values = read_config(path)
        if path.name.startswith("fastsim_"):
            config = config_from_dict(RouterConfig, values, where="")
            for route in [*config.routes, config.fallback]:
                assert "threads" not in route and "device" not in route, path.name
                config_from_dict(RouteConfig, route, where="route")
            continue
        cfg = TrainConfig.from_yaml(path)
        assert cfg.threads is None and cfg.device == "auto", f"{path.name} sets a machine option"
        assert "threads" not in values and "device" not in values, path.name


def test_variants_state_only_what_they_change():
    base = TrainConfig.from_yaml(CONFIGS / "wgan_eplus.yaml")
    for name in ("wgan_eplus_total.yaml", "wgan_gamma.yaml"):
        assert TrainConfig.from_yaml(CONFIGS / name) == base
    small = TrainConfig.from_yaml(CONFIGS / "calogan_eplus_active_small.yaml")
    paper = TrainConfig.from_yaml(CONFIGS / "calogan_eplus_active.yaml")
    changed = {k for k, v in small.to_dict().items() if v != paper.to_dict()[k]}
    assert changed == {"model", "batch_size", "max_steps", "val_every", "checkpoint_every", "log_every"}
    assert {k for k in small.model if small.model[k] != paper.model[k]} == {"latent_dim"}
    assert small.model["sampling_fraction"] is None and paper.model["latent_dim"] == 1024


def test_machine_settings_come_from_flags_or_the_environment(tmp_path, toy_geometry, monkeypatch):
    data = write_showers(tmp_path / "toy.h5", toy_showers(toy_geometry, n=40, seed=1))
    args = ["train", "--config", str(CONFIGS / "wgan_demo.yaml"), "--data", str(data), "--quiet"]
    small = ["--set", "max_steps=1", "--set", "batch_size=4", "--set", "val_fraction=0.0"]
    assert main([*args, *small, "-o", str(tmp_path / "a"), "--threads", "1", "--device", "cpu"]) == 0
    stored = TrainConfig.from_yaml(tmp_path / "a" / "config.yaml")
    assert stored.threads == 1 and stored.device == "cpu"
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setenv("CALOGAN_THREADS", "1")
    cfg = TrainConfig.from_yaml(tmp_path / "a" / "config.yaml")
    train(TrainConfig.from_dict({**cfg.to_dict(), "threads": None}), tmp_path / "b")
    assert calls == [1]
    assert main([*args, *small, "-o", str(tmp_path / "c"), "--device", "gpu"]) == 2
