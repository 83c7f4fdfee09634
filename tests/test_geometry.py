import numpy as np
import pytest

from calogan.geometry import Geometry, GeometryError, Layer, from_calochallenge_xml, load_geometry, preset


def test_calogan_preset_matches_the_paper():
    g = preset("calogan")
    assert g.shapes == [(3, 96), (12, 12), (12, 6)]
    assert [layer.cell_size for layer in g.layers] == [(160.0, 5.0), (40.0, 40.0), (40.0, 80.0)]
    assert [layer.depth for layer in g.layers] == [90.0, 347.0, 43.0]
    assert g.n_cells == 288 + 144 + 72
    # every layer spans the 480 mm cube
    for layer in g.layers:
        assert layer.shape[0] * layer.cell_size[0] == 480.0
        assert layer.shape[1] * layer.cell_size[1] == 480.0
    assert g.layer_boundaries().tolist() == [0.0, 90.0, 437.0, 480.0]
    assert (g.layers[0].absorber, g.layers[0].absorber_thickness, g.layers[0].active, g.layers[0].active_thickness) == (
        "Pb",
        2.0,
        "LAr",
        4.0,
    )


def test_atlas_and_voxel_presets():
    atlas = preset("atlas-barrel")
    assert atlas.shapes == [(7, 3), (56, 3), (7, 7), (4, 7)]
    assert atlas.n_cells == 266
    vox = preset("voxel-25")
    assert vox.n_layers == 25 and vox.n_cells == 25**3


def test_split_and_flatten_round_trip(toy_geometry):
    flat = np.arange(3 * toy_geometry.n_cells, dtype=np.float32).reshape(3, -1)
    parts = toy_geometry.split(flat)
    assert [p.shape for p in parts] == [(3, 2, 4), (3, 3, 3)]
    assert parts[1][0, 0, 0] == 8  # first cell of the second layer follows the 8 of the first
    np.testing.assert_array_equal(toy_geometry.flatten(parts), flat)
    np.testing.assert_array_equal(toy_geometry.layer_sums(flat)[0], [sum(range(8)), sum(range(8, 17))])


def test_split_and_flatten_torch(toy_geometry):
    torch = pytest.importorskip("torch")
    flat = torch.arange(2 * toy_geometry.n_cells, dtype=torch.float32).reshape(2, -1)
    assert torch.equal(toy_geometry.flatten(toy_geometry.split(flat)), flat)


def test_cell_centres_are_symmetric_about_the_axis(toy_geometry):
    x, y = toy_geometry.layers[0].cell_centres()
    assert x[:, 0].tolist() == [-5.0, 5.0]
    assert y[0].tolist() == [-7.5, -2.5, 2.5, 7.5]
    xf, _yf = toy_geometry.cell_centres()
    assert xf.shape == (toy_geometry.n_cells,)
    assert xf[8:].tolist() == [-20.0, -20.0, -20.0, 0.0, 0.0, 0.0, 20.0, 20.0, 20.0]


def test_calogan_centre_is_a_cell_corner_in_layers_1_and_2():
    g = preset("calogan")
    x, y = g.layers[1].cell_centres()
    assert np.abs(x).min() == 20.0 and np.abs(y).min() == 20.0


def test_dict_round_trip():
    for name in ("calogan", "atlas-barrel", "voxel-25"):
        g = preset(name)
        assert Geometry.from_json(g.to_json()) == g


def test_bad_layers_are_refused():
    with pytest.raises(GeometryError, match="layer 'a': shape must be two positive integers"):
        Layer("a", (0, 3), (1.0, 1.0), 1.0)
    with pytest.raises(GeometryError, match="unknown material 'Kryptonite'"):
        Layer("a", (2, 3), (1.0, 1.0), 1.0, absorber="Kryptonite")
    with pytest.raises(GeometryError, match="layer names must be unique"):
        Geometry("g", (Layer("a", (1, 1), (1.0, 1.0)), Layer("a", (1, 1), (1.0, 1.0))))
    with pytest.raises(GeometryError, match="unknown geometry 'cms'"):
        preset("cms")


XML = """<Bins>
  <Bin pid="22" name="photon">
    <Layer id="0" r_edges="0,5,10,30" n_bin_alpha="1"/>
    <Layer id="1" r_edges="0,2,4" n_bin_alpha="4"/>
    <Layer id="2" r_edges="0" n_bin_alpha="1"/>
    <Layer id="3" r_edges="0,50,100" n_bin_alpha="1"/>
  </Bin>
</Bins>
"""


def test_calochallenge_xml(tmp_path):
    path = tmp_path / "binning.xml"
    path.write_text(XML)
    g = from_calochallenge_xml(path)
    assert g.shapes == [(1, 3), (4, 2), (1, 2)]  # (alpha, r); the empty layer 2 is skipped
    assert [layer.name for layer in g.layers] == ["layer_0", "layer_1", "layer_3"]
    assert g.n_cells == 3 + 8 + 2
    assert load_geometry(path) == g
    x, y = g.layers[1].cell_centres()
    # alpha bins centred at -3pi/4, -pi/4, pi/4, 3pi/4; r midpoints 1 and 3
    np.testing.assert_allclose(x[:, 0], np.cos([-3 * np.pi / 4, -np.pi / 4, np.pi / 4, 3 * np.pi / 4]), atol=1e-12)
    np.testing.assert_allclose(y[2, 1], 3 * np.sin(np.pi / 4))
    np.testing.assert_allclose(g.layers[1].cell_areas()[0], [np.pi * 4 / 4, np.pi * 12 / 4])
    assert Geometry.from_json(g.to_json()) == g


def test_calochallenge_xml_errors(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<Bins><Bin name='x'><Layer id='0' r_edges='0,5,3' n_bin_alpha='1'/></Bin></Bins>")
    with pytest.raises(GeometryError, match="bad.xml: layer 'layer_0': r_edges must be non-negative and increasing"):
        from_calochallenge_xml(bad)
    broken = tmp_path / "broken.xml"
    broken.write_text("<Bins>")
    with pytest.raises(GeometryError, match="broken.xml: not a readable binning XML"):
        from_calochallenge_xml(broken)
