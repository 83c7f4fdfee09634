"""Hyper-parameter search (calogan.distributed.tune): workers sharing one SQLite study, pruning, the best config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.io import write_showers
from calogan.training import TrainConfig
from conftest import toy_showers

optuna = pytest.importorskip("optuna", reason="the distributed extra (optuna) is not installed")
from calogan.distributed.tune import read_space, run_worker, validation_score  # noqa: E402

BASE = """family: wgan
model: {latent_dim: 4, generator_hidden: [16], critic_hidden: [16], physics_hidden: [8]}
batch_size: 16
d_steps: 1
max_steps: 4
val_every: 2
val_fraction: 0.25
val_bins: 2
checkpoint_every: 4
"""
SPACE = """lr_g: {low: 1.0e-5, high: 1.0e-2, log: true}
model.lambda_gp: {type: float, low: 1, high: 20}
batch_size: [8, 16]
"""


@pytest.fixture
def setup(tmp_path, toy_geometry):
    data = write_showers(tmp_path / "toy.h5", toy_showers(toy_geometry, n=96, seed=6))
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path, data


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_no_trial_lost_or_run_twice(setup):
    tmp, data = setup
    storage = f"sqlite:///{tmp / 'study.db'}"
    cmd = [sys.executable, "-m", "calogan", "tune", "--config", str(tmp / "base.yaml"), "--space", str(tmp / "space.yaml")]
    cmd += ["--trials", "3", "--storage", storage, "-o", str(tmp / "tune"), "--data", str(data), "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]

    ran = [[int(line.split()[1].rstrip(":")) for line in out.splitlines() if line.startswith("trial ")] for out, _ in outputs]
    assert len(ran[0]) == len(ran[1]) == 3 and not set(ran[0]) & set(ran[1])  # each worker its own three trials
    study = optuna.load_study(study_name="calogan", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == sorted(ran[0] + ran[1]) == list(range(6))
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    # every trial trained once, in its own folder, with the values the study recorded
    folders = sorted(p.name for p in (tmp / "tune").glob("trial-*"))
    assert folders == [f"trial-{k:04d}" for k in range(6)]
    for t in trials:
        config = TrainConfig.from_yaml(tmp / "tune" / f"trial-{t.number:04d}" / "config.yaml")
        assert config.lr_g == t.params["lr_g"] and config.model["lambda_gp"] == t.params["model.lambda_gp"]
        assert config.batch_size == t.params["batch_size"]
        reported = [json.loads(line)["step"] for line in (tmp / "tune" / f"trial-{t.number:04d}" / "log.jsonl").read_text().splitlines()]
        # a complete trial ran its 4 steps; a pruned one stopped at the validation that pruned it
        assert reported[-1] == 4 if t.state == optuna.trial.TrialState.COMPLETE else reported[-1] in (2, 4)

    # best.yaml: the base config plus the best values, as calogan train reads it
    best = study.best_trial
    config = TrainConfig.from_yaml(tmp / "tune" / "best.yaml")
    trained = TrainConfig.from_yaml(tmp / "tune" / f"trial-{best.number:04d}" / "config.yaml")
    assert config.to_dict() == {**trained.to_dict(), "threads": None, "progress": True}
    assert (tmp / "tune" / "best.yaml").read_text().splitlines()[3] == "extends: ../base.yaml"


def test_a_pruned_trial_stops_training_at_its_first_validation(setup):
    tmp, data = setup
    base = TrainConfig.from_dict({**__import__("yaml").safe_load(BASE), "data": str(data), "progress": False, "threads": 1})
    space = read_space(tmp / "space.yaml", base)
    result = run_worker(
        base, space, tmp / "tune", storage=f"sqlite:///{tmp / 'p.db'}", trials=1, pruner=optuna.pruners.ThresholdPruner(upper=-1.0)
    )
    assert [t[:2] for t in result.trials] == [(0, "PRUNED")] and result.best_number is None and not (tmp / "tune" / "best.yaml").exists()
    steps = [json.loads(line)["step"] for line in (tmp / "tune" / "trial-0000" / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 2  # val_every 2 of max_steps 4


def test_search_space_errors_name_the_file_and_option(tmp_path):
    base = TrainConfig()
    for text, message in [
        ("lr_x: {low: 1, high: 2}", "unknown option 'lr_x'"),
        ("lr_g: {low: 2.0, high: 1.0}", "option lr_g: low and high must be numbers with low < high"),
        ("lr_g: {low: 0.0, high: 1.0, log: true}", "option lr_g: a log range needs low > 0"),
        ("batch_size: [0, 16]", "option batch_size: must be >= 1, got 0"),
        ("lr_g: 0.1", "option lr_g: expected {low: A, high: B} or a list of choices"),
    ]:
        (tmp_path / "s.yaml").write_text(text)
        with pytest.raises(ConfigError, match=f"s.yaml: {message}".replace("{", r"\{").replace("[", r"\[")):
            read_space(tmp_path / "s.yaml", base)


def test_validation_score_sees_shapes(toy_geometry):
    """A candidate with the reference's energies but another spread over the cells scores worse than a resample."""
    ref, same = toy_showers(toy_geometry, n=2000, seed=1), toy_showers(toy_geometry, n=2000, seed=2)
    cells = same.cells.copy()
    cells[:, : toy_geometry.n_cells // 2] *= 1.5  # the front cells carry more, the back ones the same total
    cells *= same.cells.sum(1, keepdims=True) / cells.sum(1, keepdims=True)
    moved = ShowerData(toy_geometry, cells, same.e_inc, same.pdg)
    assert np.allclose(moved.cells.sum(1), same.cells.sum(1), rtol=1e-5)  # E_tot alone cannot tell them apart
    assert validation_score(ref, same) < 0.02 < validation_score(ref, moved)
    assert validation_score(ref, moved, objective="auc") > 0.6  # the low-level classifier tells them apart too


def test_cli_tune_is_registered_and_refuses_a_bad_storage(tmp_path, setup, capsys):
    from calogan.cli import main

    tmp, data = setup
    args = ["tune", "--config", str(tmp / "base.yaml"), "--space", str(tmp / "space.yaml"), "--trials", "1", "-o", str(tmp / "t")]
    assert main([*args, "--storage", "study.db", "--data", str(data)]) == 2
    assert "storage must be a database URL (sqlite:///study.db" in capsys.readouterr().err
    assert Path(tmp / "t").exists() is False
