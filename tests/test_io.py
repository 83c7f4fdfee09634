import h5py
import numpy as np
import pytest

from calogan.data import ShowerData
from calogan.geometry import preset
from calogan.io import NegativeCellsWarning, ShowerFileError, ShowerWriter, inspect, iter_showers, read_extra, read_showers, write_showers
from conftest import geant4_file, toy_showers


def write_calogan(path, n=5, shapes=((3, 96), (12, 12), (12, 6)), energy=None, **extra):
    """A hand-made CaloGAN file; keyword arguments replace or add keys (None drops one)."""
    rng = np.random.default_rng(1)
    keys = {f"layer_{i}": rng.uniform(0, 10, (n, *s)).astype(np.float32) for i, s in enumerate(shapes)}
    keys["energy"] = np.linspace(10, 50, n, dtype=np.float32)[:, None] if energy is None else energy
    keys["overflow"] = np.zeros((n, len(shapes)), np.float32)
    keys.update(extra)
    with h5py.File(path, "w") as f:
        for k, v in keys.items():
            if v is not None:
                f[k] = v
    return path


def test_round_trip_calogan(tmp_path, toy_geometry):
    data = toy_showers(toy_geometry, n=37, x0=np.arange(37.0), theta=np.full(37, 0.1))
    path = write_showers(tmp_path / "toy.h5", data)
    back = read_showers(path)
    np.testing.assert_array_equal(back.cells, data.cells)
    np.testing.assert_allclose(back.e_inc, data.e_inc, rtol=1e-6)  # stored as float32 GeV
    assert set(back.conditions) == {"x0", "theta"}
    assert back.geometry == toy_geometry  # the file carries its geometry
    assert (back.pdg == -11).all()
    info = inspect(path)
    assert (info.format, info.n, info.particle, info.conditions) == ("calogan", 37, "e+", ("x0", "theta"))
    with h5py.File(path) as f:
        assert f["layer_1"].shape == (37, 3, 3)
        assert f["layer_0"].compression == "gzip"
        assert f["layer_0"].chunks is not None
        assert f["energy"].shape == (37, 1)


def test_round_trip_calochallenge(tmp_path, toy_geometry):
    data = toy_showers(toy_geometry, n=9)
    path = write_showers(tmp_path / "cc.h5", data, format="calochallenge")
    with h5py.File(path) as f:
        assert f["showers"].shape == (9, toy_geometry.n_cells)
        np.testing.assert_allclose(f["incident_energies"][:, 0], data.e_inc * 1000, rtol=1e-6)  # MeV
    back = read_showers(path)
    np.testing.assert_array_equal(back.cells, data.cells)
    assert inspect(path).format == "calochallenge"


def test_streaming_in_chunks(tmp_path, toy_geometry):
    data = toy_showers(toy_geometry, n=25)
    path = write_showers(tmp_path / "toy.h5", data)
    chunks = list(iter_showers(path, chunk_size=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    np.testing.assert_array_equal(ShowerData.concatenate(chunks).cells, data.cells)
    part = read_showers(path, start=5, stop=8)
    np.testing.assert_array_equal(part.cells, data.cells[5:8])


def test_writer_is_atomic_and_refuses_overwrite(tmp_path, toy_geometry):
    data = toy_showers(toy_geometry)
    path = tmp_path / "out.h5"
    with pytest.raises(RuntimeError, match="boom"), ShowerWriter(path, toy_geometry) as w:
        w.write(data)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    write_showers(path, data)
    with pytest.raises(ShowerFileError, match="out.h5: exists; pass --force to overwrite it"):
        write_showers(path, data)
    write_showers(path, data.select(slice(0, 3)), force=True)
    assert inspect(path).n == 3
    with pytest.raises(ShowerFileError, match="directory .*missing does not exist"):
        ShowerWriter(tmp_path / "missing" / "x.h5", toy_geometry)


def test_mixed_particles_are_stored_per_shower(tmp_path, toy_geometry):
    data = toy_showers(toy_geometry, n=4)
    data = ShowerData(toy_geometry, data.cells, data.e_inc, [-11, 22, 22, 211])
    path = write_showers(tmp_path / "mix.h5", data)
    assert read_showers(path).pdg.tolist() == [-11, 22, 22, 211]
    assert inspect(path).particle == "e+,gamma,pi+"


# ---- bad input: every message names the file, the key and the problem ----


def test_missing_file(tmp_path):
    with pytest.raises(ShowerFileError, match=r"nope.h5: no such file"):
        inspect(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("hello")
    with pytest.raises(ShowerFileError, match=r"text.h5: not an HDF5 file"):
        inspect(path)


def test_empty_files(tmp_path):
    zero = tmp_path / "zero.h5"
    zero.touch()
    with pytest.raises(ShowerFileError, match=r"zero.h5: empty file \(0 bytes\)"):
        inspect(zero)
    nokeys = tmp_path / "nokeys.h5"
    h5py.File(nokeys, "w").close()
    with pytest.raises(ShowerFileError, match=r"nokeys.h5: empty HDF5 file: it holds no datasets"):
        inspect(nokeys)
    none = write_calogan(tmp_path / "none.h5", n=0)
    with pytest.raises(ShowerFileError, match=r"none.h5: key 'energy': holds 0 showers"):
        inspect(none)


def test_missing_key(tmp_path):
    path = write_calogan(tmp_path / "f.h5", layer_1=None)
    with pytest.raises(ShowerFileError, match=r"f.h5: layer shapes .* match no preset geometry"):
        inspect(path)
    with pytest.raises(ShowerFileError, match=r"f.h5: key 'layer_1': missing"):
        inspect(path, geometry="calogan")
    path = write_calogan(tmp_path / "g.h5", energy=None)
    with h5py.File(path, "a") as f:
        del f["energy"]
    with pytest.raises(ShowerFileError, match=r"g.h5: key 'energy': missing"):
        inspect(path)


def test_shape_mismatch(tmp_path):
    path = write_calogan(tmp_path / "f.h5", shapes=((3, 96), (12, 12), (12, 7)))
    with pytest.raises(ShowerFileError, match=r"f.h5: key 'layer_2': has shape \(5, 12, 7\), geometry 'calogan' expects \(N, 12, 6\)"):
        inspect(path, geometry="calogan")


def test_n_differs_between_keys(tmp_path):
    path = write_calogan(tmp_path / "f.h5", energy=np.ones((4, 1), np.float32))
    with pytest.raises(ShowerFileError, match=r"f.h5: key 'layer_0': holds 5 showers but 'energy' holds 4"):
        inspect(path)
    path = write_calogan(tmp_path / "g.h5", x0=np.zeros((3, 1), np.float32))
    with pytest.raises(ShowerFileError, match=r"g.h5: key 'x0': holds 3 entries but the file holds 5 showers"):
        inspect(path)


def test_nan_and_inf(tmp_path):
    layer = np.ones((5, 12, 12), np.float32)
    layer[3, 2, 2] = np.nan
    path = write_calogan(tmp_path / "f.h5", layer_1=layer)
    with pytest.raises(ShowerFileError, match=r"f.h5: key 'layer_1': 1 cell energies are NaN or inf \(first in shower 3\)"):
        read_showers(path)
    energy = np.ones((5, 1), np.float32)
    energy[1] = np.inf
    path = write_calogan(tmp_path / "g.h5", energy=energy)
    with pytest.raises(ShowerFileError, match=r"g.h5: key 'energy': 1 incident energies are NaN or inf \(first at shower 1\)"):
        inspect(path)


def test_non_positive_energy(tmp_path):
    energy = np.array([[5.0], [0.0], [5.0], [5.0], [5.0]], np.float32)
    path = write_calogan(tmp_path / "f.h5", energy=energy)
    with pytest.raises(ShowerFileError, match=r"f.h5: key 'energy': incident energies must be > 0; shower 1 has 0"):
        inspect(path)


def test_negative_cells_clipped_with_a_warning_or_refused(tmp_path):
    layer = np.ones((5, 3, 96), np.float32)
    layer[0, 0, :3] = -1.0
    layer[4, 1, 0] = -2.0
    path = write_calogan(tmp_path / "f.h5", layer_0=layer)
    with pytest.warns(NegativeCellsWarning, match=r"f.h5: clipped 4 negative cell energies to 0"):
        data = read_showers(path)
    assert data.cells.min() == 0.0
    with pytest.raises(
        ShowerFileError, match=r"f.h5: key 'layer_0': 4 negative cell energies \(first in shower 0\); --strict refuses them"
    ):
        read_showers(path, strict=True)


def test_wrong_units_are_caught(tmp_path):
    # energies written in MeV would be fine; cells in keV make showers deposit 1000x their energy
    path = write_calogan(tmp_path / "f.h5", energy=np.full((5, 1), 0.001, np.float32))
    with pytest.raises(ShowerFileError, match=r"f.h5: key 'energy': showers deposit .* times their incident energy: units wrong"):
        read_showers(path)


def test_calochallenge_needs_its_binning(tmp_path):
    path = tmp_path / "cc.h5"
    with h5py.File(path, "w") as f:
        f["incident_energies"] = np.full((3, 1), 1000.0, np.float32)
        f["showers"] = np.ones((3, 13), np.float32)
    with pytest.raises(ShowerFileError, match=r"cc.h5: a CaloChallenge file does not say its geometry: pass its binning XML"):
        inspect(path)


# ---- the real Geant4 files ----


@pytest.mark.parametrize("name", ["g4_eplus_active.h5", "g4_eplus_varpos_total.h5", "g4_piplus_total.h5"])
def test_reads_the_shared_geant4_files(name):
    path = geant4_file(name)
    info = inspect(path)
    assert info.geometry == preset("calogan")
    assert info.e_range[0] >= 1.0 and info.e_range[1] <= 100.0
    assert "g4_cpu_seconds" in info.extra_keys
    first = next(iter_showers(path, chunk_size=200))
    assert len(first) == 200
    response = first.cells.sum(1) / (1000 * first.e_inc)
    if "active" in name:
        assert 0.17 < np.median(response) < 0.21  # LAr sampling fraction of the README
    elif "eplus" in name:
        assert 0.97 < np.median(response) < 1.0
    if "varpos" in name:
        assert set(info.conditions) == {"x0", "y0", "theta", "phi"}
        assert np.abs(first.conditions["x0"]).max() <= 50.0
    assert read_extra(path, "g4_cpu_seconds", 0, 10).shape == (10, 1)


def test_split_file_is_disjoint_complete_and_reproducible(tmp_path, toy_geometry):
    from calogan.io import split_file

    data = toy_showers(toy_geometry, n=40, x0=np.arange(40.0))
    src = write_showers(tmp_path / "all.h5", data)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert split_file(src, [a, b], [0.75, 0.25], seed=3) == [30, 10]
    ids = np.concatenate([read_showers(a).conditions["x0"], read_showers(b).conditions["x0"]])
    assert sorted(ids.tolist()) == list(range(40))  # disjoint and complete
    assert np.all(np.diff(read_showers(a).conditions["x0"]) > 0)  # order kept within a part
    c, d = tmp_path / "c.h5", tmp_path / "d.h5"
    split_file(src, [c, d], [0.75, 0.25], seed=3)
    np.testing.assert_array_equal(read_showers(c).cells, read_showers(a).cells)
    assert inspect(a).particle == "e+"
