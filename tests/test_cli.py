import json
import subprocess
import sys
import time

import numpy as np

from calogan.cli import main
from calogan.io import write_showers
from conftest import geant4_file, toy_showers


def test_help_is_fast_and_does_not_import_torch():
    code = (
        "import sys, time; t = time.time(); from calogan.cli import build_parser; build_parser(); "
        "print(time.time() - t, any(m in sys.modules for m in ('torch', 'optuna', 'dask', 'distributed')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False"  # neither torch nor the distributed extra (optuna, dask)
    t0 = time.time()
    result = subprocess.run([sys.executable, "-m", "calogan", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "info" in result.stdout
    assert time.time() - t0 < 5  # the interpreter start included; the parser itself is timed above
    assert float(out[0]) < 1.0


def test_info_prints_a_summary(tmp_path, toy_geometry, capsys):
    data = toy_showers(toy_geometry, n=20)
    path = write_showers(tmp_path / "toy.h5", data)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "showers     20" in out and "particle    e+" in out and "geometry    toy (2 layers, 17 cells)" in out
    assert main(["info", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(s["layers"][0]["mean_energy_mev"], data.cells[:, :8].sum(1).mean(), rtol=1e-5)
    assert s["n_showers"] == 20


def test_info_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"calogan info: error: {bad}: not an HDF5 file"


def test_info_on_geant4_file(capsys):
    path = geant4_file("g4_eplus_active.h5")
    assert main(["info", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_showers"] == 3850 and s["particle"] == "e+" and s["geometry"] == "calogan"
    assert 0.18 < s["mean_response"] < 0.20
    assert s["attributes"]["convention"] == "active"
    fractions = np.array([layer["mean_energy_mev"] for layer in s["layers"]]) / s["mean_total_energy_mev"]
    assert fractions[1] > 0.6  # the thick middle layer takes most of an e+ shower


def test_split_and_select_commands(tmp_path, toy_geometry, capsys):
    from calogan.io import read_showers

    data = toy_showers(toy_geometry, n=30)
    src = write_showers(tmp_path / "all.h5", data)
    train, test = tmp_path / "train.h5", tmp_path / "test.h5"
    assert main(["split", str(src), "--fractions", "0.8,0.2", "-o", str(train), str(test)]) == 0
    assert capsys.readouterr().out.split() == [f"{train}:", "24", "showers", f"{test}:", "6", "showers"]
    assert main(["split", str(src), "-o", str(train), str(test)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["split", str(src), "--fractions", "0.8", "-o", str(train), str(test), "--force"]) == 2
    assert "--fractions gives 1 fractions but -o names 2 outputs" in capsys.readouterr().err
    band = tmp_path / "band.h5"
    assert main(["select", str(src), "--energy", "4:6", "-o", str(band)]) == 0
    e = read_showers(band).e_inc
    assert len(e) == int(((data.e_inc >= 4) & (data.e_inc <= 6)).sum()) and e.min() >= 4 and e.max() <= 6
    out = tmp_path / "out.h5"
    assert main(["select", str(src), "--energy", "4:6", "--outside", "-o", str(out)]) == 0
    assert len(read_showers(out)) == 30 - len(e)
    assert main(["select", str(src), "--energy", "6:4", "-o", str(tmp_path / "x.h5")]) == 2
    assert "--energy needs 0 <= LO < HI" in capsys.readouterr().err


def test_an_error_raised_while_an_interruption_unwinds_reports_the_interruption(monkeypatch, capsys, tmp_path):
    """Ctrl-C during a checkpoint write: torch's zip writer, cut short, fails again as it closes
    ("unexpected pos 64 vs 0"). The run was stopped, not broken: 130 and no 'internal error'."""
    import signal

    import calogan.cli.info
    from calogan.runtime import Interrupted

    def cut_short(args):
        try:
            raise Interrupted(signal.SIGINT)
        finally:
            raise RuntimeError("unexpected pos 64 vs 0")

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(calogan.cli.info, "run", cut_short)
    assert main(["info", str(tmp_path / "x.h5")]) == 130
    err = capsys.readouterr().err
    assert "calogan info: stopped by SIGINT" in err and "internal error" not in err
    monkeypatch.setattr(calogan.cli.info, "run", broken)  # an error with no interruption behind it stays a bug
    assert main(["info", str(tmp_path / "x.h5")]) == 1
    assert "internal error: RuntimeError: a bug" in capsys.readouterr().err
