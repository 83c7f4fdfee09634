import math
from dataclasses import replace

import numpy as np
import pytest

from calogan import metrics as m
from conftest import toy_showers

TINY = m.ClassifierConfig(model="mlp", n_runs=1, hidden=32, n_layers=2, lr=2e-3, batch_size=64, max_epochs=30, patience=4)


# --- one-dimensional metrics -------------------------------------------------------------


def test_separation_power_identical_and_disjoint():
    x = np.random.default_rng(0).normal(size=500)
    same = m.separation_power(x, x.copy())
    assert same.value == 0.0 and same.uncertainty > 0
    disjoint = m.separation_power(np.linspace(0, 1, 100), np.linspace(10, 11, 50), bins=20)
    assert disjoint.value == pytest.approx(1.0)
    # hand-computed: p = (0.5, 0.5), q = (1, 0) -> S = 0.5 * (0.25 / 1.5 + 0.25 / 0.5)
    s = m.separation_power([0.5, 1.5], [0.5, 0.5], bins=[0, 1, 2], n_boot=0)
    assert s.value == pytest.approx(0.5 * (0.25 / 1.5 + 0.25 / 0.5)) and math.isnan(s.uncertainty)


def test_chi2_known_answer_and_null_distribution():
    # n = (10, 20), m = (20, 20): chi2 = sum (M n - N m)^2 / (N M (n + m)) = 35/18, ndf 1
    ref = [0.5] * 10 + [1.5] * 20
    cand = [0.5] * 20 + [1.5] * 20
    chi2, ndf = m.chi2_test(ref, cand, bins=[0, 1, 2])
    assert chi2 == pytest.approx(35 / 18) and ndf == 1
    x = np.random.default_rng(1).normal(size=1000)
    assert m.chi2_ndf(x, x).value == 0.0
    # two samples of one distribution: chi2/ndf ~ 1 within its spread sqrt(2/ndf)
    values = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        v, u = m.chi2_ndf(rng.normal(size=4000), rng.normal(size=3000), bins=30)
        values.append(v)
    assert abs(np.mean(values) - 1) < 3 * u / math.sqrt(10)
    assert all(math.isnan(v) for v in m.chi2_ndf([1.0, 1.0], [1.0]))  # one used bin: ndf 0


def test_wasserstein_shift_and_unequal_sizes():
    x = np.random.default_rng(2).normal(size=800)
    w = m.wasserstein(x, x + 0.7)
    assert w.value == pytest.approx(0.7, abs=1e-12) and w.uncertainty > 0
    assert m.wasserstein([0.0], [1.0, 3.0]).value == pytest.approx(2.0)
    assert m.wasserstein(x, x).value == 0.0


def test_nan_entries_are_dropped_and_empty_samples_refused():
    a = np.array([0.0, 1.0, np.nan, 2.0])
    assert m.wasserstein(a, [0.0, 1.0, 2.0]).value == 0.0
    with pytest.raises(m.MetricError, match="candidate: no finite values"):
        m.separation_power([1.0, 2.0], [np.nan, np.nan])
    with pytest.raises(m.MetricError, match="reference: no finite values"):
        m.chi2_ndf([], [1.0])


def test_shared_bins():
    edges = m.shared_bins([0.5, 10.5], [5.7, 20.5], 4, tail=0.0)
    np.testing.assert_allclose(edges, [0.5, 5.5, 10.5, 15.5, 20.5])
    ints = m.shared_bins(np.arange(0, 101), np.arange(50, 151), 40)
    np.testing.assert_allclose(ints, np.arange(-0.5, 152, 4))  # integer-aligned bins of 4 integers each
    fractions = np.random.default_rng(0).integers(0, 72, 1000) / 72  # sparsity of a 72-cell layer
    lattice = m.shared_bins(fractions, fractions, 40) * 72
    np.testing.assert_allclose(lattice, np.arange(-0.5, 72, 2), atol=1e-9)  # two lattice points per bin, no comb
    np.testing.assert_allclose(m.shared_bins([3.0, 3.0], [3.0], 10), [2.5, 3.5])
    # values outside the edges land in the end bins
    assert m.histogram([-5.0, 0.5, 99.0], np.array([0.0, 1.0, 2.0])).tolist() == [2.0, 1.0]


def test_energy_bin_edges():
    discrete = np.repeat([1.0, 2.0, 4.0, 8.0], 10)
    np.testing.assert_allclose(m.energy_bin_edges(discrete), [1, 1.5, 3, 6, 8])
    assert m.energy_bin_index(discrete, m.energy_bin_edges(discrete)).tolist() == list(np.repeat([0, 1, 2, 3], 10))
    e = np.random.default_rng(0).uniform(1, 100, 5000)
    edges = m.energy_bin_edges(e)
    assert len(edges) == 6 and edges[0] == e.min() and edges[-1] == e.max()
    counts = np.bincount(m.energy_bin_index(e, edges))
    assert counts.min() > 900 and counts.sum() == 5000
    np.testing.assert_allclose(m.energy_bin_edges(e, (1, 10, 100)), [1, 10, 100])
    log_edges = m.energy_bin_edges(np.array([1.0, 5.0, 100.0] * 5), 2, spacing="log")
    np.testing.assert_allclose(log_edges, [1, 10, 100])
    assert m.energy_bin_index([0.5, 1.0, 100.0, 101.0], np.array([1.0, 10.0, 100.0])).tolist() == [-1, 0, 1, -1]
    with pytest.raises(m.MetricError, match="increasing"):
        m.energy_bin_edges(e, (10, 5))
    with pytest.raises(m.MetricError, match="'auto'"):
        m.energy_bin_edges(e, "many")


def _smeared(data, seed):
    """Toy showers with a 5 % spread of E_tot / E_inc (``toy_showers`` alone gives exactly 0.5)."""
    scale = np.random.default_rng(seed).normal(1.0, 0.05, len(data))[:, None]
    return replace(data, cells=data.cells * scale)


def test_energy_chi2(toy_geometry):
    ref = _smeared(toy_showers(toy_geometry, n=2000, seed=1), 1)
    same = _smeared(toy_showers(toy_geometry, n=1500, seed=2), 2)
    v, u = m.energy_chi2(ref, same, n_bins=5)
    assert abs(v - 1) < 4 * u
    scaled = replace(same, cells=same.cells * 1.1)
    assert m.energy_chi2(ref, scaled, n_bins=5).value > 10
    # arrays instead of ShowerData: (e_tot, e_inc) or (cells, e_inc)
    assert m.energy_chi2((ref.cells.sum(1), ref.e_inc), (same.cells, same.e_inc), n_bins=5).value == pytest.approx(v)
    nan = replace(same, cells=np.where(np.arange(same.cells.shape[1]) == 0, np.nan, same.cells))
    assert all(math.isnan(x) for x in m.energy_chi2(ref, nan))
    with pytest.raises(m.MetricError, match="incident energies"):
        m.energy_chi2((ref.cells, np.zeros(len(ref))), same)


# --- response and resolution -------------------------------------------------------------


def test_response_resolution_and_fit():
    rng = np.random.default_rng(3)
    e_inc = rng.uniform(10, 11, 4000)
    e_tot = 1000 * e_inc * rng.normal(0.2, 0.02, 4000)  # resolution 10 %
    r = m.response_resolution(e_tot, e_inc, np.array([10.0, 11.0]), n_boot=50)
    assert r["n"].tolist() == [4000]
    assert abs(r["response"][0] - 0.2) < 3 * r["response_unc"][0]
    assert abs(r["resolution"][0] - 0.1) < 3 * r["resolution_unc"][0]
    energy = np.array([2.0, 5.0, 10.0, 50.0, 100.0])
    exact = np.sqrt(0.1**2 / energy + 0.01**2)
    fit = m.fit_resolution(energy, exact, exact * 0.01)
    assert fit["a"].value == pytest.approx(0.1, rel=1e-5) and fit["b"].value == pytest.approx(0.01, rel=1e-4)
    assert fit["chi2_ndf"] == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(m.fit_resolution([1.0], [0.1], [0.01])["a"].value)


# --- classifier -------------------------------------------------------------------------


def test_auc_and_isotonic_calibration():
    assert m.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert m.auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == 0.5
    calibrate = m.isotonic_fit([1, 2, 3, 4], [1, 0, 1, 1])
    top = 1 - 1e-6  # calibrated probabilities are kept inside (1e-6, 1 - 1e-6)
    np.testing.assert_allclose(calibrate([1, 2, 2.5, 4, 9]), [0.5, 0.5, (0.5 + top) / 2, top, top])
    with pytest.raises(m.MetricError, match="both classes"):
        m.auc([1, 1], [0.2, 0.3])


def test_classifier_identical_and_disjoint(toy_geometry):
    ref = toy_showers(toy_geometry, n=400, seed=4)
    same = toy_showers(toy_geometry, n=400, seed=5)
    for level in ("low", "high"):
        r = m.classifier_test(ref, same, level=level, config=TINY, seed=0)
        assert abs(r.auc - 0.5) < 3 * r.auc_uncertainty, (level, r)
        assert r.n_train == 480 and r.n_val == 160 and r.n_test == 160
    far = replace(same, cells=same.cells * 3.0)
    r = m.classifier_test(ref, far, level="high", config=TINY, seed=0)
    assert r.auc > 0.95 and r.jsd > 0.5
    auc, unc = m.classifier_auc(ref, ref, level="low", config=TINY)  # the very same showers in both classes
    assert abs(auc - 0.5) < 3 * unc


def test_classifier_with_floor(toy_geometry):
    ref = toy_showers(toy_geometry, n=600, seed=11)
    far = replace(toy_showers(toy_geometry, n=200, seed=12), cells=toy_showers(toy_geometry, n=200, seed=12).cells * 3.0)
    result, floor = m.classifier_with_floor(ref, far, level="high", config=TINY)
    assert result.n_train == floor.n_train == 240  # 200 showers per class: the candidate's size
    assert abs(floor.auc - 0.5) < 3 * floor.auc_uncertainty and result.auc > 0.95


def test_classifier_features_hold_conditions(toy_geometry):
    d = toy_showers(toy_geometry, n=5, seed=1, x0=np.arange(5.0), phi=np.full(5, np.pi / 2))
    low = m.classifier_features(d, "low_calochallenge")
    assert low.shape == (5, 1 + 1 + 2 + 17)  # log10 E_inc, x0, cos phi, sin phi, cells / E_inc
    np.testing.assert_allclose(low[:, 0], np.log10(d.e_inc))
    np.testing.assert_allclose(low[:, 1:4], np.c_[np.arange(5.0), np.zeros(5), np.ones(5)], atol=1e-12)
    np.testing.assert_allclose(low[:, 4:], d.cells / (1000 * d.e_inc[:, None]), rtol=1e-6)
    high = m.classifier_features(d, "high")
    assert high.shape == (5, 4 + 23)
    np.testing.assert_allclose(high[:, 4], np.log10(d.cells.sum(1).astype(float) + 1e-3), rtol=1e-6)  # e_tot as a logarithm


def test_low_level_features_are_log_scaled_with_sums_and_hits(toy_geometry):
    d = toy_showers(toy_geometry, n=4, seed=2)
    d = replace(d, cells=np.where(np.arange(17) == 3, 0.0, d.cells))  # one empty cell of the front layer
    x = m.classifier_features(d, "low")
    assert x.shape == (4, 1 + 17 + 2 + 1 + 2)  # log10 E_inc, cells, layer energies, E_tot, hits per layer
    ratio = d.cells.astype(np.float64) / (1000 * d.e_inc[:, None])
    np.testing.assert_allclose(x[:, 1:18], np.log10(ratio + m.LOG_EPS), rtol=1e-6)
    assert np.all(x[:, 4] == -10.0)  # an empty cell sits at log10(eps), below every deposit
    np.testing.assert_allclose(x[:, 18], np.log10(ratio[:, :8].sum(1) + 1e-10), rtol=1e-6)
    np.testing.assert_allclose(x[:, 20], np.log10(ratio.sum(1) + 1e-10), rtol=1e-6)  # log E_tot / E_inc
    assert x[:, 21].tolist() == [7] * 4 and x[:, 22].tolist() == [9] * 4
    normed = m.classifier_features(d, "low_normed")
    np.testing.assert_allclose(normed[:, 1:9].sum(1), 1.0, rtol=1e-6)  # each layer's cells over its energy
    np.testing.assert_allclose(normed[:, 19], np.log10(d.cells[:, 8:].sum(1).astype(float) + 1e-8), rtol=1e-5)  # back layer


def test_classifier_balances_and_checks_sizes(toy_geometry):
    ref = toy_showers(toy_geometry, n=300, seed=6)
    small = toy_showers(toy_geometry, n=100, seed=7)
    r = m.classifier_test(ref, small, level="high", config=TINY)
    assert r.n_train + r.n_val + r.n_test == 200
    with pytest.raises(m.MetricError, match="at least 25 showers"):
        m.classifier_test(ref, toy_showers(toy_geometry, n=10), config=TINY)
    with pytest.raises(m.MetricError, match="'low' or 'high'"):
        m.classifier_test(ref, small, level="medium", config=TINY)
    with pytest.raises(m.MetricError, match="splits"):
        m.ClassifierConfig(splits=(0.5, 0.5, 0.5))


# --- FPD / KPD ----------------------------------------------------------------------------


def test_frechet_distance_known_answer():
    # same means, covariances diag(1, 4) and diag(4, 1): 5 + 5 - 2 * (2 + 2) = 2
    assert m.frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.zeros(2), np.diag([4.0, 1.0])) == pytest.approx(2.0)
    assert m.frechet_distance(np.ones(3), np.eye(3), np.zeros(3), np.eye(3)) == pytest.approx(3.0)


def test_fpd_kpd_identical_and_shifted():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3000, 4))
    y = rng.normal(size=(3000, 4))
    f_same = m.fpd(x, x, normalise=False)
    assert f_same.value < 1e-3 + 3 * f_same.uncertainty
    f_ind = m.fpd(x, y, normalise=False)
    assert f_ind.value < 0.01 + 3 * f_ind.uncertainty
    shifted = y + np.array([1.0, 0, 0, 0])
    assert m.fpd(x, shifted, normalise=False).value == pytest.approx(1.0, abs=0.1)  # |delta mu|^2
    k_same = m.kpd(x, y, normalise=False, batch_size=1000)
    assert abs(k_same.value) < 3 * k_same.uncertainty + 1e-3
    k_shift = m.kpd(x, shifted, normalise=False, batch_size=1000)
    assert k_shift.value > 10 * k_shift.uncertainty
    with pytest.raises(m.MetricError, match="same d"):
        m.fpd(x, y[:, :3])
    with pytest.raises(m.MetricError, match="NaN"):
        m.kpd(np.full((10, 2), np.nan), y[:10, :2], normalise=False)


def test_standardise_fills_nan_and_clips():
    ref = np.array([[0.0, np.nan], [2.0, 1.0], [4.0, np.nan]])
    (a, b) = m.standardise(ref, np.array([[100.0, np.nan]]), clip=5.0)
    assert np.isfinite(a).all() and a[1, 1] == 0.0  # constant column centred only
    assert b[0, 0] == 5.0 and b[0, 1] == 0.0


# --- images and nearest neighbours --------------------------------------------------------------


def test_mean_image_difference(toy_geometry):
    d = toy_showers(toy_geometry, n=300, seed=9)
    v, u = m.mean_image_difference(d.cells, d.cells * 1.05)
    assert v == pytest.approx(0.05) and u > 0
    assert m.mean_image_difference(d.cells, d.cells).value == 0.0
    images = m.mean_images(d.cells, toy_geometry)
    assert [i.shape for i in images] == [(2, 4), (3, 3)]
    with pytest.raises(m.MetricError, match="empty"):
        m.mean_image_difference(np.zeros((3, 4)), np.ones((3, 4)))


def test_nearest_neighbours_detect_copies():
    rng = np.random.default_rng(10)
    ref = rng.normal(size=(2000, 8))
    d, j = m.nearest_neighbour_distances(ref[:5] + 1e-9, ref)
    assert j.tolist() == [0, 1, 2, 3, 4] and np.all(d < 1e-6)
    independent = m.memorisation(ref, rng.normal(size=(2000, 8)), n_query=500)
    assert abs(independent["ratio"].value - 1) < 4 * independent["ratio"].uncertainty
    assert independent["copies"].value < 0.05
    copied = m.memorisation(ref, ref.copy(), n_query=500)
    assert copied["copies"].value > 0.4  # the half of the copies that sit in the pool are at distance 0
    assert copied["ratio"].value < independent["ratio"].value


# --- seed-averaged classifier tests --------------------------------------------------------


def test_runs_rotate_the_report_part_over_every_shower():
    from calogan.metrics.classifiers import _run_parts

    runs = _run_parts(10, (0.6, 0.2, 0.2), 7, np.random.default_rng(0))
    tests = np.concatenate([r[2] for r in runs[:5]])
    assert sorted(tests.tolist()) == list(range(10))  # five runs report on every shower once
    for k in range(5):
        train, val, test = runs[k]
        assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(10)) and len(train) == 6
        assert val.tolist() == runs[(k + 1) % 5][2].tolist()  # calibrated on the next run's report fold
    other = _run_parts(10, (0.5, 0.3, 0.2), 2, np.random.default_rng(0))  # not fold-shaped: fresh random splits
    assert [len(p) for p in other[0]] == [5, 3, 2]


def test_seed_averaged_auc_and_its_combined_uncertainty(toy_geometry):
    from calogan.metrics.classifiers import _auc_uncertainty

    ref = _smeared(toy_showers(toy_geometry, n=200, seed=20), 20)
    cand = _smeared(toy_showers(toy_geometry, n=200, seed=21), 21)
    config = m.ClassifierConfig(n_runs=3, max_trees=20, tree_patience=5)
    r = m.classifier_test(ref, cand, config=config, seed=3)
    assert r.n_runs == 3 and len(r.auc_runs) == 3 and r.n_per_class == 200 and r.model == "gbdt" and r.features == "low"
    assert r.auc == pytest.approx(np.mean(r.auc_runs)) and r.auc_std == pytest.approx(np.std(r.auc_runs, ddof=1))
    n_eff = min(200, 3 * 40)  # three report folds of 40 showers per class
    assert r.auc_uncertainty == pytest.approx(math.sqrt(r.auc_std**2 / 3 + _auc_uncertainty(r.auc, n_eff, n_eff) ** 2))
    again = m.classifier_test(ref, cand, config=config, seed=3)
    assert replace(again, seconds=0.0) == replace(r, seconds=0.0)  # the same seed, the same result
    one = m.classifier_test(ref, cand, config=replace(config, n_runs=1), seed=3)
    assert one.auc_uncertainty == pytest.approx(_auc_uncertainty(one.auc, 40, 40)) and math.isnan(one.auc_std)


def test_auc_excess():
    a = m.ClassifierResult(0.8, 0.03, 0.1, 0.8, 1, 1, 1, 1, 1, 0.0)
    f = m.ClassifierResult(0.5, 0.04, 0.0, 0.5, 1, 1, 1, 1, 1, 0.0)
    assert m.auc_excess(a, f) == pytest.approx(0.3 / 0.05)
    assert m.auc_excess(replace(a, auc_uncertainty=0.0), replace(f, auc_uncertainty=0.0)) is None


def test_low_level_trees_see_a_small_scale_and_not_a_self_copy(toy_geometry):
    """The headline low-level test: a distorted copy scores far above the floor, the self-copy does not."""
    ref = _smeared(toy_showers(toy_geometry, n=600, seed=30), 30)
    other = _smeared(toy_showers(toy_geometry, n=300, seed=31), 31)
    fast = m.ClassifierConfig(n_runs=3, max_trees=60)
    scaled, floor = m.classifier_with_floor(ref, replace(other, cells=other.cells * 1.1), config=fast)
    assert m.auc_excess(scaled, floor) > 5 and scaled.auc > 0.8
    same, floor = m.classifier_with_floor(ref, other, config=fast)
    assert abs(m.auc_excess(same, floor)) < 3
    # the CaloChallenge input (cells / E_inc) hides the same 10 % scale from the MLP on so few showers
    assert m.default_classifier("low_calochallenge").model == "mlp" and m.default_classifier("low").model == "gbdt"


def test_low_level_auc_fast(toy_geometry):
    ref = _smeared(toy_showers(toy_geometry, n=300, seed=40), 40)
    far = replace(ref, cells=ref.cells * 1.3)
    r = m.low_level_auc(ref, far, fast=True)
    assert r.n_runs == 1 and r.auc > 0.95 and r.features == "low"


def test_wasserstein_large_samples_bootstrap_a_subset():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=30000), rng.normal(0.1, 1.0, size=30000)
    full = m.wasserstein(x, y, n_boot=20, max_boot=100000)
    sub = m.wasserstein(x, y, n_boot=20, max_boot=3000)
    assert sub.value == full.value  # the value always uses every entry
    assert 0.6 < sub.uncertainty / full.uncertainty < 1.6  # the subset's spread scaled by sqrt((1/N + 1/M) / (1/n + 1/m))
