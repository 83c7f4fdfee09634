"""Electromagnetic showers after GFlash, down to the cell level: profiles, spots, soft quanta.

Grindhammer & Peters, "The parameterized simulation of electromagnetic showers in
homogeneous and sampling calorimeters", hep-ex/0001020. A shower of energy E has a
longitudinal profile dE/dt = E f(t), f the Gamma density of shape alpha and rate beta in
radiation lengths t, whose (ln T, ln alpha) (T = (alpha - 1)/beta the depth of the maximum)
are correlated normal variables drawn shower by shower; energy spots are drawn from that
profile and spread radially by a core + tail profile in Moliere radii whose widths and
mixture depend on the age tau = t/<T> (<T> the mean depth of the maximum at E). Lengths
follow each layer's effective X0 and R_M; photons start after an exponential conversion
depth, an incident e+- first ionises as a MIP track.

Departures from GFlash, each to match Geant4 (see the comments where they are made): the
radial age uses <T>, not the shower's own T; radii are cut at ``Radial.r_max``; the energy
behind the back face is the profile's own integral, not a count of spots; the active share
of a shower is normalised to a constant; spot energies carry random weights. And what makes
the cells look like Geant4's, not only their averages (``params.Deposit``, ``params.Halo``):

- spots are drawn where Geant4 spreads energy thinly more often than the profile says and
  weighted down there (light early, late and outer spots), several at each depth with
  stratified radii, about an axis that wanders shower by shower;
- a spot lighter than a soft quantum becomes one quantum or nothing (``quanta``), so the thin
  parts of a shower deposit about one quantum of ~1 MeV per hit cell, as in Geant4;
- soft photons fly centimetres before they deposit (``halo_spots``): the cells far from the
  axis and the back layer light up one quantum at a time.

The sampling fluctuations of small deposits are drawn per cell (``deposit.sampled_share``), in
grains that grow at the end of the shower (``grains``, ``params.Sampling``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import gammainc, ndtri

from calogan.simulate.deposit import Spots, Tracks, layer_of, track_spots
from calogan.simulate.materials import Media
from calogan.simulate.params import Deposit, EMParams, Halo, Longitudinal, Radial, Sampling

__all__ = [
    "deposited_energy",
    "ehat_shape",
    "em_spots",
    "grains",
    "halo_spots",
    "mean_quantum",
    "n_spots",
    "primary_track",
    "profile_moments",
    "profiles",
    "quanta",
    "quantum_energies",
    "radial_profile",
    "reference_medium",
    "seen",
    "track_losses",
]

_MIN_T = 0.3  # X0: the parametrization is meant for E >> E_c; keep tiny showers physical
_MIN_ALPHA = 1.05


def reference_medium(media: Media) -> tuple[float, float, float]:
    """(Z_eff, E_c MeV, F_s = X0/period) of the layer with the most radiation lengths."""
    i = media.reference_layer()
    return float(media.z_eff[i]), float(media.critical_energy[i]), float(media.x0[i] / media.period[i])


def profile_moments(e_gev: np.ndarray, media: Media, lp: Longitudinal) -> tuple[np.ndarray, ...]:
    """(<ln T>, sigma ln T, <ln alpha>, sigma ln alpha, rho), each (n,), for energies (n,) GeV."""
    z, ec, fs = reference_medium(media)
    ln_y = np.log(np.maximum(np.asarray(e_gev, dtype=np.float64) * 1000.0 / ec, 1.0 + 1e-9))
    t_mean = ln_y - 0.812 - 0.59 * fs + lp.t_offset + lp.t_slope * ln_y
    a_mean = 0.81 + (0.458 + 2.26 / z) * ln_y - 0.444 * fs + lp.a_offset + lp.a_slope * ln_y
    mu_t = np.log(np.maximum(t_mean, _MIN_T))
    mu_a = np.log(np.maximum(a_mean, _MIN_ALPHA + 0.05))
    # the GFlash widths diverge for y below ~20 (E ~ 0.2 GeV); cap them at 1
    sig_t = lp.sigma_scale / np.maximum(-2.5 + 1.25 * ln_y, 1.0)
    sig_a = lp.sigma_scale / np.maximum(-0.82 + 0.79 * ln_y, 1.0)
    rho = np.clip(0.784 - 0.023 * ln_y, -0.99, 0.99)
    return mu_t, sig_t, mu_a, sig_a, rho


def profiles(e_gev: np.ndarray, normals: np.ndarray, media: Media, lp: Longitudinal) -> tuple[np.ndarray, np.ndarray]:
    """Shower-by-shower (T, alpha), each (n,), from standard normals of shape (2, n)."""
    mu_t, sig_t, mu_a, sig_a, rho = profile_moments(e_gev, media, lp)
    n1, n2 = normals
    t_max = np.exp(mu_t + sig_t * n1)
    alpha = np.exp(mu_a + sig_a * (rho * n1 + np.sqrt(1.0 - rho**2) * n2))
    return np.maximum(t_max, _MIN_T), np.maximum(alpha, _MIN_ALPHA)


def _radial_coefficients(ln_e: np.ndarray, z: float, rp: Radial) -> tuple[np.ndarray, ...]:
    """Per-shower coefficients of GFlash eqs. 29-31, each (n,) float32 (or a scalar)."""
    f32 = np.float32
    ln_e = np.asarray(ln_e, dtype=np.float64)
    core0 = (rp.core_scale * (0.0251 + 0.00319 * ln_e)).astype(f32)
    k4 = (0.3585 + 0.0421 * ln_e).astype(f32)
    inv_p3 = (1.0 / (1.313 - 0.0686 * ln_e)).astype(f32)
    return core0, k4, inv_p3


def radial_profile(tau: np.ndarray, ln_e: np.ndarray, z: float, rp: Radial) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core radius, tail radius (Moliere radii) and core probability at age tau; all (K,).

    GFlash eqs. 29-31 (homogeneous media, Z the effective charge) with ``ln_e`` = ln(E/GeV)
    per spot: Rc = z1 + z2 tau, Rt = k1 (exp(k3 (tau - k2)) + exp(k4 (tau - k2))),
    p = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)), scaled by the fitted factors (the core's
    age term as z2 tau^k, ``Radial.core_power``; p at most ``Radial.core_max``).
    """
    core0, k4, inv_p3 = _radial_coefficients(ln_e, z, rp)
    return _radial_at(np.asarray(tau, dtype=np.float32), core0, k4, inv_p3, z, rp)


def _radial_at(tau, core0, k4, inv_p3, z: float, rp: Radial):
    # float32 and in place where the arrays are per spot: this runs once per spot
    f32 = np.float32
    if rp.core_power == 1.0:
        r_core = tau * f32(rp.core_scale * rp.core_age * (0.1162 - 0.000381 * z))
    else:  # tau^k as exp(k log tau): numpy's float32 power is not vectorised; log 0 = -inf gives 0
        with np.errstate(divide="ignore"):
            r_core = np.exp(np.log(tau) * f32(rp.core_power)) * f32(rp.core_scale * rp.core_age * (0.1162 - 0.000381 * z))
    r_core += core0
    d = tau - f32(0.645)
    r_tail = d * f32(-2.59)
    np.exp(r_tail, out=r_tail)
    r_tail *= f32(rp.tail_early)
    late = k4 * d
    r_tail += np.exp(late, out=late)
    r_tail *= f32(rp.tail_scale * (0.659 - 0.00309 * z))
    q = f32(0.401 + 0.00187 * z) - tau
    q *= inv_p3
    p_core = q - np.exp(q)
    np.exp(p_core, out=p_core)
    p_core *= f32(rp.p_scale * (2.632 - 0.00094 * z))
    np.minimum(p_core, f32(rp.core_max), out=p_core)
    return r_core, r_tail, p_core


def ehat_shape(tau: np.ndarray, sp: Sampling) -> np.ndarray:
    """Relative active share 1 + boost exp(-tau/tau_e) of a deposit at age tau = t/T; (K,)."""
    return 1.0 + sp.ehat_boost * np.exp(-np.asarray(tau) / sp.ehat_tau)


def n_spots(e_gev: np.ndarray, dp: Deposit, floor: bool = True) -> np.ndarray:
    """(n,) number of spots of showers of energy e_gev (n,); ``floor=False``: the shower's own,
    without the ``min_spots`` floor (at least 1)."""
    n = np.round(dp.spots_per_gev * np.power(np.asarray(e_gev, dtype=np.float64), dp.spots_exponent))
    return np.clip(n, dp.min_spots if floor else 1, dp.max_spots).astype(np.int64)


def deposited_energy(rng: np.random.Generator, e_gev: np.ndarray, dp: Deposit) -> np.ndarray:
    """(n,) MeV a shower of e_gev (n,) GeV leaves in the calorimeter's volume, before leakage.

    E (1 - loss) with loss >= 0 Gamma distributed (see ``params.Deposit``): a shower never
    deposits more than its energy.
    """
    mean = np.maximum(dp.loss_mean + dp.loss_mean_stochastic / np.sqrt(e_gev), 0.0)
    sigma = np.sqrt(dp.loss_sigma_stochastic**2 / e_gev + dp.loss_sigma_constant**2)
    loss = np.zeros(len(e_gev))
    ok = (mean > 0) & (sigma > 0)
    shape = np.square(mean[ok] / sigma[ok])
    loss[ok] = rng.standard_gamma(shape) * (mean[ok] / shape)
    return 1000.0 * e_gev * (1.0 - np.clip(loss, 0.0, 1.0))


def primary_track(
    rng: np.random.Generator, e_dep: np.ndarray, tracks: Tracks, media: Media, track_x0: float, sampling: Sampling
) -> tuple[Spots, np.ndarray]:
    """The incident e+-'s ionisation over its first ``track_x0`` X0: (spots, energy left (n,) MeV).

    Minimum ionisation per layer crossed, taken from the shower's deposit ``e_dep`` (n,) MeV.
    """
    n = len(e_dep)
    s_end = tracks.path_from_depth(np.full(n, track_x0), np.arange(n), media.x0_boundaries, media.boundaries)
    lo, lengths = tracks.crossed(s_end, media)
    losses = track_losses(lengths, e_dep, media)
    return track_spots(rng, lo, lengths, losses, 1.0, sampling.stochastic), e_dep - losses.sum(axis=1)


def track_losses(lengths: np.ndarray, e_dep: np.ndarray, media: Media) -> np.ndarray:
    """(n, L) MeV of minimum ionisation over ``lengths`` (n, L) mm, at most ``e_dep`` (n,) in all."""
    cum = np.minimum(np.cumsum(lengths * media.mip_per_mm, axis=1), np.asarray(e_dep)[:, None])
    return np.diff(cum, axis=1, prepend=0.0)


def em_spots(
    rng: np.random.Generator,
    e_gev: np.ndarray,
    e_dep: np.ndarray,
    t_start: np.ndarray,
    shower: np.ndarray,
    tracks: Tracks,
    media: Media,
    params: EMParams,
    active: bool = True,
) -> list[Spots]:
    """Spots of n electromagnetic showers: their charged deposits, then their soft-photon quanta.

    ``e_gev`` (n,) sets the profile (GeV), ``e_dep`` (n,) the energy the spots share (MeV),
    ``t_start`` (n,) where each shower starts along its track (radiation lengths) and
    ``shower`` (n,) its index in ``tracks``; ``active=False`` skips the active shares.
    A shower has ``n_spots`` depths and ``Deposit.lateral`` spots at each (the depth, its
    age and radial profile are drawn once for them, the costly part). Per-depth arrays are
    (D,) float32, per-spot ones (D, m), and per-shower values reach them by ``np.repeat``
    (the depths of a shower are contiguous): this is the simulator's hot path.
    """
    f32 = np.float32
    e_gev = np.asarray(e_gev, dtype=np.float64)
    t_start = np.asarray(t_start, dtype=np.float64)
    n = len(e_gev)
    lp, dp, rp, sp = params.longitudinal, params.deposit, params.radial, params.sampling
    m = dp.lateral
    t_max, alpha = profiles(e_gev, rng.standard_normal((2, n)), media, lp)
    counts = n_spots(e_gev, dp)  # depths per shower
    idx = np.repeat(shower, counts)  # (D,) shower of each depth, an index into tracks
    d = len(idx)
    starts = np.cumsum(counts) - counts  # every shower has at least min_spots >= 1

    def each(per_shower) -> np.ndarray:  # (n,) -> (D,) float32, the value of each depth's shower
        return np.repeat(np.asarray(per_shower, dtype=f32), counts)

    # depth after the start: a Gamma(alpha) variate over beta = (alpha - 1) / T
    gam = rng.standard_gamma(each(alpha), dtype=f32)  # (D,) in units of 1/beta
    weights = None
    # shares of the depths drawn from the compressed and the stretched profile: scalars, or
    # per shower (n,) where the depths that ``min_spots`` adds to a small shower go to the
    # compressed one (``floor_early``)
    q_early, q_late = dp.early_spots, dp.late_spots
    if dp.floor_early > 0:
        floor = dp.floor_early * (counts - n_spots(e_gev, dp, floor=False)) / counts
        if floor.any():
            q_early, q_late = floor + (1.0 - floor) * q_early, (1.0 - floor) * q_late
    if np.any(q_early) or dp.late_spots > 0:
        # Light early and late spots: shares q_e, q_l of the depths are drawn from profiles
        # compressed by c (rate c beta) and stretched by s (rate beta/s), and every depth is
        # weighted by f/g, g = (1 - q_e - q_l) f + q_e f_c + q_l f_s the density it came
        # from: the same mean profile, with more, lighter spots at the start and the end of
        # the shower, where Geant4 spreads its energy over many small deposits.
        # f_c/f = c^alpha exp(-(c - 1) x), f_s/f = s^-alpha exp((1 - 1/s) x), x = beta t.
        share = each if np.ndim(q_early) else f32  # (D,) from per-shower shares, else a scalar
        pick = rng.random(d, dtype=f32)
        gam *= np.where(
            pick < share(q_early),
            f32(1.0 / dp.early_squeeze),
            np.where(pick >= share(1.0 - q_late), f32(dp.late_stretch), f32(1.0)),
        )
        ratio = share(1.0 - q_early - q_late)
        if np.any(q_early):
            e_part = gam * f32(1.0 - dp.early_squeeze)
            np.exp(e_part, out=e_part)
            e_part *= each(q_early * np.power(dp.early_squeeze, alpha))
            ratio = ratio + e_part
        if dp.late_spots > 0:
            l_part = np.minimum(gam * f32(1.0 - 1.0 / dp.late_stretch), f32(80.0))
            np.exp(l_part, out=l_part)
            l_part *= each(q_late * np.power(dp.late_stretch, -alpha))
            ratio = ratio + l_part
        weights = np.reciprocal(ratio)
    depth = gam * each(t_max / (alpha - 1.0))
    t = depth + each(t_start) if np.any(t_start) else depth
    # The age that shapes the radial profile is measured against the mean depth of the
    # maximum at the shower's energy, not the shower's own T: Geant4 shows a lateral
    # containment that barely fluctuates (the 4 central layer-1 cells hold 0.888 +- 0.009
    # of a 50 GeV e+ layer), 4x less than ages of individual showers give.
    # (capped where the profile is long over: the GFlash tail radius grows exponentially)
    t_mean = np.exp(profile_moments(e_gev, media, lp)[0])  # (n,) X0
    tau = depth * each(1.0 / t_mean)
    np.minimum(tau, f32(30.0), out=tau)
    # float32 like the other per-spot arrays (0.1 um at the back face): half the memory traffic
    s = tracks.path_from_depth(t, idx, media.x0_boundaries, media.boundaries).astype(f32)
    # the Moliere radius of the layer the shower axis is in at that depth
    moliere = media.moliere_radius
    if np.ptp(moliere) < 1e-3 * moliere[0]:
        rm = f32(moliere.mean())
    else:
        z_axis = s * tracks.cos_theta[idx] if tracks.tilted else s
        rm = moliere.astype(f32)[layer_of(z_axis, media.boundaries)][:, None]
    z, _, _ = reference_medium(media)
    core0, k4, inv_p3 = _radial_coefficients(np.log(e_gev), z, rp)
    r_core, r_tail, p_core = _radial_at(tau, each(core0), each(k4), each(inv_p3), z, rp)
    u = rng.random((3, d, m), dtype=f32)  # the m spots of every depth
    core = u[0] < p_core[:, None]
    # (D, m) the core or the tail radius of each spot's depth: a gather from the (D, 2) pairs
    # (tail, core), 2.5x faster than np.where broadcasting the two (D, 1) columns
    pick_radius = core.view(np.int8).astype(np.intp)
    pick_radius += np.arange(0, 2 * d, 2)[:, None]
    radius = np.stack((r_tail, r_core), axis=1).reshape(-1)[pick_radius]
    # Radial quantiles v stratified over the m spots of a depth ((j + U) / m: a shower of
    # thousands of particles is smooth, not a few hundred independent lumps) and drawn
    # outwards, v -> 1 - (1 - v)^k with weight k (1 - v)^(k - 1), k = ``outer_spots``: more,
    # lighter spots away from the axis, where Geant4 spreads its energy over many deposits
    v = u[1]
    if m > 1:
        v += np.arange(m, dtype=f32)
        v *= f32(1.0 / m)
    outer = None
    if rp.outer_spots != 1.0:
        rest = f32(1.0) - v
        # rest^(k - 1) as exp((k - 1) log rest): numpy's float32 exp and log are vectorised,
        # its power is not (1.6x the time). rest is 0 where v rounds up to 1 in float32: log 0
        # = -inf gives the power's 0 (k > 1 by Radial's check), quietly.
        with np.errstate(divide="ignore"):
            outer = np.log(rest)
        outer *= f32(rp.outer_spots - 1.0)
        np.exp(outer, out=outer)
        v = f32(1.0) - rest * outer
        outer *= f32(rp.outer_spots)
    # inverse of the cumulative F(r) = r^2/(r^2 + R^2) of 2 r R^2/(r^2 + R^2)^2, drawn below
    # F(r_max): the r^-3 tail would otherwise put a few spots metres out, a leakage whose
    # spot-by-spot noise alone exceeds the 0.16 % resolution of the Geant4 total response
    r_max2 = f32(rp.r_max**2)
    q = radius * radius
    q += r_max2
    np.divide(r_max2, q, out=q)
    q *= v  # in [0, F(r_max))
    r = f32(1.0) - q
    np.divide(q, r, out=r)
    np.sqrt(r, out=r)
    r *= radius
    r *= rm
    psi = u[2]
    psi *= f32(2.0 * math.pi)
    uu = np.cos(psi)
    uu *= r
    vv = np.sin(psi, out=psi)
    vv *= r
    if dp.wander > 0:
        # The shower's axis wanders: Geant4's showers are smooth where they are dense (the
        # inner strips of layer 0 vary by 40 % shower to shower, as their layer does), but
        # the few energetic particles of their start scatter, and the centroid of a 50 GeV
        # e+ wanders by 0.55 mm in layer 0 and 1.1 mm in layer 1, in proportion to
        # 1/sqrt(E), the two only loosely correlated. The axis of shower i is offset by
        # W_i1 sqrt(min(t, T)) + W_i2 sqrt(max(t - T, 0)) mm at depth t (X0 after its
        # start), T its mean depth of maximum, W normal with standard deviation
        # ``wander`` / sqrt(E/GeV) along u and v.
        w = rng.standard_normal((2, 2, n)) * (dp.wander / np.sqrt(e_gev))
        tm = each(t_mean)
        before = np.sqrt(np.minimum(depth, tm))
        after = np.sqrt(np.maximum(depth - tm, f32(0.0)))
        uu += (each(w[0, 0]) * before + each(w[1, 0]) * after)[:, None]
        vv += (each(w[0, 1]) * before + each(w[1, 1]) * after)[:, None]
    # Spot energies: random weights (exponential or Gamma, one per depth), so that cell
    # energies are continuous. The energy behind the back face is the profile's own tail,
    # 1 - P(alpha, beta (t_back - t_start)), which leaves the calorimeter; the spots in front
    # share the rest. Leakage then fluctuates with the profile, as in a real shower, and not
    # with the count of the few spots that happen to land behind the calorimeter (those
    # carry no energy).
    t_back = media.x0_boundaries[-1] / tracks.cos_theta[shower] - t_start  # (n,) back face, after the start
    contained = gammainc(alpha, (alpha - 1.0) / t_max * np.maximum(t_back, 0.0))  # (n,)
    if dp.weight_shape == 1.0:
        draw = rng.standard_exponential(d, dtype=f32)
    else:  # Gamma weights of mean 1 and variance 1/shape: smoother than exponential ones
        draw = rng.standard_gamma(f32(dp.weight_shape), d, dtype=f32)
        draw *= f32(1.0 / dp.weight_shape)
    draw *= depth < each(t_back)
    weights = draw if weights is None else weights * draw
    energy = np.repeat(weights[:, None], m, axis=1) if outer is None else outer * weights[:, None]  # (D, m)
    w_sum = np.add.reduceat(energy.reshape(-1), starts * m, dtype=np.float64)  # a shower's depths are contiguous
    # every spot as a flat (K,) array, K = D m; a shower's spots stay contiguous
    if dp.depth_spread > 0 and m > 1:
        # The spots of a depth stand for particles spread along the shower, not at one
        # depth: with one depth for all m, a layer's face takes them all or none, and the
        # back layer's hit count came in clumps (at 10-20 GeV its variance over its mean
        # was 3.7 against Geant4's 2.1). Past its maximum a shower is a bath of soft photons
        # that fly X0s before they deposit: a spot at depth t after the shower's start lies
        # at t + ``depth_spread`` (U - 1/2) max(t - T, 0), each its own U, T the mean depth
        # of the maximum. The young shower stays compact (spread from t = 0 instead, deeper
        # and so wider spots reached layer 0 and widened its strip profile 5-10 mm from the
        # axis by 6 %). The offset goes to mm at the radiation length (mm) of the depth's
        # layer. No spot of a depth inside is pushed out of the back face: what leaks is the
        # profile's tail (below), and spots pushed out added a leakage noise Geant4 does not
        # have (the resolution above 60 GeV came out 20-26 % too wide); their offsets turn
        # forwards.
        cos_t = tracks.cos_theta[idx] if tracks.tilted else None
        z_axis = s * cos_t if tracks.tilted else s
        step = media.x0.astype(f32)[layer_of(z_axis, media.boundaries)]
        step *= np.maximum(depth - each(t_mean), f32(0.0))
        step *= f32(dp.depth_spread)
        along = rng.random((d, m), dtype=f32)
        along -= f32(0.5)
        along *= step[:, None]
        room = f32(media.boundaries[-1]) - z_axis  # mm to the back face (along z)
        if tracks.tilted:
            room /= cos_t.astype(f32)
        np.negative(along, out=along, where=along >= room[:, None])
        along += s[:, None]
        s = along.reshape(-1)
    else:
        s = np.repeat(s, m)
    uu, vv, energy = uu.reshape(-1), vv.reshape(-1), energy.reshape(-1)
    idx = np.repeat(idx, m)
    per_shower = counts * m
    # the age of every spot, for the grains of its active share (``Sampling.grain_age``)
    ages = (tau, each(1.0 / t_mean), m) if active and sp.grain_age > 0 else None
    halo, e_halo = halo_spots(
        rng, per_shower, starts * m, s, uu, vv, shower, e_gev, e_dep * contained, media, params.halo, sp, active, ages
    )
    share = np.divide(e_dep * contained - e_halo, w_sum, out=np.zeros(n), where=w_sum > 0)
    energy *= np.repeat(share.astype(f32), per_shower)
    made = quanta(rng, energy, params.halo) if params.halo.merge > 0 else None
    if not active:  # the total convention needs no active share
        return [Spots(idx, s, uu, vv, energy, 1.0, sp.stochastic), *halo]
    # e/mip of each spot, scaled so that every shower's mean is ehat exactly: the few
    # hundred spots' random depths and core/tail draws, or a deep or shallow profile, must
    # not spread the active share, which in Geant4 is constant and uncorrelated with the
    # profile (the active/total ratio of the same showers spreads by 7 %/sqrt(E) only)
    hat = gam * each(-1.0 / ((alpha - 1.0) * sp.ehat_tau))  # -t / (T tau_e)
    np.exp(hat, out=hat)
    hat *= f32(sp.ehat_boost)
    hat += f32(1.0)  # ehat_shape(t / T)
    hat = np.stack((hat * f32(sp.ehat_tail), hat), axis=1).reshape(-1)[pick_radius].reshape(-1)  # (tail, core) as the radii
    drawn = np.add.reduceat(energy * hat, starts * m, dtype=np.float64)
    norm = np.divide(sp.ehat * np.add.reduceat(energy, starts * m, dtype=np.float64), drawn, out=np.zeros(n), where=drawn > 0)
    hat *= np.repeat(norm.astype(f32), per_shower)
    stochastic = sp.stochastic
    grain = None
    if ages is not None:  # per depth, then per spot
        grain = np.repeat(grains(tau, sp), m)
        stochastic = np.sqrt(grain)
        stochastic *= f32(sp.stochastic)
    if made is not None and len(made):  # the quanta are seen whole, in part or not at all: no further sampling
        hat[made] = seen(rng, len(made), params.halo, float(media.sf_mip[media.reference_layer()]), None if grain is None else grain[made])
        if grain is None:
            stochastic = np.full(len(hat), sp.stochastic, dtype=f32)
        stochastic[made] = 0.0
    return [Spots(shower=idx, s=s, u=uu, v=vv, energy=energy, ehat=hat, stochastic=stochastic), *halo]


TINY_MEV = 1e-3  # the smallest quantum: Geant4's faintest cells hold a few keV and less


_QUANTILES = 1 << 15  # entries of the quantum spectrum's quantile table (128 kB of float32)


@functools.lru_cache(maxsize=16)
def _quantum_table(energy_mev: float, energy_sigma: float, tiny: float) -> np.ndarray:
    """(``_QUANTILES``,) float32 MeV: the quantum energy at the middle of each of as many equal
    slices of the uniform u that ``quantum_energies`` maps to an energy."""
    u = (np.arange(_QUANTILES) + 0.5) / _QUANTILES
    span = math.log(TINY_MEV / energy_mev)
    if tiny > 0 and span < 0:
        faint = u < tiny
        # u < tiny: log-uniform from TINY_MEV up to the median; above it the log-normal's quantile
        z = np.where(faint, span * (1.0 - u / tiny), energy_sigma * ndtri(np.clip((u - tiny) / (1.0 - tiny), 0.5 / _QUANTILES, None)))
    else:
        z = energy_sigma * ndtri(u)
    return (energy_mev * np.exp(z)).astype(np.float32)


def quantum_energies(rng: np.random.Generator, k: int, hp: Halo) -> np.ndarray:
    """(k,) float32 MeV: energies of k soft quanta (see ``params.Halo``).

    Log-normal of median ``energy_mev`` and log-width ``energy_sigma``; a share ``tiny`` of
    them instead log-uniform between ``TINY_MEV`` and the median: the ends of electron tracks
    that cross into a cell and absorbed low-energy photons, Geant4's faintest cells.

    One uniform per quantum picks an entry of a quantile table of that spectrum (1 in 2^15
    steps, 4.2 standard deviations at the ends): a quarter of the time of a normal, a second
    uniform and an exponential per quantum, for hundreds of quanta per shower.
    """
    table = _quantum_table(float(hp.energy_mev), float(hp.energy_sigma), float(hp.tiny))
    u = rng.random(k, dtype=np.float32)
    # u < 1 is a multiple of 2^-24, so u * 2^15 is exact and below 2^15: no clipping needed
    u *= np.float32(_QUANTILES)
    return table.take(u.astype(np.int32))  # take: faster than fancy indexing with an int32 key


def mean_quantum(hp: Halo) -> float:
    """Mean energy (MeV) of ``quantum_energies``."""
    lognormal = hp.energy_mev * math.exp(0.5 * hp.energy_sigma**2)
    if hp.tiny <= 0 or hp.energy_mev <= TINY_MEV:
        return lognormal
    uniform = (hp.energy_mev - TINY_MEV) / math.log(hp.energy_mev / TINY_MEV)
    return (1.0 - hp.tiny) * lognormal + hp.tiny * uniform


def quanta(rng: np.random.Generator, energy: np.ndarray, hp: Halo) -> np.ndarray:
    """Turn spots lighter than ``hp.merge`` mean quanta into whole quanta or nothing, in place;
    returns the indices of the spots that became quanta.

    Russian roulette: a spot of e MeV below m = ``merge`` <q> (<q> the mean quantum, see
    ``params.Halo``) survives with probability e / <q> and then deposits one quantum drawn
    from the quantum spectrum; on average it deposits e. Where a shower is thin its energy
    arrives one soft quantum at a time, so the number of hit cells there follows the energy
    (about one per MeV, as in Geant4), whatever the number of spots that carried it.
    """
    f32 = np.float32
    mean_q = mean_quantum(hp)
    light = np.flatnonzero(energy < f32(hp.merge * mean_q))
    if len(light) == 0:
        return light
    e = energy[light]
    keep = rng.random(len(light), dtype=f32) * f32(mean_q) < e
    made = light[keep]
    energy[light] = 0.0
    energy[made] = quantum_energies(rng, len(made), hp)  # only for the survivors: this runs for most spots
    return made


def grains(tau: np.ndarray, sp: Sampling) -> np.ndarray:
    """(K,) float32 1 + (tau / ``sp.grain_age``)^4: how much larger the active grains of
    deposits at age tau (K,) are than at the shower's start (see ``params.Sampling``)."""
    f32 = np.float32
    g = np.asarray(tau, dtype=f32) * f32(1.0 / sp.grain_age)
    g *= g  # a float32 power is not vectorised; two squares are
    g *= g
    g += f32(1.0)
    return g


def seen(rng: np.random.Generator, k: int, hp: Halo, sf: float, grain: np.ndarray | None = None) -> np.ndarray:
    """(k,) float32 active shares, relative to the MIP sampling fraction ``sf``, of k soft quanta.

    A soft photon converts at one point, in the absorber or in a gap, and its electron
    stays close by: a quantum is seen whole (probability ``hp.whole``), in part (a fraction
    U^2, U uniform: an electron from the absorber that reaches into a gap), or not at all,
    its mean share being ``hp.ehat`` sf. (Geant4: of the cells
    holding 0.3-1 MeV in the total convention, 71 % read zero in the active one and 7 %
    read it all.) ``grain`` (k,) >= 1 divides each quantum's chance to be seen in part and
    moves the share it takes to being seen whole, the mean unchanged (``grains``).
    """
    f32 = np.float32
    whole = min(hp.whole, hp.ehat * sf)
    part = min(3.0 * (hp.ehat * sf - whole), 1.0 - whole)  # partial fractions U^2 have mean 1/3
    # one uniform u per quantum: whole below ``whole``, then the part (u - whole) / part, itself
    # uniform in [0, 1), squared, then nothing
    u = rng.random(k, dtype=f32)
    if part <= 0:
        return np.where(u < f32(whole), f32(1.0 / sf), f32(0.0))
    if grain is None:
        w, inv_part = f32(whole), f32(1.0 / part)
    else:  # part / grain in part and whole + (part - part / grain) / 3 whole: the same mean
        inv_part = grain * f32(1.0 / part)
        w = np.reciprocal(grain)
        w -= f32(1.0)
        w *= f32(-part / 3.0)
        w += f32(whole)
    v = u - w
    v *= inv_part
    # U^2 below 1, 0 above, then 1 where whole: masks and copyto, not two nested np.where
    frac = v * v
    frac *= v < f32(1.0)
    np.copyto(frac, f32(1.0), where=u < w)
    frac *= f32(1.0 / sf)
    return frac


_MAX_HALO_SHARE = 0.5  # of a shower's deposit: keeps a tiny shower's few quanta from exceeding it


def halo_spots(
    rng: np.random.Generator,
    counts: np.ndarray,
    starts: np.ndarray,
    s: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    shower: np.ndarray,
    e_gev: np.ndarray,
    budget: np.ndarray,
    media: Media,
    hp: Halo,
    sp: Sampling,
    active: bool,
    ages: tuple[np.ndarray, np.ndarray, int] | None = None,
) -> tuple[list[Spots], np.ndarray]:
    """The soft-photon quanta of n showers (see ``params.Halo``) and the energy they take, (n,) MeV.

    Shower i's spots are ``starts[i]`` .. ``starts[i] + counts[i] - 1`` of (s, u, v) (K,) mm;
    ``shower`` (n,) indexes the tracks, ``budget`` (n,) MeV is what the shower deposits in front
    of the back face. ``ages`` (the age of each depth (D,), 1/<T> of each depth's shower
    (D,) in 1/X0, spots per depth) ages the quanta for ``Sampling.grain_age``: the age where
    the quantum lands. Returns ([], zeros) without a halo.
    """
    n = len(counts)
    if hp.per_gev <= 0:
        return [], np.zeros(n)
    f32 = np.float32
    scale = np.power(e_gev, hp.exponent)
    n_far = rng.poisson(hp.per_gev * scale)
    nh = n_far + rng.poisson(hp.near_per_gev * scale) if hp.near_per_gev > 0 else n_far
    kh = int(nh.sum())
    if kh == 0:
        return [], np.zeros(n)
    # quantum j of a shower leaves from its spot j (mod the spot count): a shower's spots are
    # drawn independently, so its first spots are as random a choice as any, and contiguous
    first = np.cumsum(nh) - nh
    at = np.arange(kh, dtype=np.int64)
    if np.all(nh <= counts):  # the usual case: no wrap-around, and no integer division per quantum
        origin = at + np.repeat(starts - first, nh)
    else:
        rank = at - np.repeat(first, nh)
        origin = np.repeat(starts, nh) + rank % np.repeat(counts, nh)
    x0 = media.x0[media.reference_layer()]
    flight = rng.standard_exponential(kh, dtype=f32)
    if hp.near_per_gev > 0:  # a shower's first n_far quanta fly far, the others near
        # each shower's runs (n_far far, then the near ones) as one repeat of the pairs
        # (far, near): no per-quantum mask
        runs = np.stack((n_far, nh - n_far), axis=1).reshape(-1)
        flight *= np.repeat(np.tile(np.array([hp.flight_x0 * x0, hp.near_flight_x0 * x0], dtype=f32), n), runs)
        flight += np.repeat(np.tile(np.array([hp.min_flight_x0 * x0, 0.0], dtype=f32), n), runs)
    else:
        flight *= f32(hp.flight_x0 * x0)
        flight += f32(hp.min_flight_x0 * x0)
    w = rng.random((2, kh), dtype=f32)
    b = hp.forward
    if b == 0.0:
        cos = w[0] * f32(2.0)
        cos -= f32(1.0)  # isotropic: cos(angle to the axis) uniform in [-1, 1]
    else:  # density (1 + b c)/2 on [-1, 1]: its cumulative inverted
        cos = np.sqrt(f32(1.0 - 2.0 * b + b * b) + f32(4.0 * b) * w[0])
        cos -= f32(1.0)
        cos *= f32(1.0 / b)
        np.clip(cos, f32(-1.0), f32(1.0), out=cos)  # float32 rounding at the ends
    across = np.sqrt(f32(1.0) - cos * cos) * flight
    w[1] *= f32(2.0 * math.pi)
    s_h = s.take(origin) + cos * flight
    u_h = u.take(origin) + across * np.cos(w[1])
    v_h = v.take(origin) + across * np.sin(w[1])
    energy = quantum_energies(rng, kh, hp)
    # (n,) the quanta of each shower are contiguous; reduceat, not a float64 cumsum (20x the time)
    e_halo = np.zeros(n)
    some = nh > 0
    e_halo[some] = np.add.reduceat(energy, first[some], dtype=np.float64)
    # a shower never gives more than half its deposit to quanta
    cap = np.minimum(1.0, np.divide(_MAX_HALO_SHARE * budget, e_halo, out=np.ones(n), where=e_halo > 0))
    if (cap < 1).any():
        energy *= np.repeat(cap.astype(f32), nh)
        e_halo = e_halo * cap
    if not active:
        return [Spots(np.repeat(shower, nh), s_h, u_h, v_h, energy, 1.0, sp.stochastic)], e_halo
    grain = None
    if ages is not None:
        tau, inv_t, m = ages
        depth = origin // m
        # the age where the quantum lands: its flight along the axis, in X0 of the reference medium
        age = cos * flight
        age *= f32(1.0 / x0)
        age *= inv_t[depth]
        age += tau[depth]
        np.maximum(age, f32(0.0), out=age)
        grain = grains(age, sp)
    hat = seen(rng, kh, hp, float(media.sf_mip[media.reference_layer()]), grain)
    return [Spots(np.repeat(shower, nh), s_h, u_h, v_h, energy, hat, 0.0)], e_halo
