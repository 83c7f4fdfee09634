"""Fault injection: ``simulate``, ``generate``, ``train`` and ``evaluate`` killed at random points.

Each run starts the real command line in a child process, waits until its work has begun (its
temporary, its run folder or its progress line appears), waits a random time more and sends
SIGKILL (no chance to clean up), SIGINT (Ctrl-C) or SIGTERM. Then: no partial output is visible
(an output is absent or complete), the inputs are byte for byte what they were, a stopped run
(SIGINT, SIGTERM) exits 130 or 143 with one line and left no temporary, and a rerun of the same
command (``train``: ``--resume`` when a checkpoint was written) completes and removes what a
killed run left. The random points come from ``CALOGAN_FAULT_SEED`` (default 13); each run prints
what happened (``pytest -s``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import calogan
from calogan import report
from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.cli import main
from calogan.geometry import Geometry, Layer
from calogan.io import inspect, write_showers
from calogan.models import build_model
from calogan.models.base import ConditionSpec
from calogan.runtime import StaleTemporaryWarning, stale_temporaries
from calogan.transforms import ShowerTransform, TransformConfig
from conftest import toy_showers

pytestmark = pytest.mark.slow

GEOMETRY = Geometry("toy", (Layer("front", (2, 4), (10.0, 5.0), 30.0), Layer("back", (3, 3), (20.0, 20.0), 60.0)))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEED = int(os.environ.get("CALOGAN_FAULT_SEED", "13"))
SOURCE = str(Path(calogan.__file__).parents[1])  # the child processes run the calogan these tests import
# The report's figures take seconds to draw and are not what is tested here (tests/test_report.py draws them).
NO_FIGURES = "from calogan import report; report.render_html = lambda evaluation, dpi=80: '<!DOCTYPE html><html></html>'"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    data = toy_showers(GEOMETRY, n=2000, seed=1)
    (folder / "geometry.json").write_text(GEOMETRY.to_json())
    t = ShowerTransform.fit(TransformConfig(), data.cells, data.e_inc)
    model = build_model("wgan", GEOMETRY, ConditionSpec.from_data(data), t, {"critic_hidden": [8], "latent_dim": 3})
    model.prepare(data)
    return {
        "geo": folder / "geometry.json",
        "train": write_showers(folder / "train.h5", data),
        "ref": write_showers(folder / "ref.h5", toy_showers(GEOMETRY, n=600, seed=2)),
        "cand": write_showers(folder / "cand.h5", toy_showers(GEOMETRY, n=600, seed=3)),
        "best": save_checkpoint(folder / "best.pt", model.eval(), step=1, data_attrs={"particle": "e+"}),
    }


def digest(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def command(kind: str, inputs: dict[str, Path], out: Path) -> list[str]:
    """The command of a kind of run, writing into ``out`` (a file, or the run or report folder)."""
    return {
        "simulate": ["simulate", "-n", "6000", "--chunk-size", "500", "--geometry", str(inputs["geo"]), "--seed", "1", "-o", str(out)],
        "generate": ["generate", "--model", str(inputs["best"]), "-n", "100000", "--batch-size", "2000", "-o", str(out), "--no-progress"],
        "train": [
            "train",
            "--config",
            str(CONFIGS / "wgan_demo.yaml"),
            "--data",
            str(inputs["train"]),
            "-o",
            str(out),
            "--quiet",
            *("--set", "max_steps=20", "--set", "checkpoint_every=5", "--set", "val_every=10", "--set", "max_minutes=null"),
        ],
        "evaluate": ["evaluate", str(inputs["ref"]), str(inputs["cand"]), "-o", str(out), "--fast", "--energy-bins", "2"],
    }[kind]


def started(kind: str, out: Path, err_file: Path) -> bool:
    """Whether the run's work has begun: its temporary exists (simulate, generate), its run folder
    (train: made once the data are read and the model built), its first progress line (evaluate)."""
    if kind in ("simulate", "generate"):
        return any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())
    if kind == "train":
        return (out / "config.yaml").exists()
    return "reading" in err_file.read_text()


def complete(kind: str, out: Path) -> bool:
    """Whether a visible output is whole (it must then be readable in full)."""
    if kind == "simulate":
        return inspect(out).n == 6000
    if kind == "generate":
        return inspect(out).n == 100000
    if kind == "train":
        return load_checkpoint(out / "last.pt").step in range(5, 21, 5)
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics["candidates"][0]["label"] == "cand" and (out / "report.html").exists()


def finished(kind: str, out: Path) -> bool:
    """Whether the run did all of its work (train: every step), not only left a whole output."""
    if not out.exists():
        return False
    if kind == "train":
        return (out / "last.pt").exists() and load_checkpoint(out / "last.pt").step == 20
    return complete(kind, out)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# (command, signal, the random point is drawn uniformly from the first this many seconds of its work)
RUNS = [
    ("simulate", signal.SIGKILL, 0.5),
    ("simulate", signal.SIGINT, 0.5),
    ("simulate", signal.SIGTERM, 0.5),
    ("generate", signal.SIGKILL, 0.6),
    ("generate", signal.SIGINT, 0.6),
    ("train", signal.SIGKILL, 1.0),
    ("train", signal.SIGINT, 1.0),
    ("evaluate", signal.SIGKILL, 0.5),
    ("evaluate", signal.SIGINT, 0.5),
]


@pytest.mark.parametrize("kind,signum,span", RUNS, ids=[f"{k}-{s.name}" for k, s, _ in RUNS])
def test_a_run_killed_at_a_random_point_leaves_no_partial_output(kind, signum, span, inputs, tmp_path, monkeypatch):
    rng = random.Random(f"{SEED}-{kind}-{signum.name}")
    before = digest(inputs.values())
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / {"simulate": "sim.h5", "generate": "gen.h5", "train": "run", "evaluate": "report"}[kind]
    argv = command(kind, inputs, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CALOGAN_THREADS": "1", "PYTHONPATH": SOURCE}
    err_file = tmp_path / "stderr.txt"
    prefix = (
        [sys.executable, "-c", f"{NO_FIGURES}; import sys; from calogan.cli import main; sys.exit(main())"] if kind == "evaluate" else []
    )
    with open(err_file, "w") as err:
        proc = subprocess.Popen(
            [*(prefix or [sys.executable, "-m", "calogan"]), *argv],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a test runner in the background ignores SIGINT
        )
        t0 = time.monotonic()
        while proc.poll() is None and not started(kind, out, err_file):
            assert time.monotonic() - t0 < 300, "the run never started its work"
            time.sleep(0.01)
        delay = rng.uniform(0, span)
        time.sleep(delay)
        alive = proc.poll() is None
        t_signal = time.monotonic()
        if alive:
            proc.send_signal(signum)
        code = proc.wait(timeout=120)
        stopped_in = time.monotonic() - t_signal
    err = err_file.read_text()
    if alive and signum != signal.SIGKILL and code in (0, -signum) and finished(kind, out):
        # the signal came after the work: the command had done it and returned, restoring the
        # default disposition that preexec_fn gave it, and the interpreter was exiting (-signum),
        # or its handler saw the stop request only once nothing was left to stop (0)
        alive = False
    what = f"{kind} {signum.name} {delay:.2f} s into the work: " + (f"exit {code} after {stopped_in:.2f} s" if alive else "finished first")

    # what the run left: an output is absent or complete, the inputs are untouched
    shown = visible(folder)
    assert shown in ([], [out.name]), what
    if shown and kind != "train":
        assert complete(kind, out), what
    if kind == "train" and (out / "last.pt").exists():
        assert complete(kind, out), what
    assert digest(inputs.values()) == before, what
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    leftovers += [p.name for p in out.iterdir() if p.name.startswith(".")] if out.is_dir() else []
    if alive and signum != signal.SIGKILL:
        assert code == 128 + signum, f"{what}\n{err}"
        assert f"stopped by {signum.name}" in err and "Traceback" not in err and "Exception ignored" not in err, err
        assert leftovers == [], what  # a stopped run cleans up after itself
        if kind == "train" and not (out / "last.pt").exists() and not (out / "best.pt").exists():
            assert shown == [], what  # stopped before its first checkpoint and validation: no run folder
        assert stopped_in < 10, what
    elif alive:
        assert code == -signal.SIGKILL, what

    # the same command again completes (train resumes from its checkpoint) and removes what the killed run left
    if kind == "evaluate":
        monkeypatch.setattr(report, "render_html", lambda evaluation, dpi=80: "<!DOCTYPE html><html></html>")
    rerun = argv
    if kind == "train" and (out / "last.pt").exists():
        what += f" (last.pt at step {load_checkpoint(out / 'last.pt').step}: resumed)"
        rerun = ["train", "-o", str(out), "--resume", "--quiet"]
    elif shown:
        rerun = [*argv, "--force"]
    monkeypatch.setenv("CALOGAN_THREADS", "1")
    stale = stale_temporaries(folder) + (stale_temporaries(out) if out.is_dir() else [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(rerun) == 0, f"{what}; rerun {rerun}"
    removed = [str(w.message) for w in caught if w.category is StaleTemporaryWarning]
    assert len(removed) == len(stale) and all(any(str(p) in m for m in removed) for p in stale), (what, removed, stale)
    assert visible(folder) == [out.name] and complete(kind, out), what
    if kind == "train":
        assert load_checkpoint(out / "last.pt").step == 20
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], what
    if out.is_dir():
        assert not [p for p in out.iterdir() if p.name.startswith(".")], what
    assert digest(inputs.values()) == before
    print(f"\n{what}; left {shown or 'nothing'} visible and {len(leftovers)} temporaries; the rerun removed them and completed")


def test_two_runs_writing_the_same_file_at_once(inputs, tmp_path):
    """Exactly one of two ``calogan generate -o g.h5`` started together writes g.h5; the other is
    refused (it exists, or it appeared meanwhile) and leaves nothing."""
    out = tmp_path / "g.h5"
    argv = [sys.executable, "-m", "calogan", *command("generate", inputs, out)]
    argv[argv.index("100000")] = "50000"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CALOGAN_THREADS": "1", "PYTHONPATH": SOURCE}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read(), p.stdout.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err, _ in results if code == 2)
    assert "appeared while calogan was writing it" in loser or "exists; pass --force" in loser
    assert os.listdir(tmp_path) == ["g.h5"] and inspect(out).n == 50000
