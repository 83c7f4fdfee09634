import json

import h5py
import numpy as np
import pytest
import torch

from calogan.benchmark import HEADER, BenchmarkConfig, format_table, generator_flops, run_benchmark, time_calls, write_json
from calogan.checkpoint import save_checkpoint
from calogan.cli import main
from calogan.errors import ConfigError
from calogan.io import write_showers
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers


def wgan(geometry, hidden=(16, 8)):
    data = toy_showers(geometry, n=30)
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    m = build_model(
        "wgan", geometry, ConditionSpec.from_data(data), t, {"latent_dim": 5, "generator_hidden": list(hidden), "critic_hidden": [8]}
    )
    m.prepare(data)
    return m.eval(), data


@pytest.fixture
def setup(toy_geometry, tmp_path):
    model, data = wgan(toy_geometry)
    ckpt = save_checkpoint(tmp_path / "best.pt", model, step=2, data_attrs={"convention": "active", "particle": "e+"})
    ref = write_showers(tmp_path / "g4.h5", data)
    with h5py.File(ref, "a") as f:  # a Geant4-like reference: 0.5 s of CPU per shower on average
        f["g4_cpu_seconds"] = np.linspace(0.25, 0.75, len(data))[:, None]
    return ckpt, ref


def test_generator_flops_exact(toy_geometry):
    model, _ = wgan(toy_geometry, hidden=(16, 8))
    # inputs: 5 noise + 1 condition -> 16 -> 8 -> 17 cells; 2 FLOPs per multiply-add
    assert generator_flops(model) == 2 * (6 * 16 + 16 * 8 + 8 * 17)


def test_time_calls_counts_and_medians():
    calls = []
    t = time_calls(lambda: calls.append(1), warmup=3, min_time=0.0, min_repeats=4)
    assert t["repeats"] == 4 and len(calls) == 7 and t["min"] <= t["median"]
    with pytest.raises(ConfigError, match="unknown backends"):
        BenchmarkConfig(backends=("tensorflow",))
    with pytest.raises(ConfigError, match="batch sizes must be positive"):
        BenchmarkConfig(batch_sizes=(0,))


def test_benchmark_rows_table_and_json(setup, tmp_path):
    ckpt, ref = setup
    config = BenchmarkConfig(
        batch_sizes=(1, 4, 64),
        backends=("torch", "onnxruntime", "parametrized"),
        devices=("cpu",),
        threads=1,
        warmup=1,
        min_time=0.0,
        min_repeats=2,
        max_row_seconds=0.5,
        ceiling_size=64,
    )
    seen = []
    threads = torch.get_num_threads()
    result = run_benchmark(ckpt, reference=ref, config=config, log=seen.append)
    assert torch.get_num_threads() == threads and result["machine"]["threads"] == 1  # set for the run, then restored
    rows = result["rows"]
    assert rows == seen and [(r["backend"], r["batch_size"]) for r in rows] == [
        (b, n) for b in ("torch", "onnxruntime", "parametrized-active") for n in (1, 4, 64)
    ]
    assert result["reference"]["g4_seconds_per_shower"] == pytest.approx(0.5)
    assert result["model"]["flops_per_shower"] == 2 * (6 * 16 + 16 * 8 + 8 * 17)
    assert result["onnx"]["parity"]["ok"] is True and result["ceiling"]["nominal_gflops"] == 130.0
    assert result["ceiling"]["measured_gflops"]["cpu"] > 0
    for r in rows:
        assert r["device"] == "cpu" and r["threads"] == 1
        if r["status"] != "ok":  # only the estimate rule may skip a row
            assert r["status"].startswith("skipped: about") and r["batch_size"] == 64
            continue
        per = r["median_s"] / r["batch_size"]
        assert r["ms_per_shower"] == pytest.approx(1000 * per) and r["showers_per_s"] == pytest.approx(1 / per)
        assert r["speedup_vs_geant4"] == pytest.approx(0.5 / per)
        if r["backend"] == "parametrized-active":
            assert "gflops" not in r
        else:
            assert r["gflops"] == pytest.approx(result["model"]["flops_per_shower"] / per / 1e9)
            assert r["ceiling_fraction"] == pytest.approx(r["gflops"] / result["ceiling"]["measured_gflops"]["cpu"])
            assert r["nominal_ceiling_fraction"] == pytest.approx(r["gflops"] / 130.0)
    table = format_table(result)
    assert HEADER in table and "Geant4: 500.0 ms per shower on one core" in table and "MFLOP per shower" in table
    assert table.count("\nonnxruntime ") == 3 and "\nGPU (cuda): not measured, " in table
    path = write_json(result, tmp_path / "bench.json")
    assert json.loads(path.read_text())["rows"] == json.loads(json.dumps(rows))
    with pytest.raises(ConfigError, match="bench.json: exists; pass --force"):
        write_json(result, path)


def test_benchmark_skips_rows_estimated_too_long(setup):
    ckpt, _ = setup
    config = BenchmarkConfig(
        batch_sizes=(1, 100000),
        backends=("parametrized",),
        threads=1,
        warmup=1,
        min_time=0.0,
        min_repeats=1,
        max_row_seconds=1.0,
        ceiling_size=32,
    )
    rows = run_benchmark(ckpt, config=config)["rows"]
    assert rows[0]["status"] == "ok" and "speedup_vs_geant4" not in rows[0]
    assert rows[1]["status"].startswith("skipped: about") and "max_row_seconds 1" in rows[1]["status"]


def test_cli_benchmark(setup, tmp_path, capsys):
    ckpt, ref = setup
    out = tmp_path / "b.json"
    args = ["benchmark", "--model", str(ckpt), "--reference", str(ref), "--batch-sizes", "2,8", "--backends", "torch,parametrized"]
    assert main([*args, "--threads", "1", "--min-time", "0", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(HEADER) and "x Geant4" in text and f"wrote {out}" in text
    result = json.loads(out.read_text())
    assert [r["batch_size"] for r in result["rows"]] == [2, 8, 2, 8] and result["machine"]["threads"] == 1
    assert main([*args, "-o", str(out)]) == 2
    assert "b.json: exists; pass --force" in capsys.readouterr().err
    assert main(["benchmark", "--model", str(ckpt), "--batch-sizes", "1,x"]) == 2
    assert "--batch-sizes must be a comma-separated list" in capsys.readouterr().err
    assert main(["benchmark", "--model", str(ckpt), "--reference", str(tmp_path / "b.json"), "--backends", "torch"]) == 2
    assert "b.json: not an HDF5 file (the speed reference must be a Geant4 file" in capsys.readouterr().err
    no_key = write_showers(tmp_path / "plain.h5", toy_showers(ckpt_geometry(ckpt), n=3))
    assert main(["benchmark", "--model", str(ckpt), "--reference", str(no_key), "--backends", "torch"]) == 2
    assert "key 'g4_cpu_seconds': missing" in capsys.readouterr().err


def ckpt_geometry(path):
    from calogan.checkpoint import load_checkpoint

    return load_checkpoint(path).model.geometry
