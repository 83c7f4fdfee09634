import json
import math
import os
from dataclasses import replace

import h5py
import numpy as np
import pytest

from calogan.cli import main
from calogan.errors import ConfigError
from calogan.geometry import Geometry, GeometryError, Layer, preset
from calogan.io import inspect, read_showers
from calogan.simulate import BLOCK, Distribution, default_params, iter_simulate, load_params, media, save_params, simulate
from calogan.simulate.deposit import CellMap, Spots, Tracks, deposit, sampled_share, slab_of
from calogan.simulate.em import TINY_MEV, halo_spots, mean_quantum, quanta, quantum_energies
from calogan.simulate.materials import layer_composition
from calogan.simulate.params import Halo, SimParams


def test_layer_media_follow_the_materials():
    g = preset("calogan")
    assert [layer_composition(layer) for layer in g.layers] == [(30.0, 60.0), (116.0, 231.0), (15.0, 28.0)]
    m = media(g)
    # one 2 mm Pb + 4 mm LAr period: X0 = 6 / (2/5.612 + 4/140), R_M = 6 / (2/16.02 + 4/90.43)
    np.testing.assert_allclose(m.x0[0], 6 / (2 / 5.612 + 4 / 140.0))
    np.testing.assert_allclose(m.moliere_radius[0], 6 / (2 / 16.02 + 4 / 90.43))
    np.testing.assert_allclose(m.critical_energy[0], (2 / 5.612 * 7.43 + 4 / 140 * 32.84) / (2 / 5.612 + 4 / 140))
    # MIP sampling fraction: LAr loss over the period's loss (dE/dx_min x density)
    lar, pb = 1.519 * 1.396 * 0.4, 1.122 * 11.35 * 0.2
    np.testing.assert_allclose(m.sf_mip[0], lar / (lar + pb))
    np.testing.assert_allclose(m.x0_boundaries[-1], (90 + 347 + 43) / m.x0[0], rtol=0.01)  # ~30.8 X0 deep
    assert media(preset("atlas-barrel")).sf_mip[0] == 1.0  # the presampler is all active


def test_cell_lookup_table_matches_the_direct_index():
    rng = np.random.default_rng(0)
    for name in ("calogan", "voxel-25"):
        g = preset(name)
        fast, direct = CellMap.build(g), CellMap(g)
        assert fast.lut is not None
        x, y = rng.uniform(-300, 300, (2, 20_000))
        slab = rng.integers(0, g.n_layers + 2, 20_000)  # in front, every layer, behind
        np.testing.assert_array_equal(fast.index(x, y, slab), direct.index(x, y, slab))
    assert CellMap.build(preset("atlas-barrel")).lut is None  # cell edges on no common grid
    # cell edges: layer-0 strips are 5 mm along y from -240 mm; x = 0 opens row 6 of layer 1
    m = CellMap.build(preset("calogan"))
    np.testing.assert_array_equal(
        m.index(np.array([0.0, -0.01, 0.0, 0.0]), np.array([-240.0, 0.0, 240.0, 1.0]), np.array([1, 2, 1, 3])),
        [96, 288 + 5 * 12 + 6, 504, 432 + 6 * 6 + 3],
    )


def test_float32_depths_find_the_same_slab_as_float64():
    # faces not representable in float32 (0.1, 437.3 mm): float32 depths on either side of
    # them are compared in float32 against the face rounded up, which is exactly z >= face
    faces = np.array([0.1, 90.0, 437.3, 480.0])
    near = np.float32(faces)
    z = np.concatenate([near, np.nextafter(near, np.float32(-np.inf)), np.nextafter(near, np.float32(np.inf))])
    np.testing.assert_array_equal(slab_of(z, faces), slab_of(z.astype(np.float64), faces))
    np.testing.assert_array_equal(slab_of(np.array([0.1, 0.0999, 90.0, 500.0], np.float32), faces), [1, 0, 2, 4])


def _one_cell(absorber):
    return Geometry(
        "cell", (Layer("only", (1, 1), (1000.0, 1000.0), 100.0, absorber=absorber, absorber_thickness=2.0 if absorber else 0.0),)
    )


def test_deposit_sums_spots_and_drops_what_leaves():
    g = _one_cell("Pb")
    spots = Spots(
        np.array([0, 0, 1, 1]),
        np.array([10.0, 99.0, 50.0, 100.5]),
        np.zeros(4),
        np.array([0.0, 0.0, 0.0, 0.0]),
        np.array([1.0, 2.0, 4.0, 8.0]),
        1.0,
        0.0,
    )
    tracks = Tracks.make(2)
    cells = deposit(spots, tracks, np.ones(2), CellMap.build(g), media(g), "total", np.random.default_rng(0))
    np.testing.assert_array_equal(cells, [[3.0], [4.0]])  # the spot behind the 100 mm layer leaves


def test_active_sampling_fluctuations_have_the_spot_model_moments():
    """The active share of a cell: mean f_mip sum(e ehat), variance 1000 a^2 f_mip^2 sum(e ehat^2)
    with a^2 = stochastic^2 x MIP MeV per period, whether drawn per spot or per cell."""
    n = 40_000
    g = _one_cell("Pb")
    m = media(g)
    tracks = Tracks.make(n)
    shower = np.repeat(np.arange(n), 2)
    energy = np.tile([100.0, 300.0], n)
    ehat = np.tile([1.0, 0.5], n)
    spots = Spots(shower, np.full(2 * n, 50.0), np.zeros(2 * n), np.zeros(2 * n), energy, ehat, 0.1)
    cells = deposit(spots, tracks, np.ones(n), CellMap.build(g), m, "active", np.random.default_rng(1))[:, 0].astype(float)
    sf, a2 = m.sf_mip[0], 0.1**2 * m.mip_per_period[0]
    mean, var = sf * (100 + 300 * 0.5), 1000 * a2 * sf**2 * (100 + 300 * 0.25)
    assert cells.mean() == pytest.approx(mean, rel=3 * np.sqrt(var / n) / mean)
    assert cells.var() == pytest.approx(var, rel=0.03)  # ~5 standard errors of a variance of 40000
    # an all-active layer sees every deposit exactly
    h = _one_cell(None)
    exact = deposit(spots, tracks, np.ones(n), CellMap.build(h), media(h), "active", np.random.default_rng(1))
    np.testing.assert_array_equal(exact[:, 0], 400.0)


def test_sampled_share_is_a_compound_poisson_with_the_given_moments():
    """N ~ Poisson(mean/g) grains of exponential energy g = var/(2 mean): zero with probability
    exp(-mean/g), mean and variance as given."""
    n = 200_000
    rng = np.random.default_rng(3)
    x = sampled_share(rng, np.full(n, 0.1), np.full(n, 0.09))  # g = 0.45 MeV, mean/g = 2/9
    p0 = math.exp(-0.1 / 0.45)
    assert (x == 0).mean() == pytest.approx(p0, abs=4 * math.sqrt(p0 * (1 - p0) / n))
    assert x.mean() == pytest.approx(0.1, abs=4 * math.sqrt(0.09 / n))
    assert x.var() == pytest.approx(0.09, rel=0.04)
    big = sampled_share(rng, np.full(n, 1000.0), np.full(n, 900.0))  # many grains: no zero, Gaussian-like
    assert (big > 0).all() and big.mean() == pytest.approx(1000.0, abs=0.5) and big.var() == pytest.approx(900.0, rel=0.02)


def test_quantum_spectrum_log_normal_with_a_faint_tail():
    hp = Halo(energy_mev=0.7, energy_sigma=0.8, tiny=0.2)
    e = quantum_energies(np.random.default_rng(0), 400_000, hp)
    assert e.dtype == np.float32 and e.min() >= TINY_MEV * (1 - 1e-6)
    assert e.mean() == pytest.approx(mean_quantum(hp), rel=0.01)
    # the faint fifth is log-uniform from 1 keV to the median: 1/ln(700) of it per e-fold
    faint = (e < 0.01).mean()
    assert faint == pytest.approx(0.2 * math.log(10) / math.log(700) + 0.8 * 0.0, abs=0.004)
    plain = quantum_energies(np.random.default_rng(0), 400_000, Halo(energy_mev=0.7, energy_sigma=0.8))
    assert np.median(plain) == pytest.approx(0.7, rel=0.01) and np.log(plain).std() == pytest.approx(0.8, rel=0.01)
    assert mean_quantum(Halo(energy_mev=0.7, energy_sigma=0.8)) == pytest.approx(0.7 * math.exp(0.32))


def test_quanta_are_seen_whole_in_part_or_not_at_all():
    from calogan.simulate.em import seen

    hp = Halo(ehat=0.72, whole=0.07)
    sf = 0.25
    frac = seen(np.random.default_rng(4), 200_000, hp, sf) * sf
    assert (frac == 0).mean() == pytest.approx(1 - 0.07 - 3 * (0.18 - 0.07), abs=0.005)
    assert (frac == 1).mean() == pytest.approx(0.07, abs=0.003) and frac.max() == pytest.approx(1.0)
    assert frac.mean() == pytest.approx(0.72 * sf, rel=0.01)
    assert (seen(np.random.default_rng(4), 1000, Halo(ehat=0.2, whole=0.5), sf) * sf <= 1.0).all()  # whole capped at the mean share


def test_grains_grow_at_the_end_of_the_shower():
    from calogan.simulate.em import grains, seen
    from calogan.simulate.params import Sampling

    sp = Sampling(grain_age=4.0)
    tau = np.array([0.0, 2.0, 4.0, 8.0], dtype=np.float32)
    np.testing.assert_allclose(grains(tau, sp), [1.0, 1.0625, 2.0, 17.0], rtol=1e-6)  # 1 + (tau / 4)^4
    with pytest.raises(ConfigError, match="grain_age"):
        Sampling(grain_age=-1.0)
    # a quantum's partial sightings are divided by the grain, moved to whole ones: the same mean
    hp, sf, n = Halo(ehat=0.72, whole=0.07), 0.25, 400_000
    whole, part = 0.07, 3 * (0.72 * sf - 0.07)
    np.testing.assert_array_equal(
        seen(np.random.default_rng(4), 1000, hp, sf, np.ones(1000, np.float32)), seen(np.random.default_rng(4), 1000, hp, sf)
    )
    frac = seen(np.random.default_rng(5), n, hp, sf, np.full(n, 4.0, np.float32)) * sf
    assert (frac > 0).mean() == pytest.approx(whole + part / 3 * 0.75 + part / 4, abs=0.003)
    assert (frac == 1).mean() == pytest.approx(whole + part / 3 * 0.75, abs=0.003)
    assert frac.mean() == pytest.approx(0.72 * sf, rel=0.01)


def test_grains_leave_the_back_layer_dark_more_often_not_dimmer():
    base = default_params("e+")
    grainy = replace(base, em=replace(base.em, sampling=replace(base.em.sampling, grain_age=2.0)))
    g = preset("calogan")
    back = g.layer_slice(2)
    e = np.full(1500, 10.0)
    plain = simulate(g, "e+", e, seed=3, mode="active", params=base).cells[:, back].astype(np.float64)
    late = simulate(g, "e+", e, seed=3, mode="active", params=grainy).cells[:, back].astype(np.float64)
    # the back layer of a 10 GeV e+ is 4-5 mean depths of the maximum deep: grains of
    # 1 + (4.5 / 2)^4 ~ 27 times the first layers' light up far fewer of its cells ...
    assert (late > 0).sum(1).mean() < 0.6 * (plain > 0).sum(1).mean()
    # ... with the same active energy (within 4 standard errors of the difference)
    d = late.sum(1) - plain.sum(1)
    assert abs(d.mean()) < 4 * d.std() / math.sqrt(len(d))


def test_spots_of_a_depth_spread_along_the_shower():
    """With ``depth_spread`` the spots of a depth t past the mean maximum T lie at
    t + spread (U - 1/2) (t - T) along the axis, each its own U, converted at the layer's mm
    per X0; before T and across the axis nothing moves."""
    from calogan.simulate.em import em_spots, profile_moments

    g = preset("calogan")
    med = media(g)
    p = default_params("e+").em
    n = 40
    e = np.full(n, 20.0)
    tracks = Tracks.make(n)

    def first(spread):
        em = replace(p, deposit=replace(p.deposit, depth_spread=spread))
        return em_spots(np.random.default_rng(8), e, e * 1000.0, np.zeros(n), np.arange(n), tracks, med, em, active=False)[0]

    plain, spread = first(0.0), first(0.5)
    np.testing.assert_array_equal(spread.u, plain.u)  # the same draws before the offsets
    np.testing.assert_array_equal(spread.v, plain.v)
    m = p.deposit.lateral
    at = plain.s.reshape(-1, m)
    assert (at == at[:, :1]).all()  # without the spread a depth's spots share its depth
    # the depth t in X0 from the plain spots' path (depths inside the calorimeter: behind it
    # the spots carry no energy), and T of a 20 GeV e+
    inside = at[:, 0] < med.boundaries[-1]
    at, s = at[inside], spread.s.reshape(-1, m)[inside]
    mm_per_x0 = np.diff(med.boundaries) / np.diff(med.x0_boundaries)
    layer = np.searchsorted(med.boundaries, at[:, 0], side="right") - 1
    t = np.interp(at[:, 0], med.boundaries, med.x0_boundaries)
    t_mean = math.exp(profile_moments(e[:1], med, p.longitudinal)[0][0])
    young = t <= t_mean
    assert young.mean() > 0.3
    np.testing.assert_array_equal(s[young], at[young])  # the young shower stays compact
    s, at, t, layer = s[~young], at[~young], t[~young], layer[~young]
    assert (s < med.boundaries[-1]).all()  # none pushed out of the back: leakage is the profile's
    u = (s - at) / (0.5 * (t - t_mean) * mm_per_x0[layer])[:, None] + 0.5
    assert u.min() >= -1e-3 and u.max() <= 1 + 1e-3
    near = at + 0.25 * ((t - t_mean) * mm_per_x0[layer])[:, None] >= med.boundaries[-1]
    assert near.any(1).mean() < 0.1  # ... whose offsets turn forwards: the rest is plain uniform
    u = u[~near.any(1)]
    assert np.quantile(u, [0.25, 0.5, 0.75]) == pytest.approx([0.25, 0.5, 0.75], abs=0.02)
    # each spot its own offset: the spots of one depth no longer cross a face together
    assert (np.ptp(s, axis=1) > 0).all()
    with pytest.raises(ConfigError, match="depth_spread"):
        replace(p.deposit, depth_spread=2.0)


def test_spread_spots_light_the_back_layer_less_in_clumps():
    """The back layer of a 10 GeV e+ sees a few dozen spots: arriving m at a time, its hit
    count spreads far more from shower to shower than independent arrivals give."""
    p = default_params("e+")
    base, spread = (replace(p, em=replace(p.em, deposit=replace(p.em.deposit, depth_spread=x))) for x in (0.0, 0.5))
    g = preset("calogan")
    back = g.layer_slice(2)
    e = np.full(2000, 10.0)
    hits = [(simulate(g, "e+", e, seed=5, params=p).cells[:, back] > 0).sum(1) for p in (base, spread)]
    clumps = [h.var() / h.mean() for h in hits]
    assert clumps[1] < 0.8 * clumps[0]
    assert hits[1].mean() == pytest.approx(hits[0].mean(), rel=0.1)  # about as many hits on average


def test_a_small_showers_floor_depths_start_early():
    """``min_spots`` lifts a 2 GeV e+ from ~29 depths to 60; with ``floor_early`` the depths it
    adds come from the compressed (young) profile, weighted so that the mean profile stays:
    more, lighter spots in the first layer, the same energy per layer. A shower above the
    floor is left exactly as it was."""
    from calogan.simulate.em import em_spots

    g = preset("calogan")
    med = media(g)
    p = default_params("e+").em
    n = 600

    def spots(e_gev, floor):
        em = replace(p, deposit=replace(p.deposit, min_spots=60, floor_early=floor))
        e = np.full(n, e_gev)
        return em_spots(np.random.default_rng(8), e, e * 1000.0, np.zeros(n), np.arange(n), Tracks.make(n), med, em, active=False)[0]

    big = [spots(50.0, f) for f in (0.0, 1.0)]  # 19 * 50^0.6 ~ 200 depths: above the floor
    for name in ("s", "u", "v", "energy"):
        np.testing.assert_array_equal(getattr(big[0], name), getattr(big[1], name))
    plain, early = spots(2.0, 0.0), spots(2.0, 1.0)
    assert len(plain) == len(early) == n * 60 * p.deposit.lateral

    def per_layer(sp):
        layer = np.searchsorted(med.boundaries, sp.s, side="right") - 1
        count = np.stack([np.bincount(sp.shower[layer == i], minlength=n) for i in range(3)], 1)
        energy = np.stack([np.bincount(sp.shower[layer == i], weights=sp.energy[layer == i], minlength=n) for i in range(3)], 1)
        return count, energy

    (c0, e0), (c1, e1) = per_layer(plain), per_layer(early)
    assert c1[:, 0].mean() > 1.2 * c0[:, 0].mean()  # more spots in layer 0 (1.30x) ...
    assert c1[:, 2].mean() < c0[:, 2].mean()  # ... fewer in the back layer
    for i in range(2):  # ... and the same energy in each layer, within 4 standard errors
        d = e1[:, i].mean() - e0[:, i].mean()
        assert abs(d) < 4 * math.hypot(e0[:, i].std(), e1[:, i].std()) / math.sqrt(n)
    with pytest.raises(ConfigError, match="floor_early"):
        replace(p.deposit, floor_early=1.5)


def test_quanta_keep_the_energy_on_average():
    hp = Halo(energy_mev=0.7, energy_sigma=0.8, merge=1.0)
    mean_q = 0.7 * math.exp(0.32)
    energy = np.concatenate([np.full(100_000, 0.2), np.full(10, 50.0)]).astype(np.float32)
    made = quanta(np.random.default_rng(1), energy, hp)
    light = energy[:100_000]
    np.testing.assert_array_equal(made, np.flatnonzero(light > 0))
    kept = light > 0
    assert kept.mean() == pytest.approx(0.2 / mean_q, abs=0.005)  # survival: energy over the mean quantum
    assert light.mean() == pytest.approx(0.2, rel=0.02)  # the same energy on average
    assert np.median(light[kept]) == pytest.approx(0.7, rel=0.03)  # as whole quanta
    assert (energy[100_000:] == 50.0).all()  # heavier spots are left alone


def test_core_radius_grows_as_a_power_of_the_age():
    from calogan.simulate.em import radial_profile
    from calogan.simulate.params import Radial

    tau = np.array([0.0, 0.5, 1.0, 2.0], dtype=np.float32)
    linear = radial_profile(tau, np.log(50.0), 80.0, Radial())
    square = radial_profile(tau, np.log(50.0), 80.0, Radial(core_power=2.0))
    z1 = linear[0][0]
    # Rc = z1 + z2 tau^k: the same at tau = 0 and 1, a quarter of the age term at 0.5 (k = 2)
    np.testing.assert_allclose(square[0], z1 + (linear[0] - z1) * tau, rtol=1e-6)
    np.testing.assert_array_equal(square[1], linear[1])  # the tail and the core probability stay
    np.testing.assert_array_equal(square[2], linear[2])
    with pytest.raises(ConfigError, match="core_power"):
        Radial(core_power=0.0)


def test_core_probability_is_capped_at_core_max():
    from calogan.simulate.em import radial_profile
    from calogan.simulate.params import Radial

    tau = np.linspace(0.0, 3.0, 31, dtype=np.float32)
    free = radial_profile(tau, np.log(50.0), 80.0, Radial(p_scale=1.1))
    capped = radial_profile(tau, np.log(50.0), 80.0, Radial(p_scale=1.1, core_max=0.9))
    # GFlash's p scaled by 1.1 reaches 1 (no tail) at young ages; the cap leaves 10 % there
    assert free[2].max() == 1.0 and capped[2].max() == pytest.approx(0.9)
    np.testing.assert_array_equal(capped[2], np.minimum(free[2], np.float32(0.9)))
    np.testing.assert_array_equal(capped[0], free[0])  # the radii stay
    np.testing.assert_array_equal(capped[1], free[1])
    for bad in (0.0, 1.2):
        with pytest.raises(ConfigError, match="core_max"):
            Radial(core_max=bad)


def test_halo_quanta_fly_from_spots_and_take_their_energy():
    g = preset("calogan")
    m = media(g)
    n, k = 400, 50
    counts = np.full(n, k)
    starts = np.arange(n) * k
    s = np.full(n * k, 100.0, dtype=np.float32)
    zero = np.zeros(n * k, dtype=np.float32)
    hp = Halo(per_gev=10.0, exponent=1.0, flight_x0=2.0, min_flight_x0=4.0, forward=0.6, energy_mev=0.5, energy_sigma=0.5)
    e = np.full(n, 20.0)
    budget = np.full(n, 20_000.0)
    (spots,), e_halo = halo_spots(
        np.random.default_rng(2), counts, starts, s, zero, zero, np.arange(n), e, budget, m, hp, default_params("e+").em.sampling, True
    )
    assert len(spots) == pytest.approx(n * 200, rel=0.02)  # Poisson mean 10 x 20 per shower
    np.testing.assert_allclose(np.bincount(spots.shower, weights=spots.energy, minlength=n), e_halo, rtol=1e-5)
    x0 = m.x0[m.reference_layer()]
    flight = np.sqrt((spots.s - 100.0) ** 2 + spots.u**2 + spots.v**2)
    assert flight.min() >= 4.0 * x0 * (1 - 1e-5)
    assert (flight - 4.0 * x0).mean() == pytest.approx(2.0 * x0, rel=0.02)
    assert ((spots.s - 100.0) / flight).mean() == pytest.approx(0.6 / 3, abs=0.01)  # density (1 + 0.6 c)/2: mean c = 0.2
    assert np.median(spots.energy) == pytest.approx(0.5, rel=0.03) and spots.stochastic == 0
    sf = m.sf_mip[m.reference_layer()]
    assert np.mean(spots.ehat) * sf == pytest.approx(hp.ehat * sf, rel=0.03)  # mean share ehat f_mip, each 0, whole or a part
    # a shower never gives more than half its deposit to quanta
    (capped,), e_cap = halo_spots(
        np.random.default_rng(2),
        counts,
        starts,
        s,
        zero,
        zero,
        np.arange(n),
        e,
        np.full(n, 100.0),
        m,
        hp,
        default_params("e+").em.sampling,
        False,
    )
    np.testing.assert_allclose(e_cap, 50.0, rtol=1e-5)
    np.testing.assert_allclose(np.bincount(capped.shower, weights=capped.energy, minlength=n), 50.0, rtol=1e-4)


def test_light_spots_and_quanta_keep_the_mean_shower():
    """The light tail, early and late spots and the quanta change how a shower's energy is
    cut into deposits, not where it goes on average: mean layer energies and layer-1 widths
    stay, while many more cells are hit."""

    from calogan import observables as ob

    p = default_params("e+")
    em = p.em
    plain = replace(
        em,
        radial=replace(em.radial, outer_spots=1.0),
        deposit=replace(em.deposit, early_spots=0.0, late_spots=0.0),
        halo=replace(em.halo, per_gev=0.0, merge=0.0),
    )
    light = replace(
        plain,
        radial=replace(em.radial, outer_spots=3.0),
        deposit=replace(em.deposit, early_spots=0.2, late_spots=0.3, lateral=4),
        halo=replace(plain.halo, merge=1.0),
    )
    e = np.full(3000, 20.0)
    a = simulate("calogan", "e+", e, seed=1, params=replace(p, em=plain))
    b = simulate("calogan", "e+", e, seed=2, params=replace(p, em=light))
    g = a.geometry
    la, lb = ob.layer_energies(a.cells, g), ob.layer_energies(b.cells, g)
    # each layer's mean within 4 standard errors of the difference (layer 0: 0.8 %, layer 1:
    # 0.2 %; the back layer holds 0.1 % of the energy, in a few showers)
    se = np.hypot(la.std(axis=0), lb.std(axis=0)) / math.sqrt(len(e))
    assert (np.abs(lb.mean(axis=0) - la.mean(axis=0)) < 4 * se).all()
    wa, wb = np.nanmean(ob.width(a.cells, g, "x")[:, 1]), np.nanmean(ob.width(b.cells, g, "x")[:, 1])
    assert wb == pytest.approx(wa, rel=0.02)
    ha, hb = ob.layer_hits(a.cells, g).mean(axis=0), ob.layer_hits(b.cells, g).mean(axis=0)
    assert (hb > 1.3 * ha).all()


def test_same_seed_same_showers_other_seed_other_showers():
    e = np.linspace(1, 100, 300)
    a = simulate("calogan", "e+", e, seed=5)
    b = simulate("calogan", "e+", e, seed=5)
    c = simulate("calogan", "e+", e, seed=6)
    np.testing.assert_array_equal(a.cells, b.cells)
    assert not np.array_equal(a.cells, c.cells)


def test_stream_does_not_depend_on_chunk_size():
    kw = dict(seed=3, x0=Distribution.parse("-50:50", "x0"), theta=Distribution.parse("0:0.3", "theta"))
    energy = Distribution.parse("1:100", "--energy")
    n = 2 * BLOCK + 37
    runs = [list(iter_simulate("calogan", "gamma", n, energy, chunk_size=c, **kw)) for c in (1, BLOCK, 10_000)]
    assert [len(r) for r in runs] == [3, 3, 1]
    joined = [np.concatenate([c.cells for c in r]) for r in runs]
    np.testing.assert_array_equal(joined[0], joined[1])
    np.testing.assert_array_equal(joined[0], joined[2])
    x0 = np.concatenate([c.conditions["x0"] for c in runs[0]])
    assert x0.shape == (n,) and -50 <= x0.min() and x0.max() <= 50
    assert set(runs[2][0].conditions) == {"x0", "y0", "theta", "phi"}


def test_fixed_energy_points_are_shared_out_equally():
    chunks = list(iter_simulate("calogan", "e+", 12, Distribution.parse("1,2,4", "--energy"), seed=0))
    e = chunks[0].e_inc
    assert sorted(np.unique(e, return_counts=True)[1]) == [4, 4, 4] and set(e) == {1.0, 2.0, 4.0}


@pytest.mark.parametrize("name", ["calogan", "atlas-barrel", "voxel-25"])
@pytest.mark.parametrize("particle", ["e+", "gamma", "pi+"])
def test_every_geometry_preset(name, particle):
    g = preset(name)
    e = np.array([2.0, 10.0, 50.0, 90.0] * 8)
    for mode in ("total", "active"):
        d = simulate(g, particle, e, seed=1, mode=mode, x0=5.0, theta=0.1, phi=1.0)
        assert d.cells.shape == (len(e), g.n_cells) and d.cells.dtype == np.float32
        assert np.isfinite(d.cells).all() and (d.cells >= 0).all()
        resp = d.cells.sum(axis=1) / (1000 * e)
        assert (resp <= 1.0).all()
        if particle != "pi+":
            # EM showers: mostly contained in ~20 X0 or more; the active share is a sampling fraction
            lo, hi = (0.8, 1.0) if mode == "total" else (0.01, 0.5)  # W/Si samples ~2 %
            assert lo < np.median(resp) <= hi, (name, mode, np.median(resp))
        # every layer is reached (photons rarely convert in the 0.06 X0 ATLAS presampler)
        reached = g.layer_sums(d.cells.astype(float)).sum(axis=0) > 0
        assert reached[1:].all() and (reached[0] or (particle == "gamma" and name == "atlas-barrel"))


def test_no_shower_deposits_more_than_its_energy():
    e = np.concatenate([np.full(200, 0.05), np.full(200, 1.0), np.geomspace(0.2, 500, 400)])
    for particle in ("e+", "e-", "gamma", "pi+", "pi-"):
        for mode in ("total", "active"):
            d = simulate("calogan", particle, e, seed=2, mode=mode, theta=np.linspace(0, 0.5, len(e)), phi=0.3, y0=-30.0)
            assert (d.cells.sum(axis=1, dtype=np.float64) <= 1000 * e).all(), (particle, mode)


def test_total_response_and_active_sampling_fraction_match_geant4_scale():
    e = np.full(400, 50.0)
    total = simulate("calogan", "e+", e, seed=4)
    active = simulate("calogan", "e+", e, seed=4, mode="active")
    r_t = total.cells.sum(1) / 50_000
    r_a = active.cells.sum(1) / 50_000
    # the Geant4 README: E_tot/E_inc about 0.99 (total) and 0.19 (active)
    assert abs(r_t.mean() - 0.993) < 0.005 and abs(r_a.mean() - 0.19) < 0.01
    # ~7 %/sqrt(E): about 1 % at 50 GeV, far above the 0.2 % of the total convention
    assert 0.005 < r_a.std() / r_a.mean() < 0.02 and r_t.std() / r_t.mean() < 0.5 * r_a.std() / r_a.mean()


def _layer_centroid(d, i, axis):
    cells = d.layers()[i].astype(np.float64)
    xs, ys = d.geometry.layers[i].cell_centres()
    c = xs if axis == "x" else ys
    return (cells * c).sum(axis=(1, 2)) / cells.sum(axis=(1, 2))


def test_position_and_angle_move_and_tilt_the_shower():
    e = np.full(200, 30.0)
    shifted = simulate("calogan", "e+", e, seed=1, x0=50.0, y0=-20.0)
    assert abs(_layer_centroid(shifted, 0, "y").mean() + 20) < 2  # 5 mm strips along y resolve it
    assert 30 < _layer_centroid(shifted, 1, "x").mean() < 60
    tilted = simulate("calogan", "e+", e, seed=1, theta=math.radians(20), phi=math.pi / 2)  # towards +y
    y0, y1 = _layer_centroid(tilted, 0, "y").mean(), _layer_centroid(tilted, 1, "y").mean()
    # a 20 deg track has moved tan(20 deg) * z sideways: ~20 mm in layer 0, ~60 mm at the layer-1 maximum
    assert 8 < y0 < 35 and 40 < y1 < 90
    assert abs(_layer_centroid(tilted, 1, "x").mean()) < 5


def test_photons_start_later_than_positrons():
    e = np.full(300, 20.0)
    depth = {}
    for p in ("e+", "gamma"):
        d = simulate("calogan", p, e, seed=8)
        layer_e = d.geometry.layer_sums(d.cells.astype(float))
        depth[p] = (layer_e[:, 0] / layer_e.sum(1)).mean()
    assert depth["gamma"] < depth["e+"] - 0.03  # less energy in the first layer


def test_pions_punch_through_and_deposit_little():
    d = simulate("calogan", "pi+", np.full(400, 50.0), seed=3)
    e_tot = d.cells.sum(1)
    mip_like = e_tot < 600  # MeV: a minimum-ionising crossing deposits ~350 MeV
    assert 0.15 < mip_like.mean() < 0.5
    assert 0.15 < (e_tot / 50_000).mean() < 0.5


def test_pion_radii_and_visible_share_follow_the_energy():
    """r_slope widens the hadronic part above 10 GeV and narrows it below; visible_slope does
    the same to its visible share (the factors are (E / 10 GeV)^slope)."""
    from dataclasses import replace

    from calogan import observables as ob

    p = default_params("pi+")
    hp = p.hadronic

    def showers(energy, **kw):
        return simulate("calogan", "pi+", np.full(1500, energy), seed=4, params=replace(p, hadronic=replace(hp, **kw)))

    def width(d):
        return np.nanmean(ob.width(d.cells, d.geometry, "x")[:, 2])

    for energy, sign in ((80.0, 1), (3.0, -1)):
        assert sign * (width(showers(energy, r_slope=0.5)) - width(showers(energy, r_slope=0.0))) > 0
        e0, e1 = showers(energy, visible_slope=0.0).cells.sum(1).mean(), showers(energy, visible_slope=0.5).cells.sum(1).mean()
        assert sign * (e1 / e0 - 1) > 0.03


def test_later_pi0s_start_deeper_and_leak_more():
    """em_late moves a share of the EM part to a depth drawn from the hadronic profile: the
    spots lie deeper, and more of the EM energy leaves through the back of the 1.2 lambda_I
    stack (``em_spots`` gives the profile's tail behind the back face to no spot)."""
    from dataclasses import replace

    from calogan.simulate.deposit import Spots, Tracks
    from calogan.simulate.hadronic import hadron_spots
    from calogan.simulate.materials import media

    g = preset("calogan")
    med = media(g)
    p = default_params("pi+")
    n = 3000
    tracks = Tracks.make(n)
    out = {}
    for late in (0.0, 0.6):
        hp = replace(p.hadronic, em_late=late)
        spots = Spots.concatenate(hadron_spots(np.random.default_rng(6), np.full(n, 50.0), tracks, med, hp, p.em, active=False))
        out[late] = (spots.energy.sum() / n, np.average(spots.s, weights=spots.energy))
    assert out[0.6][1] > out[0.0][1] + 20.0  # mm
    assert out[0.6][0] < 0.9 * out[0.0][0]
    with pytest.raises(ConfigError, match=r"HadronicParams.em_late = 1.5 is out of range"):
        replace(p.hadronic, em_late=1.5)


def test_polar_layers_and_calochallenge_xml(tmp_path):
    polar = Geometry(
        "polar",
        (
            Layer("a", (4, 3), depth=60.0, binning="polar", r_edges=(0, 10, 40, 200)),
            Layer("b", (1, 2), depth=300.0, binning="polar", r_edges=(0, 50, 300)),
        ),
    )
    d = simulate(polar, "e+", np.full(50, 10.0), seed=0)
    a, b = d.layers()
    assert a[:, :, 0].sum() > a[:, :, 2].sum()  # the core lands in the innermost ring
    assert np.allclose(a.sum(axis=(0, 2)) / a.sum(), 0.25, atol=0.05)  # azimuthally uniform
    assert (b.sum(axis=(1, 2)) > 0).all()
    xml = tmp_path / "binning.xml"
    xml.write_text(
        '<Bins><Bin name="photon"><Layer id="0" r_edges="0,5,10,30" n_bin_alpha="8"/><Layer id="1" r_edges="0,20,100" n_bin_alpha="1"/></Bin></Bins>'
    )
    with pytest.raises(ConfigError, match="--layer-depth"):
        simulate(str(xml), "gamma", [10.0], seed=0)
    out = tmp_path / "cc.h5"
    argv = ["simulate", "-n", "40", "--geometry", str(xml), "--layer-depth", "100", "--format", "calochallenge", "-o", str(out), "--quiet"]
    assert main(argv) == 0
    info = inspect(out)  # the file carries its geometry, depths included
    assert info.format == "calochallenge" and info.n == 40 and info.geometry.layers[0].depth == 100.0


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ConfigError, match="does not model particle 'mu-'"):
        simulate("calogan", "mu-", [1.0], seed=0)
    with pytest.raises(ConfigError, match="does not model particle 'kaon'"):
        simulate("calogan", "kaon", [1.0], seed=0)
    with pytest.raises(GeometryError, match="unknown geometry"):
        simulate("nope", "e+", [1.0], seed=0)
    with pytest.raises(ConfigError, match="> 0 GeV"):
        simulate("calogan", "e+", [10.0, 0.0], seed=0)
    with pytest.raises(ConfigError, match="> 0 GeV"):
        simulate("calogan", "e+", [np.nan], seed=0)
    with pytest.raises(ConfigError, match="n must be >= 1"):
        simulate("calogan", "e+", [], seed=0)
    with pytest.raises(ConfigError, match="theta must lie"):
        simulate("calogan", "e+", [1.0], seed=0, theta=2.0)
    with pytest.raises(ConfigError, match="mode"):
        simulate("calogan", "e+", [1.0], seed=0, mode="visible")
    with pytest.raises(ConfigError, match="n must be >= 1"):
        iter_simulate("calogan", "e+", 0, Distribution.parse("1:2", "e"), seed=0)
    with pytest.raises(ConfigError, match="reversed"):
        Distribution.parse("100:1", "--energy")
    with pytest.raises(ConfigError, match="> 0"):
        Distribution.parse("-1:10", "--energy", positive=True)
    with pytest.raises(ConfigError, match="expected LO:HI"):
        Distribution.parse("1:x", "--energy")
    with pytest.raises(ConfigError, match="parameters are for e\\+, not pi\\+"):
        simulate("calogan", "pi+", [1.0], seed=0, params=default_params("e+"))


def test_params_round_trip_and_validation(tmp_path):
    p = default_params("gamma")
    assert p.particle == "gamma" and p.em.longitudinal.conversion_x0 == pytest.approx(9 / 7)
    assert "command" in p.provenance and p.provenance["reference"]  # the shipped files say where they came from
    path = save_params(p, tmp_path / "g.json")
    assert load_params(path) == p
    with pytest.raises(ConfigError, match="exists"):
        save_params(p, path)
    d = json.loads(path.read_text())
    d["em"]["radial"]["wobble"] = 1.0
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"em.radial: unknown key\(s\) wobble"):
        load_params(path)
    del d["em"]["radial"]["wobble"]
    d["em"]["radial"]["r_max"] = -1.0
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"g\.json: em\.radial: Radial\.r_max = -1\.0 is out of range"):
        load_params(path)
    d["em"]["radial"]["r_max"] = 5.0
    del d["em"]["deposit"]["loss_mean"]
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"missing key\(s\) loss_mean"):
        load_params(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_params(path)
    with pytest.raises(ConfigError, match="need a 'hadronic' section"):
        SimParams("pi+")
    # a version-1 file (no soft photons, light spots or energy-dependent pions) reads with
    # the new keys at values that leave them out
    d = json.loads(json.dumps(p.to_dict()))
    d["version"] = 1
    del d["em"]["halo"], d["em"]["radial"]["outer_spots"], d["em"]["deposit"]["late_spots"]
    path.write_text(json.dumps(d))
    old = load_params(path)
    assert old.em.halo.per_gev == 0 and old.em.halo.merge == 0 and old.em.radial.outer_spots == 1 and old.em.deposit.late_spots == 0
    assert old.em.longitudinal == p.em.longitudinal
    d["version"] = 2
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"em.radial: missing key\(s\) outer_spots"):
        load_params(path)
    # a file of version v without the key version v + 1 added reads it at the value that leaves it out
    for version, section, key, default in (
        (2, "radial", "core_power", 1.0),  # the core radius grows linearly with the age, as in GFlash
        (3, "radial", "core_max", 1.0),  # GFlash's core probability, capped at 1
        (4, "sampling", "grain_age", 0.0),  # the active grains the same at every age
        (5, "deposit", "depth_spread", 0.0),  # a depth's spots all at its depth
        (6, "deposit", "floor_early", 0.0),  # a small shower's extra depths drawn as the others
    ):
        d = json.loads(json.dumps(p.to_dict()))
        d["version"] = version
        del d["em"][section][key]
        path.write_text(json.dumps(d))
        assert getattr(getattr(load_params(path).em, section), key) == default, key
    d["em"]["deposit"]["depth_spread"] = -0.5
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"g\.json: em\.deposit: .*depth_spread"):
        load_params(path)
    d["version"] = 8
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="version 8, this calogan reads versions 1 to 7"):
        load_params(path)
    assert default_params("e-").particle == "e-" and default_params("pi-").hadronic == default_params("pi+").hadronic


def test_cli_default_command_just_works(tmp_path, capsys):
    out = tmp_path / "eplus.h5"
    assert main(["simulate", "-n", "300", "-o", str(out)]) == 0
    assert "wrote 300 e+ showers" in capsys.readouterr().out
    info = inspect(out)
    assert info.n == 300 and info.particle == "e+" and info.geometry.name == "calogan" and info.conditions == ()
    assert info.attrs["convention"] == "total" and info.attrs["generator"].startswith("calogan-param ")
    assert 1.0 <= info.e_range[0] and info.e_range[1] <= 100.0
    # the same command and seed give the same file contents
    again = tmp_path / "again.h5"
    assert main(["simulate", "-n", "300", "-o", str(again), "--quiet"]) == 0
    np.testing.assert_array_equal(read_showers(out).cells, read_showers(again).cells)


def test_cli_positions_angles_are_stored_in_mm_and_rad(tmp_path):
    out = tmp_path / "varpos.h5"
    argv = ["simulate", "-n", "300", "--particle", "gamma", "--mode", "active", "--x0=-50:50", "--theta", "0:20", "--phi", "0:360"]
    assert main([*argv, "--energy", "1,2,4,8,16,32,64,128,256", "-o", str(out), "--quiet"]) == 0
    d = read_showers(out)
    assert set(d.conditions) == {"x0", "y0", "theta", "phi"}
    assert (np.abs(d.conditions["x0"]) <= 50).all() and (d.conditions["y0"] == 0).all()
    assert 0 <= d.conditions["theta"].min() and d.conditions["theta"].max() <= math.radians(20) + 1e-6
    assert d.conditions["phi"].max() > math.pi  # degrees converted, full turn
    assert set(np.round(d.e_inc, 3)) == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    with h5py.File(out) as f:
        assert f.attrs["particle"] == "gamma" and f.attrs["convention"] == "active"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "0"], "-n must be >= 1"),
        (["--energy", "50:10"], "reversed"),
        (["--energy", "0:10"], "must be > 0"),
        (["--particle", "proton"], "unknown particle 'proton'"),
        (["--particle", "mu-"], "does not model particle 'mu-'"),
        (["--geometry", "atlas"], "unknown geometry 'atlas'"),
        (["--theta", "0:95"], "--theta must lie in"),
        (["--layer-depth", "10"], "already gives every layer's depth"),
    ],
)
def test_cli_bad_input_is_one_line_and_leaves_no_file(tmp_path, capsys, argv, message):
    out = tmp_path / "x.h5"
    assert main(["simulate", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("calogan simulate: error: ") and message in err and "\n" not in err
    assert not out.exists() and os.listdir(tmp_path) == []


def test_cli_unwritable_or_existing_output(tmp_path, capsys):
    assert main(["simulate", "-n", "10", "-o", str(tmp_path / "missing" / "x.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root can write anywhere: nothing to test then
            assert main(["simulate", "-n", "10", "-o", str(locked / "x.h5")]) == 2
            assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)
    out = tmp_path / "x.h5"
    out.write_bytes(b"keep me")
    assert main(["simulate", "-n", "10", "-o", str(out)]) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_bytes() == b"keep me"


def test_cli_interrupted_run_leaves_no_file(tmp_path, monkeypatch):
    from calogan.simulate import simulator

    calls = []
    real = simulator.simulate_block

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(simulator, "simulate_block", failing)
    out = tmp_path / "x.h5"
    assert main(["simulate", "-n", str(5 * BLOCK), "--chunk-size", str(BLOCK), "-o", str(out)]) == 130
    assert os.listdir(tmp_path) == []
