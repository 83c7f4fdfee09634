import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from calogan import __version__
from calogan.checkpoint import save_checkpoint
from calogan.cli import main
from calogan.export import (
    ExportError,
    ShowerGraph,
    check_conditions,
    condition_columns,
    export_onnx,
    parity,
    read_metadata,
)
from calogan.fastsim import latent_noise
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

SMALL = {"latent_dim": 4, "generator_hidden": [16, 16], "critic_hidden": [8]}


def wgan(geometry, keys=("e_inc",), particles=(-11,)):
    n = 40
    rng = np.random.default_rng(1)
    extra = {"x0": rng.uniform(-5, 5, n), "theta": rng.uniform(0, 0.3, n)}
    data = toy_showers(geometry, n=n, **{k: extra[k] for k in keys[1:]})
    if len(particles) > 1:
        data = type(data)(data.geometry, data.cells, data.e_inc, np.array(particles)[np.arange(n) % len(particles)], data.conditions)
    t = ShowerTransform.fit(TransformConfig(log=True, scale="standard"), data.cells, data.e_inc)
    m = build_model("wgan", geometry, ConditionSpec.from_data(data, keys), t, SMALL)
    m.prepare(data)
    with torch.no_grad():  # an untrained generator outputs mostly empty cells: give it some signal
        m.generator[-1].bias.add_(2.0)
    return m.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from calogan.geometry import Geometry, Layer

    geometry = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))
    model = wgan(geometry, keys=("e_inc", "x0", "theta"))
    folder = tmp_path_factory.mktemp("export")
    report = export_onnx(model, folder / "model.onnx", attrs={"convention": "active", "particle": "e+", "step": 12})
    return model, report


def test_export_is_one_file_with_parity_and_metadata(exported):
    model, report = exported
    assert sorted(p.name for p in report.path.parent.iterdir()) == ["model.onnx"]  # no side file, no temporary left
    assert report.parity.ok and report.parity.n == 256
    assert report.parity.max_abs <= report.parity.atol + report.parity.rtol * 1e4
    proto = onnx.load(str(report.path), load_external_data=False)
    assert not [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    outputs = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output}
    assert inputs["conditions"][1] == 3 and inputs["noise"][1] == 4 and outputs["cells"][1] == model.geometry.n_cells
    assert all(isinstance(v[0], str) for v in (*inputs.values(), *outputs.values()))  # symbolic batch axis
    meta = read_metadata(report.path)
    assert (meta.family, meta.latent_dim, meta.calogan_version) == ("wgan", 4, __version__)
    assert meta.geometry == model.geometry and meta.conditions == model.conditions
    assert meta.attrs["convention"] == "active" and meta.attrs["particle"] == "e+" and meta.attrs["step"] == 12
    assert meta.attrs["condition_columns"] == ["e_inc [GeV]", "x0 [mm]", "theta [rad]"]
    assert meta.attrs["parity"]["ok"] is True and meta.attrs["parity"]["max_abs_mev"] == report.parity.max_abs


def test_onnx_gives_torch_cells_in_mev_at_any_batch_size(exported):
    model, report = exported
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    graph = ShowerGraph(model).eval()
    for b in (1, 7, 300):
        cond = check_conditions(model.conditions, b, seed=b)
        noise = latent_noise(3, 0, b, 4)
        got = session.run(["cells"], {"conditions": cond, "noise": noise})[0]
        with torch.no_grad():
            # physical MeV: the generator followed by the transform's inverse
            want = model.transform.inverse(model(torch.from_numpy(cond), torch.from_numpy(noise)), torch.from_numpy(cond[:, 0])).numpy()
            np.testing.assert_array_equal(graph(torch.from_numpy(cond), torch.from_numpy(noise)).numpy(), want)
        assert got.shape == (b, model.geometry.n_cells) and (got >= 0).all() and got.max() > 1.0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())


def test_failed_parity_or_existing_output_leaves_no_file(exported, tmp_path, monkeypatch):
    model, report = exported
    with pytest.raises(ExportError, match=r"model.onnx: exists; pass --force"):
        export_onnx(model, report.path)
    import calogan.export as export_module

    real = export_module._torch_cells
    monkeypatch.setattr(export_module, "_torch_cells", lambda *a: real(*a) * 1.01)  # a 1 % disagreement
    with pytest.raises(ExportError, match=r"parity check failed, no file written: onnxruntime and torch differ by up to"):
        export_onnx(model, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_parity_exact_answers():
    ref = np.array([[100.0, 10.0, 0.0], [50.0, 0.01, 0.0]])
    p = parity(ref, ref + np.array([[0.01, 0.001, 0.0], [0.0, 0.0, 0.0]]))
    assert p.atol == pytest.approx(1e-3)  # 1e-5 of the largest cell
    assert p.max_abs == pytest.approx(0.01) and p.max_rel == pytest.approx(1e-4)  # 0.01 cell (< 0.1 % of max) not in max_rel
    assert p.ok  # 0.01 <= 1e-3 + 1e-4 * 100
    bad = parity(ref, ref + np.array([[0.0, 0.0, 0.002], [0.0, 0.0, 0.0]]))
    assert not bad.ok and bad.worst == (0, 2)  # an empty cell off by 2 keV > atol 1 keV
    assert not parity(ref, np.where(ref > 60, np.nan, ref)).ok
    assert parity(ref, ref, atol=0.0, rtol=0.0).ok
    with pytest.raises(ExportError, match="shapes differ"):
        parity(ref, ref[:1])


def test_condition_columns_and_check_conditions():
    spec = ConditionSpec(("e_inc", "x0", "phi"), ((1.0, 100.0), (-50.0, 50.0), (0.0, 6.0)), (-11, 22, 211))
    assert condition_columns(spec) == [
        "e_inc [GeV]",
        "x0 [mm]",
        "phi [rad]",
        "particle is e+ (one-hot)",
        "particle is gamma (one-hot)",
        "particle is pi+ (one-hot)",
    ]
    c = check_conditions(spec, 2000, seed=1)
    assert c.shape == (2000, 6) and c.dtype == np.float32
    assert c[:, 0].min() >= 1 and c[:, 0].max() <= 100 and abs(np.median(c[:, 0]) - 10) < 1.5  # log-uniform
    assert c[:, 1].min() >= -50 and c[:, 1].max() <= 50
    np.testing.assert_array_equal(c[:, 3:].sum(1), 1.0)  # one-hot
    assert set(np.unique(c[:, 3:].argmax(1))) == {0, 1, 2}


def test_read_metadata_refuses_other_files(tmp_path):
    with pytest.raises(ExportError, match=r"none.onnx: no such ONNX file"):
        read_metadata(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not a model")
    with pytest.raises(ExportError, match=r"junk.onnx: not a readable ONNX file"):
        read_metadata(junk)
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", [x], [y])), str(plain))
    with pytest.raises(ExportError, match=r"plain.onnx: not a calogan ONNX export"):
        read_metadata(plain)


@pytest.mark.parametrize("family", ["calogan", "cond_calogan"])
def test_calogan_families_export(family, toy_geometry, tmp_path):
    tiny = {"latent_dim": 8, "dense_channels": 4, "conv_channels": 4, "local_channels": 3, "disc_channels": [4, 4, 3, 3]}
    keys = ("e_inc",) if family == "calogan" else ("e_inc", "x0", "theta", "phi")
    rng = np.random.default_rng(0)
    conds = {"x0": rng.uniform(-5, 5, 30), "theta": rng.uniform(0, 0.3, 30), "phi": rng.uniform(0, 6.2, 30)}
    data = toy_showers(toy_geometry, n=30, **{k: conds[k] for k in keys[1:]})
    t = ShowerTransform.fit(TransformConfig(energy="gev", scale="none"), data.cells, data.e_inc)
    extra = {"regression_hidden": [8], "blur_mm": 12.0} if family == "cond_calogan" else {}
    model = build_model(family, toy_geometry, ConditionSpec.from_data(data, keys), t, {**tiny, **extra})
    model.prepare(data)
    report = export_onnx(model.eval(), tmp_path / f"{family}.onnx", n_check=64)
    assert report.parity.ok and read_metadata(report.path).family == family


def test_cli_export(toy_geometry, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "best.pt", wgan(toy_geometry), step=3, data_attrs={"convention": "total", "particle": "e+"})
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(ckpt), "-o", str(out), "--check-showers", "32"]) == 0
    text = capsys.readouterr().out
    assert "exported the wgan generator (step 3)" in text and "one file" in text
    assert "conditions (B, 1) float32 [e_inc [GeV]]; noise (B, 4) float32 N(0, 1)" in text
    assert "parity : onnxruntime vs torch, max abs diff" in text and text.rstrip().endswith(": ok")
    meta = read_metadata(out)
    assert meta.attrs["convention"] == "total" and meta.attrs["step"] == 3 and meta.attrs["source"] == str(ckpt)
    assert json.loads(json.dumps(meta.attrs["parity"]))["n"] == 32
    assert main(["export", "--model", str(ckpt), "-o", str(out)]) == 2
    assert "m.onnx: exists; pass --force" in capsys.readouterr().err
    assert main(["export", "--model", str(ckpt), "-o", str(tmp_path / "m.bin")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err


def test_multi_particle_model_takes_a_one_hot(toy_geometry, tmp_path):
    from calogan.fastsim import OnnxBackend, TorchBackend

    model = wgan(toy_geometry, particles=(-11, 22))
    report = export_onnx(model, tmp_path / "two.onnx", n_check=32)
    assert read_metadata(report.path).attrs["condition_columns"] == [
        "e_inc [GeV]",
        "particle is e+ (one-hot)",
        "particle is gamma (one-hot)",
    ]
    onnx_b, torch_b = OnnxBackend(report.path, threads=1), TorchBackend(model)
    e = np.array([2.0, 2.0, 7.0])
    a = onnx_b.simulate(["e+", "gamma", "gamma"], e, seed=1)
    np.testing.assert_allclose(a, torch_b.simulate(["e+", "gamma", "gamma"], e, seed=1), rtol=1e-5, atol=1e-5 * a.max())
    assert not np.allclose(a[0], a[1])  # same energy and noise, another particle
