"""Bad input to every command: exit code 2, one line naming the file, key or option, no output, inputs unchanged.

Each case runs the command line in this process (``calogan.cli.main``) on tiny files in one
folder, and checks the exit code, that the message holds the expected words on one line with no
traceback, and that afterwards the folder holds exactly the same files with the same bytes
(hashed): the command wrote nothing, not even a temporary, and changed no input.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from calogan.checkpoint import save_checkpoint
from calogan.cli import main
from calogan.fastsim.onnx_format import FORMAT, FORMAT_VERSION, METADATA_PREFIX
from calogan.geometry import Geometry, Layer
from calogan.io import write_showers
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

GEOMETRY = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))


def tiny_onnx(path: Path, spec: ConditionSpec, latent_dim: int = 3) -> Path:
    """A minimal file in calogan's ONNX format (the metadata ``calogan export`` writes, a one-layer graph
    cells = relu(noise @ w)): what the onnxruntime backend needs, without the seconds a real export takes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((latent_dim, GEOMETRY.n_cells), 50.0, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["noise", "w"], ["mm"]), helper.make_node("Relu", ["mm"], ["cells"])],
        "tiny",
        [
            helper.make_tensor_value_info("conditions", TensorProto.FLOAT, ["B", spec.n_cond]),
            helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["B", latent_dim]),
        ],
        [helper.make_tensor_value_info("cells", TensorProto.FLOAT, ["B", GEOMETRY.n_cells])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "family": "wgan",
        "geometry": GEOMETRY.to_json(),
        "conditions": json.dumps(spec.to_dict()),
        "latent_dim": str(latent_dim),
        "particle": "e+",
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, str]:
    """The folder of every case's inputs; returns the placeholders the cases use."""
    w = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    data = toy_showers(GEOMETRY, n=120, seed=1, x0=rng.uniform(-5, 5, 120))
    files = {"w": w, "toy": write_showers(w / "toy.h5", data)}
    files["toy2"] = write_showers(w / "toy2.h5", toy_showers(GEOMETRY, n=100, seed=2, x0=rng.uniform(-5, 5, 100)))
    # incident energies stored in MeV instead of GeV: the response looks 1000 times too small
    files["mev"] = write_showers(w / "mev.h5", replace(data, e_inc=data.e_inc * 1000.0))
    files["zero"] = write_showers(w / "zero.h5", replace(data, cells=np.zeros_like(data.cells)))
    files["one"] = write_showers(w / "one.h5", data.select(slice(0, 1)))
    files["group"] = w / "group.h5"  # layer_1 is a group, not a dataset; no geometry attribute to fall back on
    with h5py.File(files["toy"], "r") as src, h5py.File(files["group"], "w") as f:
        for key in src:
            if key == "layer_1":
                f.create_group(key)
            else:
                f[key] = src[key][:]
    files["geo"] = w / "geometry.json"
    files["geo"].write_text(GEOMETRY.to_json())
    files["empty"] = w / "empty.pt"
    files["empty"].write_bytes(b"")
    files["text"] = w / "notes.pt"
    files["text"].write_text("not a checkpoint\n")
    spec = ConditionSpec.from_data(data, ("e_inc", "x0"))
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    model = build_model("wgan", GEOMETRY, spec, t, {"critic_hidden": [8], "generator_hidden": [8], "latent_dim": 3})
    model.prepare(data)
    files["best"] = save_checkpoint(w / "best.pt", model.eval(), step=1, data_attrs={"particle": "e+", "convention": "total"})
    files["onnx"] = tiny_onnx(w / "model.onnx", spec)
    return {k: str(v) for k, v in files.items()}


def snapshot(folder: str) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones included) with the sha256 of its bytes."""
    out = {}
    for root, dirs, names in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder) + "/"] = ""
        for n in names:
            path = os.path.join(root, n)
            out[os.path.relpath(path, folder)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


TRAIN = "train --threads 1 --quiet --set batch_size=8 --set d_steps=1 --set max_steps=2 --set model.latent_dim=3"
GEN = "generate --model {best} -n 5 -o {w}/g.h5"
EVAL = "evaluate {toy} {toy2} --fast --quiet"
INTERP = "interpolate --model {best} -o {w}/f.png"
CAL = "calibrate-model --model {best} --train {toy} --validation {toy}"
BENCH = "benchmark --backends torch --batch-sizes 2 --min-time 0"

# (command line, words the message must hold); every case must exit 2. The defects are
# marked: they failed on the code before this suite (a traceback, exit 0, a destroyed input).
CASES = [
    # info
    ("info {group}", ["group.h5", "key 'layer_1'", "is a group, expected a dataset"]),  # defect: traceback
    ("info {mev}", ["mev.h5", "key 'energy'", "units wrong?", "GeV"]),  # defect: exit 0, response 0.001
    ("info {empty}", ["empty.pt", "empty file (0 bytes)"]),
    ("info {toy} --limit 0", ["--limit must be >= 1"]),
    ("info {toy} --geometry calogan", ["toy.h5", "key 'layer_0'", "geometry 'calogan' expects"]),
    # split and select
    ("split {toy} --fractions 0.5,0.5 -o {w}/a.h5 {w}/a.h5", ["a.h5", "given twice as an output"]),  # defect: half written
    ("split {toy} --fractions 0.5,0.5 -o {toy} {w}/b.h5 --force", ["toy.h5", "is also an input"]),
    ("split {toy} --fractions 0.5,nan -o {w}/a.h5 {w}/b.h5", ["--fractions must be positive", "0.5,nan"]),
    ("split {group} -o {w}/a.h5 {w}/b.h5", ["group.h5", "key 'layer_1'", "is a group"]),  # defect: traceback
    ("select {toy} --energy 1:5 -o {toy} --force", ["toy.h5", "is also an input"]),
    ("select {toy} --energy nan:20 -o {w}/s.h5", ["--energy needs 0 <= LO < HI", "nan:20"]),
    ("select {toy} --energy 1:5 -o {geo}/s.h5", ["geometry.json is a file, not a directory"]),
    # simulate
    ("simulate -n 10 --geometry {geo} --energy nan -o {w}/s.h5", ["--energy", "must be finite"]),
    ("simulate -n 10 --geometry {geo} --energy 1:inf -o {w}/s.h5", ["--energy", "must be finite", "1:inf"]),
    ("simulate -n 10 --geometry {geo} --x0 nan -o {w}/s.h5", ["--x0", "must be finite"]),
    ("simulate -n 10 --geometry {geo} --params {empty} -o {w}/s.h5", ["empty.pt", "not valid JSON"]),
    ("simulate -n 10 --geometry {geo} -o {w}/missing/s.h5", ["missing does not exist"]),
    ("simulate -n 10 --geometry {geo} -o {geo} --force", ["geometry.json", "is also an input"]),  # defect: input destroyed
    # calibrate
    ("calibrate {toy} -o {toy} --force --particle e+ --convention total", ["toy.h5", "is also an input"]),  # defect: checked at the end
    ("calibrate {mev} -o {w}/p.json --particle e+ --convention total", ["mev.h5", "units wrong?"]),
    ("calibrate {toy} -o {w}/p.json --bin-width nan --particle e+ --convention total", ["--bin-width", "finite"]),  # defect: traceback
    # train
    (TRAIN + " --data {one} -o {w}/run", ["one.h5", "holds 1 shower"]),  # defect: traceback, empty folder left
    (TRAIN + " --data {zero} -o {w}/run", ["zero.h5", "every cell of its 120 showers is zero"]),  # defect: traceback
    (TRAIN + " --data {mev} -o {w}/run", ["mev.h5", "units wrong?"]),  # defect: trained on it
    (TRAIN + " --data {group} -o {w}/run", ["group.h5", "is a group"]),  # defect: traceback
    (TRAIN + " --data {toy} -o {toy}", ["toy.h5", "is also an input"]),
    (TRAIN + " --data {toy} -o {geo}/run", ["geometry.json is a file, not a directory"]),  # defect: traceback
    (TRAIN + " --data {toy} -o {w}/run --set lr_g=nan", ["option lr_g", "must be > 0"]),
    (TRAIN + " --data {toy} -o {w}/run --set val_fraction=0.001", ["val_fraction 0.001", "leaves 0 for validation"]),
    ("train -o {w}/norun --resume --quiet", ["--resume", "last.pt does not exist"]),
    # tune
    (
        "tune --config {w}/missing.yaml --space {w}/s.yaml --trials 1 --storage sqlite:///{w}/s.db -o {w}/t",
        ["missing.yaml", "cannot read config"],
    ),
    # models
    ("models no-such-model", ["no shipped model 'no-such-model'"]),
    # generate
    (GEN + " --energy nan", ["--energy 'nan'", "finite"]),  # defect: exit 0, unreadable file
    (GEN + " --energy inf", ["--energy 'inf'", "finite"]),  # defect: exit 0
    (GEN + " --energy 10,nan", ["--energy '10,nan'", "finite"]),  # defect: exit 0
    (GEN + " --energy 10:inf:log", ["--energy '10:inf:log'", "finite"]),  # defect: traceback
    (GEN + " --energy 10 --condition x0=nan", ["--condition x0 'nan'", "finite"]),  # defect: exit 0
    ("generate --model {onnx} -n 5 --energy nan -o {w}/g.h5", ["--energy 'nan'", "finite"]),  # defect: exit 0
    ("generate --model {onnx} -n 5 --energy 10 --condition x0=inf -o {w}/g.h5", ["--condition x0 'inf'", "finite"]),
    ("generate --model {empty} -n 5 -o {w}/g.h5", ["empty.pt", "empty file (0 bytes), not a checkpoint"]),  # defect: traceback
    ("generate --model {text} -n 5 -o {w}/g.h5", ["notes.pt", "not a calogan checkpoint"]),
    ("generate --model {toy} -n 5 -o {w}/g.h5", ["toy.h5", "an HDF5 file (showers?), not a checkpoint"]),
    ("generate --model {best} -n 5 -o {best} --force", ["best.pt", "is also an input"]),  # defect: checkpoint destroyed
    ("generate --model {onnx} -n 5 -o {onnx} --force", ["model.onnx", "is also an input"]),  # defect: model destroyed
    ("generate --model {best} --energy-from {toy} -o {toy} --force", ["toy.h5", "is also an input"]),
    ("generate --model {best} --energy-from {mev} -o {w}/g.h5", ["mev.h5", "units wrong?"]),
    ("generate --model {best} --energy-from {group} -o {w}/g.h5", ["group.h5", "is a group"]),  # defect: traceback
    ("generate --model {best} -n ten -o {w}/g.h5", ["-n", "invalid int value: 'ten'"]),
    # evaluate
    (EVAL + " -o {w}/ev --energy-bins nan,2", ["--energy-bins", "finite"]),  # defect: NaN bins accepted
    (EVAL + " -o {w}/ev --energy-bins nan", ["--energy-bins", "finite"]),  # defect: traceback
    (EVAL + " -o {w}/ev --threshold nan", ["--threshold must be >= 0 MeV"]),
    (EVAL + " -o {geo}/ev", ["geometry.json is a file, not a directory"]),  # defect: traceback after all the work
    (EVAL + " -o {toy}", ["toy.h5", "is also an input"]),
    ("evaluate {toy} {mev} -o {w}/ev --fast --quiet", ["mev.h5", "units wrong?"]),  # defect: evaluated
    ("evaluate {toy} {group} -o {w}/ev --fast --quiet", ["group.h5", "is a group"]),  # defect: traceback
    # interpolate
    (INTERP + " --vary e_inc --range nan:10", ["--range", "finite", "nan:10"]),  # defect: NaN in sweep ranges
    (INTERP + " --vary e_inc --range 1:inf", ["--range", "finite"]),
    (INTERP + " --vary x0 --range 1:2 --fix e_inc=nan", ["--fix e_inc", "finite"]),
    (INTERP + " --vary x0 --range 1:2 --json {w}/f.png", ["f.png", "given twice as an output"]),  # defect: same path twice
    (INTERP + " --vary x0 --range 1:2 --json {best} --force", ["best.pt", "is also an input"]),
    (INTERP + " --vary e_inc --range 1:2 --compare {group}", ["group.h5", "is a group"]),  # defect: figure written, then traceback
    ("interpolate --model {empty} --vary e_inc --range 1:2 -o {w}/f.png", ["empty.pt", "empty file"]),  # defect: traceback
    # export
    ("export --model {empty} -o {w}/x.onnx", ["empty.pt", "empty file"]),  # defect: traceback
    ("export --model {onnx} -o {w}/x.onnx", ["model.onnx", "an ONNX export, not a checkpoint"]),
    ("export --model {best} -o {geo}/x.onnx", ["geometry.json is a file, not a directory"]),
    ("export --model {best} -o {w}/x.onnx --rtol nan", ["--rtol and --atol", "finite"]),
    # calibrate-model
    (CAL + " -o {w}/c.pt --noise lots", ["--noise lots", "comma-separated"]),
    (CAL + " -o {w}/c.pt --noise=-1", ["--noise", ">= 0"]),
    (CAL + " -o {best} --force", ["best.pt", "is also an input"]),
    (CAL + " -o {w}/c.pt --augment mirror_z", ["--augment", "mirror_z"]),
    ("calibrate-model --model {empty} --train {toy} --validation {toy} -o {w}/c.pt", ["empty.pt", "empty file"]),
    ("calibrate-model --model {best} --train {group} --validation {toy} -o {w}/c.pt", ["group.h5", "is a group"]),
    # benchmark
    (BENCH + " --model {empty}", ["empty.pt", "empty file"]),  # defect: traceback
    (BENCH + " --model {best} --max-row-seconds nan", ["max_row_seconds", "finite"]),
    (BENCH + " --model {best} -o {best} --force", ["best.pt", "is also an input"]),
]


@pytest.mark.parametrize("line,words", CASES, ids=[c[0].split(" --")[0][:40] + f"#{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_refused_cleanly(world, line, words, capsys):
    before = snapshot(world["w"])
    argv = line.format(**world).split()
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line and not line.startswith("calogan: warning:")]
    assert code == 2, err
    assert "Traceback" not in err and (len(lines) == 1 or lines[0].startswith("usage:")), err
    assert all(w in lines[-1] for w in words), f"{words} not all in {lines[-1]!r}"
    assert snapshot(world["w"]) == before  # nothing written (no temporary either), every input unchanged


def test_the_table_covers_every_command():
    import argparse

    from calogan.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert len(CASES) >= 40 and set(commands) == {line.split()[0] for line, _ in CASES}


def test_the_python_api_refuses_the_same_input(world, tmp_path):
    """The checks sit where data enter the library, so a Python caller gets the same errors (one
    ``CaloganError`` family, naming the file, key or parameter) as the command line."""
    from calogan.checkpoint import CheckpointError, load_checkpoint
    from calogan.data import Conditions
    from calogan.errors import CaloganError, ConfigError
    from calogan.generate import generate, sample_conditions
    from calogan.interpolate import traverse
    from calogan.io import ShowerFileError, read_showers, split_file
    from calogan.training import TrainConfig, train

    model = load_checkpoint(world["best"]).model
    calls = [
        (lambda: read_showers(world["mev"]), ShowerFileError, "units wrong?"),
        (lambda: read_showers(world["group"]), ShowerFileError, "key 'layer_1': is a group"),
        (lambda: load_checkpoint(world["empty"]), CheckpointError, "empty file (0 bytes)"),
        (lambda: next(generate(model, Conditions([10.0, np.nan], -11, {"x0": [0.0, 0.0]}))), ConfigError, "shower 1 has nan"),
        (lambda: next(generate(model, Conditions([10.0], -11, {"x0": [np.inf]}))), ConfigError, "condition x0 must be finite"),
        (lambda: next(sample_conditions(model.conditions, 5, energy="10,nan")), ConfigError, "energy '10,nan'"),
        (lambda: traverse(model, "x0", [0.0, np.nan]), ConfigError, "values of x0 must be finite"),
        (lambda: split_file(world["toy"], [tmp_path / "a.h5", tmp_path / "a.h5"], [0.5, 0.5]), CaloganError, "given twice"),
        (lambda: split_file(world["toy"], [tmp_path / "a.h5"], [float("nan")]), ConfigError, "fractions must be positive"),
        (lambda: train(TrainConfig(data=world["zero"]), tmp_path / "run"), ConfigError, "every cell of its 120 showers is zero"),
    ]
    for call, kind, words in calls:
        with pytest.raises(kind, match=re.escape(words)):
            call()
    assert os.listdir(tmp_path) == []
