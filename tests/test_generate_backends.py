"""``calogan generate`` with its backends, devices, threads and precisions (the fast-generation options)."""

import numpy as np
import pytest

from calogan.checkpoint import save_checkpoint
from calogan.cli import main
from calogan.data import Conditions
from calogan.errors import ConfigError
from calogan.export import export_onnx
from calogan.fastsim import CPU_TILE_ROWS, OnnxBackend, TorchBackend
from calogan.generate import generate, generate_to_file
from calogan.io import inspect, read_showers
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from calogan.geometry import Geometry, Layer

    geometry = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))
    data = toy_showers(geometry, n=30, x0=np.linspace(-4.0, 4.0, 30))
    t = ShowerTransform.fit(TransformConfig(log=True, scale="standard"), data.cells, data.e_inc)
    model = build_model("wgan", geometry, ConditionSpec.from_data(data, ("e_inc", "x0")), t, {"latent_dim": 3, "critic_hidden": [8]})
    model.prepare(data)
    model.eval()
    folder = tmp_path_factory.mktemp("gen")
    ckpt = save_checkpoint(folder / "best.pt", model, step=4, data_attrs={"convention": "active", "particle": "e+"})
    onnx = export_onnx(model, folder / "model.onnx", attrs={"convention": "active", "particle": "e+", "step": 4}, n_check=32).path
    return model, ckpt, onnx


def test_same_seed_same_showers_for_any_batch_size_and_backend(files):
    model, _, onnx = files
    conds = Conditions(np.linspace(1.5, 9.5, 41), np.full(41, -11), {"x0": np.linspace(-3, 3, 41)})

    def cells(backend, batch):
        return np.concatenate([d.cells for d in generate(backend, conds, seed=9, batch_size=batch)])

    ref = cells(model, 41)
    for backend in (model, TorchBackend(model), OnnxBackend(onnx, threads=1)):
        for batch in (1, 6, 41):
            np.testing.assert_allclose(cells(backend, batch), ref, rtol=1e-5, atol=1e-6 * ref.max())
    assert not np.allclose(np.concatenate([d.cells for d in generate(model, conds, seed=10)]), ref)


def test_cpu_tiles_do_not_change_the_showers(files):
    model, _, onnx = files
    cond = np.stack([np.linspace(1.5, 9.5, 11), np.linspace(-3, 3, 11)], axis=1).astype(np.float32)
    for backend in (TorchBackend(model), OnnxBackend(onnx, threads=1)):
        assert backend.tile_rows == CPU_TILE_ROWS
        backend.tile_rows = None
        whole = backend.generate(cond, 3, start=5)
        backend.tile_rows = 4  # tiles of 4, 4 and 3 showers
        np.testing.assert_allclose(backend.generate(cond, 3, start=5), whole, rtol=1e-5, atol=1e-6 * whole.max())


def test_progress_counts_every_shower(files, tmp_path):
    _, _, onnx = files

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    chunks = [Conditions(np.full(k, 5.0), np.full(k, -11), {"x0": np.zeros(k)}) for k in (7, 3)]
    n = generate_to_file(tmp_path / "g.h5", OnnxBackend(onnx, threads=1), iter(chunks), batch_size=4, progress=bar)
    assert n == bar.n == 10 and inspect(tmp_path / "g.h5").conditions == ("x0",)


def test_cli_generate_onnxruntime_matches_torch(files, tmp_path, capsys):
    _, ckpt, onnx = files
    common = ["-n", "50", "--energy", "2:9", "--seed", "2", "--no-progress"]
    assert main(["generate", "--model", str(onnx), "-o", str(tmp_path / "o.h5"), "--batch-size", "7", "--threads", "1", *common]) == 0
    assert "writing included; onnxruntime on cpu, 1 threads)" in capsys.readouterr().out
    assert main(["generate", "--model", str(ckpt), "-o", str(tmp_path / "t.h5"), "--backend", "torch", "--batch-size", "50", *common]) == 0
    o, t = read_showers(tmp_path / "o.h5"), read_showers(tmp_path / "t.h5")
    np.testing.assert_array_equal(o.e_inc, t.e_inc)
    np.testing.assert_allclose(o.cells, t.cells, rtol=1e-5, atol=1e-6 * t.cells.max())
    attrs = inspect(tmp_path / "o.h5").attrs
    assert attrs["backend"] == "onnxruntime" and attrs["convention"] == "active" and attrs["generator"] == "calogan wgan"
    assert attrs["model_step"] == 4
    assert main(["info", str(tmp_path / "o.h5")]) == 0


def test_cli_generate_bf16_autocast_on_cpu(files, tmp_path, capsys):
    _, ckpt, _ = files
    args = ["generate", "--model", str(ckpt), "-n", "20", "--seed", "1", "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "a.h5")]) == 0
    assert main([*args, "-o", str(tmp_path / "b.h5"), "--precision", "bf16", "--threads", "1"]) == 0
    assert "writing included; torch on cpu, 1 threads, bf16)" in capsys.readouterr().out.splitlines()[-1]
    a, b = read_showers(tmp_path / "a.h5"), read_showers(tmp_path / "b.h5")
    assert not np.array_equal(a.cells, b.cells)
    np.testing.assert_allclose(b.cells.sum(1), a.cells.sum(1), rtol=0.05)


def test_cli_generate_option_errors(files, tmp_path, capsys):
    _, ckpt, onnx = files
    out = str(tmp_path / "g.h5")
    cases = [
        (["--model", str(onnx), "--backend", "torch"], "backend torch needs a checkpoint (.pt)"),
        (["--model", str(ckpt), "--backend", "onnxruntime"], "backend onnxruntime needs an exported .onnx file"),
        (["--model", str(onnx), "--compile"], "precision and compile are torch options"),
        (["--model", str(ckpt), "--threads", "0"], "--threads must be >= 1"),
        (["--model", str(ckpt), "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--model", str(ckpt), "--device", "gpu"], "device must be auto, cpu or cuda[:N]"),
    ]
    for extra, message in cases:
        assert main(["generate", "-n", "3", "-o", out, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("calogan generate: error: ") and message in err, err


def test_device_selection_without_cuda(files):
    import torch

    from calogan.runtime import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda:1' requested but this torch .* sees no CUDA device"):
            resolve_device("cuda:1")


def test_sampled_conditions_do_not_depend_on_the_chunk_size(files):
    from calogan.generate import sample_conditions

    spec = files[0].conditions
    for energy in ("1:10", "1:10:log", "2,4,8"):

        def draw(chunk, energy=energy):
            chunks = list(sample_conditions(spec, 25, energy=energy, seed=1, chunk_size=chunk))
            return np.concatenate([c.e_inc for c in chunks]), np.concatenate([c.conditions["x0"] for c in chunks])

        (e1, x1), (e2, x2) = draw(25), draw(4)
        np.testing.assert_array_equal(e1, e2)
        np.testing.assert_array_equal(x1, x2)


def test_extrapolation_is_warned_once_per_run(files):
    import warnings

    from calogan.generate import sample_conditions

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunks = list(sample_conditions(files[0].conditions, 25, energy="0.5:20", seed=1, chunk_size=4))
    lo, hi = files[0].conditions.ranges[0]  # the toy training set's energies
    assert len(chunks) == 7 and [str(w.message) for w in caught] == [
        f"e_inc outside the training range [{lo:g}, {hi:g}]: the model extrapolates"
    ]
