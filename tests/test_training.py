import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from calogan.checkpoint import load_checkpoint
from calogan.cli import main
from calogan.errors import ConfigError
from calogan.io import read_showers, write_showers
from calogan.models.wgan import WGAN
from calogan.training import TrainConfig, TrainingDiverged, _Sampler, apply_overrides, train
from conftest import toy_showers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def toy_file(tmp_path, toy_geometry):
    return write_showers(tmp_path / "toy.h5", toy_showers(toy_geometry, n=80, seed=2))


def validations(run: Path) -> list[dict]:
    """The validation records of a run's log.jsonl, in order."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r["val"] for r in records if "val" in r]


def tiny(data, **kw) -> TrainConfig:
    values = dict(
        data=str(data),
        model={"critic_hidden": [16, 16], "generator_hidden": [16], "physics_hidden": [8], "latent_dim": 4},
        batch_size=8,
        d_steps=2,
        max_steps=12,
        val_fraction=0.25,
        val_every=4,
        val_bins=2,
        checkpoint_every=4,
        log_every=2,
        progress=False,
        threads=1,
    )
    values.update(kw)
    return TrainConfig.from_dict(values)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_writes_config_checkpoints_and_logs(toy_file, tmp_path):
    out = tmp_path / "run"
    result = train(tiny(toy_file), out)
    assert result.step == 12 and result.stopped == "max_steps"
    assert {p.name for p in out.iterdir()} == {"config.yaml", "last.pt", "best.pt", "log.jsonl"}
    assert TrainConfig.from_yaml(out / "config.yaml") == tiny(toy_file)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    vals = [r["val"] for r in records if "val" in r]
    assert [v["step"] for v in vals] == [4, 8, 12] and all(np.isfinite(v["chi2"]) for v in vals)
    assert result.best_chi2 == min(v["chi2"] for v in vals)
    train_logs = [r for r in records if "d_loss" in r]
    assert [r["step"] for r in train_logs] == [2, 4, 6, 8, 10, 12] and all(r["showers_per_s"] > 0 for r in train_logs)
    best, last = load_checkpoint(out / "best.pt"), load_checkpoint(out / "last.pt")
    assert best.step == result.best_step and best.training is None and best.metrics["chi2"] == result.best_chi2
    assert last.step == 12 and last.training is not None and last.data_attrs["particle"] == "e+"
    assert isinstance(last.model, WGAN) and TrainConfig.from_dict(last.train_config) == tiny(toy_file)


def test_update_counts_follow_d_steps_and_g_steps(toy_file, tmp_path):
    cfg = tiny(toy_file, d_steps=3, g_steps=2, max_steps=5, optimizer="rmsprop", condition_sampling="big_batch")
    train(cfg, tmp_path / "run")
    t = load_checkpoint(tmp_path / "run" / "last.pt").training
    assert t["opt_d"]["state"][0]["step"].item() == 5 * 3
    assert t["opt_g"]["state"][0]["step"].item() == 5 * 2
    assert "square_avg" in t["opt_g"]["state"][0]  # RMSProp
    train(tiny(toy_file, condition_sampling="dataset", max_steps=2), tmp_path / "run2")


def test_resume_continues_bit_for_bit(toy_file, tmp_path, monkeypatch):
    cfg = tiny(toy_file, max_steps=12, checkpoint_every=4)
    train(cfg, tmp_path / "full")
    full = load_checkpoint(tmp_path / "full" / "last.pt")

    calls = {"n": 0}
    take = _Sampler.take

    def killed_at_step_11(self, k):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt  # the run dies between checkpoints (last one: step 8)
        return take(self, k)

    monkeypatch.setattr(_Sampler, "take", killed_at_step_11)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed")
    monkeypatch.setattr(_Sampler, "take", take)
    assert load_checkpoint(tmp_path / "killed" / "last.pt").step == 8
    result = train(cfg, tmp_path / "killed", resume=True)
    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert result.step == 12
    assert states_equal(resumed.model.state_dict(), full.model.state_dict())
    assert states_equal(resumed.training["opt_d"]["state"][0], full.training["opt_d"]["state"][0])
    assert torch.equal(resumed.training["torch_rng"], full.training["torch_rng"])
    # a longer budget continues the finished run
    assert train(TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 14}), tmp_path / "killed", resume=True).step == 14


def test_mirror_augmentation_and_auc_selection_resume_bit_for_bit(tmp_path, toy_geometry, monkeypatch):
    small = write_showers(tmp_path / "small.h5", toy_showers(toy_geometry, n=80, seed=2))
    with pytest.raises(ConfigError, match="selection auc: the classifier needs at least 25 validation showers, got 20"):
        train(tiny(small, selection="auc"), tmp_path / "small")
    toy_file = write_showers(tmp_path / "toy.h5", toy_showers(toy_geometry, n=200, seed=2))
    cfg = tiny(toy_file, max_steps=8, checkpoint_every=4, augment=["mirror_x", "mirror_y"], selection="auc")
    result = train(cfg, tmp_path / "full")
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    vals = validations(tmp_path / "full")
    assert all(0 <= v["auc"] <= 1 for v in vals) and result.selection == "auc" and result.best_chi2 is None
    assert result.best_value == min(v["auc"] for v in vals)
    assert load_checkpoint(result.best).metrics["auc"] == result.best_value
    # the mirrors draw from the saved RNG: a killed run resumes to the same weights
    take, calls = _Sampler.take, {"n": 0}

    def killed_at_step_7(self, k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return take(self, k)

    monkeypatch.setattr(_Sampler, "take", killed_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed")
    monkeypatch.setattr(_Sampler, "take", take)
    train(cfg, tmp_path / "killed", resume=True)
    assert states_equal(load_checkpoint(tmp_path / "killed" / "last.pt").model.state_dict(), full.model.state_dict())


def test_selection_keeps_no_step_whose_response_is_off(tmp_path, toy_geometry):
    toy_file = write_showers(tmp_path / "toy.h5", toy_showers(toy_geometry, n=200, seed=2))
    with pytest.raises(ConfigError, match="selection_max_response: must be > 0"):
        tiny(toy_file, selection_max_response=0.0)
    cfg = tiny(toy_file, max_steps=8, val_every=2, selection="auc")
    free = train(cfg, tmp_path / "free")
    vals = validations(tmp_path / "free")
    deviations = [abs(v["response_ratio"] - 1.0) for v in vals]
    # a limit that only some validation steps meet: the best is the best of those, by AUC
    limit = sorted(deviations)[len(deviations) // 2]
    guarded = train(TrainConfig.from_dict({**cfg.to_dict(), "selection_max_response": limit}), tmp_path / "guarded")
    eligible = [v for v, d in zip(vals, deviations) if d <= limit]
    assert 0 < len(eligible) < len(vals)  # the guard excludes some steps, not all
    assert guarded.best_value == min(v["auc"] for v in eligible)
    assert abs(load_checkpoint(guarded.best).metrics["response_ratio"] - 1.0) <= limit
    assert free.best_value == min(v["auc"] for v in vals)
    # a limit none meets: no best.pt, and the run says so
    none = train(TrainConfig.from_dict({**cfg.to_dict(), "selection_max_response": min(deviations) / 2}), tmp_path / "none")
    assert none.best_value is None and not none.best.exists() and none.last.exists()


def test_mirror_augmentation_is_refused_for_an_off_centre_beam(tmp_path, toy_geometry):
    d = toy_showers(toy_geometry, n=80, seed=2)
    cells = d.cells.copy()
    cells[:, 4:] *= 0.01  # the front layer's first row carries the shower: an off-centre beam
    path = write_showers(tmp_path / "off.h5", replace(d, cells=cells))
    with pytest.raises(ConfigError, match="augment mirror_x: the showers are not symmetric along x"):
        train(tiny(path, augment=["mirror_x"]), tmp_path / "run")
    with pytest.raises(ConfigError, match="option augment: each entry must be one of mirror_x, mirror_y"):
        tiny(path, augment=["rotate"])


def test_resume_and_restart_errors(toy_file, tmp_path):
    cfg = tiny(toy_file, max_steps=4)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(cfg, tmp_path / "run", resume=True)
    train(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match="holds a run already; pass --resume to continue it or --force"):
        train(cfg, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"--resume: option lr_g differs from the run"):
        train(TrainConfig.from_dict({**cfg.to_dict(), "lr_g": 1e-3}), tmp_path / "run", resume=True)
    assert train(cfg, tmp_path / "run", force=True).step == 4


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(toy_file, tmp_path, monkeypatch):
    original = WGAN.generator_loss
    calls = {"n": 0}

    def diverging(self, cond, real=None):
        calls["n"] += 1
        loss, logs = original(self, cond, real)
        return (loss * float("nan"), logs) if calls["n"] >= 6 else (loss, logs)

    monkeypatch.setattr(WGAN, "generator_loss", diverging)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"step 6: non-finite loss .*the last good checkpoint is .*last\.pt \(step 4\)"):
        train(tiny(toy_file, checkpoint_every=4), out)
    last = load_checkpoint(out / "last.pt")
    assert last.step == 4
    assert all(torch.isfinite(v).all() for v in last.model.state_dict().values())


def test_nan_weights_behind_a_finite_loss_never_replace_the_last_checkpoint(toy_file, tmp_path, monkeypatch):
    original = WGAN.generator_loss
    calls = {"n": 0}

    def corrupting(self, cond, real=None):
        calls["n"] += 1
        loss, logs = original(self, cond, real)  # finite: the weights break after the loss was computed
        if calls["n"] == 4:
            with torch.no_grad():
                self.generator[0].weight[0, 0] = float("nan")
        return loss, logs

    monkeypatch.setattr(WGAN, "generator_loss", corrupting)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"step 4: non-finite model weights; .*last\.pt was not overwritten .*\(step 2\)"):
        train(tiny(toy_file, checkpoint_every=2, val_every=100), out)
    assert load_checkpoint(out / "last.pt").step == 2


def test_bf16_autocast_and_compile_paths_run_on_cpu(toy_file, tmp_path, monkeypatch):
    # The GPU options, exercised on the CPU: autocast runs there too; torch.compile is
    # replaced by a recorder (a real compile costs a minute) to check it wraps and unwraps.
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    result = train(tiny(toy_file, precision="bf16", compile=True, max_steps=4), tmp_path / "run")
    assert result.step == 4 and len(compiled) == 1 and np.isfinite(result.best_chi2)
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(v).all() for v in last.model.state_dict().values())


def test_wall_clock_budget_stops_the_run(toy_file, tmp_path):
    result = train(tiny(toy_file, max_steps=100000, max_minutes=1e-4), tmp_path / "run")
    assert result.stopped == "max_minutes" and 1 <= result.step < 100000
    assert load_checkpoint(tmp_path / "run" / "last.pt").step == result.step


def test_exclude_energy_removes_the_band(tmp_path, toy_geometry):
    data = toy_showers(toy_geometry, n=80, seed=2)
    path = write_showers(tmp_path / "toy.h5", data)
    train(tiny(path, exclude_energy=[[0.0, 5.0]], val_fraction=0.0, max_steps=2), tmp_path / "run")
    lo, hi = load_checkpoint(tmp_path / "run" / "last.pt").model.conditions.ranges[0]
    assert lo == pytest.approx(data.e_inc[data.e_inc > 5.0].min(), rel=1e-6) and hi == pytest.approx(data.e_inc.max(), rel=1e-6)
    with pytest.raises(ConfigError, match="removes every shower"):
        train(tiny(path, exclude_energy=[[0.0, 100.0]]), tmp_path / "run2")


def test_overrides_and_yaml_round_trip(tmp_path):
    cfg = apply_overrides(
        TrainConfig(), ["lr_g=2e-4", "betas=[0.0, 0.9]", "model.lambda_gp=5", "transform.log=true", "transform.scale=standard"]
    )
    assert cfg.lr_g == 2e-4 and cfg.betas == (0.0, 0.9) and cfg.model == {"lambda_gp": 5} and cfg.transform["log"] is True
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lrg=1", "--set: unknown option 'lrg'; options: family, model"),
        ("lr_g", "--set expects KEY=VALUE, got 'lr_g'"),
        ("lr_g=-1", "option lr_g: must be > 0, got -1"),
        ("optimizer=sgd", "option optimizer: must be one of adam, rmsprop, got 'sgd'"),
        ("batch_size=big", "option batch_size must be an integer, got 'big'"),
        ("model.lamda_gp=1", "unknown option model.lamda_gp; valid options of model:"),
        ("transform.scale=weird", "transform.scale must be one of none, max, standard"),
        ("family=flow", "unknown model family 'flow'"),
        ("seed.x=1", "option 'seed' has no sub-options"),
        ("condition_sampling=all", "option condition_sampling: must be one of batch, big_batch, dataset"),
        ("exclude_energy=[[50, 40]]", "option exclude_energy: each band must be"),
    ],
)
def test_bad_options_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        apply_overrides(TrainConfig(), [override])


def test_bad_yaml_files(tmp_path):
    (tmp_path / "a.yaml").write_text("lr_g: [1, 2\n")
    with pytest.raises(ConfigError, match=r"a\.yaml: not valid YAML"):
        TrainConfig.from_yaml(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("d_stepz: 5\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: unknown option d_stepz; valid options: "):
        TrainConfig.from_yaml(tmp_path / "b.yaml")
    with pytest.raises(ConfigError, match="cannot read config"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_every_shipped_wgan_config_parses():
    paths = sorted(CONFIGS.glob("wgan_*.yaml"))
    assert {"wgan_demo.yaml", "wgan_eplus.yaml"} <= {p.name for p in paths}
    for path in paths:
        TrainConfig.from_yaml(path)


def test_cli_train_with_demo_config(toy_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(CONFIGS / "wgan_demo.yaml"), "--data", str(toy_file), "-o", str(out), "--quiet"]
    small = ["--set", "max_steps=3", "--set", "batch_size=8", "--set", "val_every=3", "--set", "model.critic_hidden=[8]"]
    assert main(args + small) == 0
    text = capsys.readouterr().out
    assert "stopped at step 3 (max steps)" in text and "best validation chi2/ndf" in text
    assert main(args + small) == 2
    assert "holds a run already" in capsys.readouterr().err
    assert main(args + ["--set", "lr_g=0"]) == 2
    assert capsys.readouterr().err.strip() == "calogan train: error: --set: option lr_g: must be > 0, got 0.0"
    assert main(["train", "-o", str(tmp_path / "x"), "--quiet"]) == 2
    assert "no training data" in capsys.readouterr().err


def test_atlas_config_trains_on_the_atlas_geometry(tmp_path):
    from calogan.geometry import preset

    data = toy_showers(preset("atlas-barrel"), n=60, seed=1)
    path = write_showers(tmp_path / "atlas.h5", data)
    cfg = apply_overrides(
        TrainConfig.from_yaml(CONFIGS / "wgan_atlas_photon.yaml"),
        [f"data={path}", "max_steps=2", "batch_size=8", "val_bins=2", "progress=false", "model.critic_hidden=[8]", "max_minutes=null"],
    )
    assert cfg.geometry == "atlas-barrel" and cfg.val_bins == 2
    result = train(cfg, tmp_path / "run")
    assert result.step == 2 and load_checkpoint(result.best).model.geometry.n_cells == 266


def test_ema_resume_is_bit_identical_and_best_carries_the_averaged_generator(toy_file, tmp_path, monkeypatch):
    cfg = tiny(toy_file, max_steps=12, checkpoint_every=4, ema_decay=0.9)
    train(cfg, tmp_path / "full")
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    ema = full.training["ema"]
    generator = {n for n, _ in full.model.named_parameters() if n.startswith(("generator.", "noise_scale."))}
    assert set(ema) == generator
    assert any(not torch.equal(ema[n], full.model.state_dict()[n]) for n in ema)  # an average, not the live weights

    calls = {"n": 0}
    take = _Sampler.take

    def killed_at_step_11(self, k):
        calls["n"] += 1
        if calls["n"] == 11:
            raise KeyboardInterrupt
        return take(self, k)

    monkeypatch.setattr(_Sampler, "take", killed_at_step_11)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "killed")
    monkeypatch.setattr(_Sampler, "take", take)
    train(cfg, tmp_path / "killed", resume=True)
    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert states_equal(resumed.model.state_dict(), full.model.state_dict())
    assert states_equal(resumed.training["ema"], ema)
    assert torch.equal(resumed.training["torch_rng"], full.training["torch_rng"])
    for run in ("full", "killed"):  # best.pt: the EMA weights of its step, whatever the interruption
        assert states_equal(
            load_checkpoint(tmp_path / run / "best.pt").model.state_dict(),
            load_checkpoint(tmp_path / "full" / "best.pt").model.state_dict(),
        )


def test_ema_weights_are_what_best_pt_generates_with(toy_file, tmp_path):
    # No validation set: best.pt is the last step, written with the averaged generator weights.
    train(tiny(toy_file, max_steps=6, val_fraction=0.0, ema_decay=0.5), tmp_path / "run")
    last, best = load_checkpoint(tmp_path / "run" / "last.pt"), load_checkpoint(tmp_path / "run" / "best.pt")
    live, averaged = last.model.state_dict(), best.model.state_dict()
    for name, value in averaged.items():
        expected = last.training["ema"].get(name, live[name])  # the critic and buffers are the live ones
        assert torch.equal(value, expected), name
    assert any(not torch.equal(averaged[n], live[n]) for n in last.training["ema"])
    # off by default: no EMA state, and the same run as before the option existed
    train(tiny(toy_file, max_steps=2, val_fraction=0.0), tmp_path / "plain")
    assert load_checkpoint(tmp_path / "plain" / "last.pt").training["ema"] is None
    with pytest.raises(ConfigError, match=r"option ema_decay: must be in \[0, 1\)"):
        tiny(toy_file, ema_decay=1.0)


def test_several_training_files_are_joined(tmp_path, toy_geometry):
    a = write_showers(tmp_path / "a.h5", toy_showers(toy_geometry, n=40, seed=1))
    b = write_showers(tmp_path / "b.h5", toy_showers(toy_geometry, n=40, seed=2))
    out = tmp_path / "run"
    sets = [arg for s in ("max_steps=2", "val_every=2", "batch_size=8", "d_steps=2", "val_bins=2") for arg in ("--set", s)]
    assert main(["train", "--data", str(a), str(b), "--val-data", str(b), *sets, "--quiet", "-o", str(out)]) == 0
    stored = TrainConfig.from_yaml(out / "config.yaml")
    assert stored.data == (str(a), str(b)) and stored.val_data == str(b)
    other = write_showers(tmp_path / "g.h5", replace(toy_showers(toy_geometry, n=40, seed=3), pdg=np.full(40, 22)))
    with pytest.raises(ConfigError, match=r"option data: .*g.h5 holds particle 'gamma', .*a.h5 'e\+'; they cannot be joined"):
        train(TrainConfig.from_dict({**tiny(a).to_dict(), "data": [str(a), str(other)]}), tmp_path / "mixed")


def test_resume_takes_the_same_data_by_another_path(toy_file, tmp_path, monkeypatch):
    train(tiny(toy_file, max_steps=2), tmp_path / "run")  # toy_file is absolute
    monkeypatch.chdir(toy_file.parent)
    result = train(tiny(toy_file.name, max_steps=4), tmp_path / "run", resume=True)
    assert result.step == 4
    other = write_showers(tmp_path / "other.h5", read_showers(toy_file))
    with pytest.raises(ConfigError, match="option data differs"):
        train(tiny(other, max_steps=6), tmp_path / "run", resume=True)
