import json
from dataclasses import replace

import numpy as np
import pytest

from calogan import metrics as m
from calogan import report
from calogan.cli import main
from calogan.distortions import Distortion, scale_energy
from calogan.evaluation import EvaluationConfig
from calogan.io import write_showers
from calogan.sensitivity import SensitivityError, format_table, sensitivity
from conftest import toy_showers

FAST = m.ClassifierConfig(n_runs=2, max_trees=40, tree_patience=5)
CONFIG = EvaluationConfig(classifier=FAST, n_boot=5, nn_queries=50, hist_bins=20, energy_bins=2)


def _smeared(geometry, n, seed):
    d = toy_showers(geometry, n=n, seed=seed)
    return replace(d, cells=d.cells * np.random.default_rng(seed).normal(1.0, 0.05, (n, 1)).astype(np.float32))


def test_distorted_copy_flagged_and_self_copy_not(toy_geometry):
    ref = _smeared(toy_geometry, 600, 1)
    suite = [
        Distortion("self-copy", "undistorted", lambda d, rng: d),
        Distortion("scale x1.2", "cells x 1.2", lambda d, rng: scale_energy(d, 1.2)),
    ]
    result = sensitivity(ref, n=200, config=CONFIG, distortions=suite)
    same, scaled = result.rows
    assert result.n_per_class == 200 and same["distortion"] == "self-copy"
    assert same["flagged_by"] == []
    assert abs(same["auc_low"]["z"]) < 3 and abs(same["auc_high"]["z"]) < 3
    assert {"low-level AUC", "E_tot chi2", "response"} <= set(scaled["flagged_by"])
    assert scaled["auc_low"]["z"] > 5 and scaled["energy_chi2"]["z"] > 5
    table = format_table(result.rows, result.n_per_class)
    assert table.count("\n") == 2 + 1 + 2 and "| scale x1.2 |" in table and "(200 vs 200)" in table
    with pytest.raises(SensitivityError, match="needs 3000 reference showers"):
        sensitivity(ref, n=1000, config=CONFIG, distortions=suite)


def test_cli_sensitivity(tmp_path, toy_geometry, capsys, monkeypatch):
    monkeypatch.setattr(report, "render_html", lambda ev, dpi=80: "<!DOCTYPE html><html></html>")
    path = write_showers(tmp_path / "ref.h5", _smeared(toy_geometry, 240, 2))
    out = tmp_path / "sens"
    argv = ["evaluate", "--sensitivity", str(path), "-o", str(out), "--sensitivity-n", "80", "--fast", "--classifier-runs", "1", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| self-copy | skipped |" in printed and "| scale x1.05 |" in printed and "wrote" in printed
    doc = json.loads((out / "sensitivity.json").read_text())
    assert doc["n_per_class"] == 80 and [r["distortion"] for r in doc["rows"]][:3] == ["self-copy", "scale x1.02", "scale x1.05"]
    assert (out / "sensitivity.md").read_text().startswith("| distortion (80 vs 80)")
    mt = json.loads((out / "metrics.json").read_text())
    assert mt["settings"]["classifier"]["low"]["n_runs"] == 1
    assert main(["evaluate", "--sensitivity", str(path), str(path), "-o", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--sensitivity takes the reference file only" in capsys.readouterr().err
