"""The command line under interruption and concurrency, in this process: Ctrl-C, a closed pipe, a
read-only output folder, a file that appears meanwhile, a training run that fails or is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

import calogan
from calogan import io, training
from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.cli import main
from calogan.geometry import Geometry, Layer
from calogan.io import inspect, write_showers
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

GEOMETRY = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))
TINY = ["--set", "model.latent_dim=3", "--set", "model.generator_hidden=[8]", "--set", "model.critic_hidden=[8]"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    data = toy_showers(GEOMETRY, n=200, seed=1)
    (folder / "geometry.json").write_text(GEOMETRY.to_json())
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    model = build_model("wgan", GEOMETRY, ConditionSpec.from_data(data), t, {"critic_hidden": [8], "latent_dim": 3})
    model.prepare(data)
    return {
        "geo": folder / "geometry.json",
        "toy": write_showers(folder / "toy.h5", data),
        "toy2": write_showers(folder / "toy2.h5", toy_showers(GEOMETRY, n=100, seed=2)),
        "best": save_checkpoint(folder / "best.pt", model.eval(), step=1, data_attrs={"particle": "e+"}),
    }


@pytest.fixture(autouse=True)
def ctrl_c():
    """SIGINT as in an interactive shell; a test runner started in the background (``cmd &``)
    inherits it ignored, which calogan respects."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class _Object:
    pass


def _interrupt_inside_a_callback() -> None:
    """What happened to Ctrl-C now and then: the signal arrives while a weak-reference callback runs
    (h5py's WeakValueDictionary of HDF5 identifiers runs one whenever an identifier dies), Python runs
    the handler there, and the KeyboardInterrupt it raises is printed as "Exception ignored" and lost."""

    def callback(ref):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):
            pass

    obj = _Object()
    ref = weakref.ref(obj, callback)
    del obj, ref


@pytest.mark.parametrize("command", ["simulate", "generate"])
def test_the_first_ctrl_c_stops_the_command_even_inside_a_callback(command, files, tmp_path, monkeypatch, capfd):
    write = io.ShowerWriter.write

    def write_then_interrupt(self, data):
        write(self, data)
        if self.n == len(data):  # after the first chunk
            _interrupt_inside_a_callback()

    monkeypatch.setattr(io.ShowerWriter, "write", write_then_interrupt)
    out = tmp_path / "out.h5"
    argv = {
        "simulate": ["simulate", "-n", "3000", "--chunk-size", "500", "--geometry", str(files["geo"]), "-o", str(out)],
        "generate": ["generate", "--model", str(files["best"]), "-n", "3000", "--batch-size", "500", "-o", str(out), "--threads", "1"],
    }[command]
    assert main(argv) == 130
    err = capfd.readouterr().err
    assert f"calogan {command}: stopped by SIGINT" in err and "Exception ignored" not in err
    assert os.listdir(tmp_path) == []  # neither the output nor its temporary


def test_a_reader_that_goes_away_ends_the_command_quietly(files):
    """``calogan info F | head -1``: the pipe closes before calogan writes (here: at once)."""
    env = {**os.environ, "PYTHONPATH": str(Path(calogan.__file__).parents[1])}  # the calogan these tests import
    proc = subprocess.Popen(
        [sys.executable, "-m", "calogan", "info", str(files["toy"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 141 and err == ""


def test_a_read_only_output_folder_is_refused_before_any_work(files, tmp_path, monkeypatch, capsys):
    """root writes into read-only folders; a read-only file system refuses even root. The check asks
    access(), which answers so for both: mocked here to answer as for a read-only mount."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro and mode & os.W_OK else real(p, mode, **kw))

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(io.ShowerWriter, "write", no_work)  # simulate, generate, split, select
    monkeypatch.setattr(training, "_load_data", no_work)  # train
    monkeypatch.setattr("calogan.evaluation.Sample.file", no_work)  # evaluate
    monkeypatch.setattr("calogan.checkpoint.torch.load", no_work)  # export, interpolate, generate
    toy, best = str(files["toy"]), str(files["best"])
    for argv in [
        ["simulate", "-n", "10", "--geometry", str(files["geo"]), "-o", f"{ro}/s.h5"],
        ["generate", "--model", best, "-n", "10", "-o", f"{ro}/g.h5"],
        ["split", toy, "-o", f"{ro}/a.h5", f"{tmp_path}/b.h5"],
        ["select", toy, "--energy", "1:5", "-o", f"{ro}/s.h5"],
        ["train", "--data", toy, "-o", f"{ro}/run", "--quiet"],
        ["train", "--data", toy, "-o", f"{ro}/new/run", "--quiet"],
        ["evaluate", toy, str(files["toy2"]), "-o", f"{ro}/ev", "--fast"],
        ["export", "--model", best, "-o", f"{ro}/m.onnx"],
        ["interpolate", "--model", best, "--vary", "e_inc", "--range", "2:8", "-o", f"{ro}/f.png"],
        ["calibrate", toy, "-o", f"{ro}/p.json", "--particle", "e+", "--convention", "total"],
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"directory {ro} is not writable" in err, err
    assert os.listdir(ro) == [] and sorted(os.listdir(tmp_path)) == ["ro"]


def test_a_file_that_appears_while_generating_is_never_replaced(files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "g.h5"
    write = io.ShowerWriter.write

    def write_while_someone_else_writes(self, data):
        write(self, data)
        if not out.exists():
            out.write_bytes(b"theirs")  # another run, or a copy, finishes first

    monkeypatch.setattr(io.ShowerWriter, "write", write_while_someone_else_writes)
    assert main(["generate", "--model", str(files["best"]), "-n", "50", "-o", str(out)]) == 2
    assert "g.h5: appeared while calogan was writing it; left as it is" in capsys.readouterr().err
    assert out.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["g.h5"]


def _tiny_train(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "-o", str(out), "--threads", "1", "--quiet", *TINY, "--set", "batch_size=16", *extra]


def test_a_training_run_that_fails_before_its_first_checkpoint_leaves_nothing(files, tmp_path, monkeypatch, capsys):
    step = training._train_step
    fail_at = [3]

    def step_or_fail(state, *args):
        if state.step + 1 == fail_at[0]:
            raise training.TrainingDiverged(f"step {fail_at[0]}: non-finite loss (injected)")
        return step(state, *args)

    monkeypatch.setattr(training, "_train_step", step_or_fail)
    out = tmp_path / "runs" / "first"
    assert main(_tiny_train(files["toy"], out, "--set", "checkpoint_every=10", "--set", "max_steps=10")) == 2
    assert "step 3: non-finite loss" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # not even the parent folder it created
    out.parent.mkdir()  # a folder that existed before the run stays
    fail_at[0] = 7
    log_often = ["--set", "checkpoint_every=4", "--set", "val_every=2", "--set", "log_every=1", "--set", "max_steps=10"]
    assert main(_tiny_train(files["toy"], out, *log_often)) == 2
    # failed after a checkpoint: the run stays, to resume from
    assert sorted(os.listdir(out)) == ["best.pt", "config.yaml", "last.pt", "log.jsonl"] and load_checkpoint(out / "last.pt").step == 4
    monkeypatch.setattr(training, "_train_step", step)
    assert main(["train", "-o", str(out), "--resume", "--threads", "1", "--quiet"]) == 0
    assert load_checkpoint(out / "last.pt").step == 10
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # steps 5 and 6 were logged before the failure and again by the resumed run: the first ones were dropped
    assert [r["step"] for r in records if "d_loss" in r] == list(range(1, 11))
    assert [r["step"] for r in records if "val" in r] == [2, 4, 6, 8, 10]


def test_ctrl_c_before_the_first_checkpoint_leaves_no_run_folder(files, tmp_path, monkeypatch, capsys):
    step = training._train_step

    def step_then_ctrl_c(state, *args):
        if state.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return step(state, *args)

    monkeypatch.setattr(training, "_train_step", step_then_ctrl_c)
    assert main(_tiny_train(files["toy"], tmp_path / "run", "--set", "checkpoint_every=50", "--set", "max_steps=50")) == 130
    assert "calogan train: stopped by SIGINT" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_the_same_seed_gives_the_same_file_after_an_interrupted_run(files, tmp_path, monkeypatch):
    """An interrupted simulate leaves nothing; the rerun writes what an uninterrupted run writes."""
    argv = ["simulate", "-n", "1200", "--chunk-size", "400", "--geometry", str(files["geo"]), "--seed", "3", "-o"]
    assert main([*argv, str(tmp_path / "whole.h5")]) == 0
    write = io.ShowerWriter.write

    def write_then_interrupt(self, data):
        write(self, data)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(io.ShowerWriter, "write", write_then_interrupt)
    assert main([*argv, str(tmp_path / "again.h5")]) == 130
    assert os.listdir(tmp_path) == ["whole.h5"]
    monkeypatch.setattr(io.ShowerWriter, "write", write)
    assert main([*argv, str(tmp_path / "again.h5")]) == 0
    a, b = io.read_showers(tmp_path / "whole.h5"), io.read_showers(tmp_path / "again.h5")
    assert inspect(tmp_path / "again.h5").n == 1200 and np.array_equal(a.cells, b.cells)
