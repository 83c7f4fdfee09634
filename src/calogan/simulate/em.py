"""Electromagnetic showers after GFlash: fluctuating Gamma profiles and core + tail spots.

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
of a shower is normalised to a constant; spot energies carry exponential weights.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammainc

from calogan.simulate.deposit import Spots, Tracks, layer_of, track_spots
from calogan.simulate.materials import Media
from calogan.simulate.params import Deposit, EMParams, Longitudinal, Radial, Sampling

__all__ = [
    "deposited_energy",
    "ehat_shape",
    "em_spots",
    "n_spots",
    "primary_track",
    "profile_moments",
    "profiles",
    "radial_profile",
    "reference_medium",
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
    p = p1 exp((p2 - tau)/p3 - exp((p2 - tau)/p3)), scaled by the fitted factors.
    """
    core0, k4, inv_p3 = _radial_coefficients(ln_e, z, rp)
    return _radial_at(np.asarray(tau, dtype=np.float32), core0, k4, inv_p3, z, rp)


def _radial_at(tau, core0, k4, inv_p3, z: float, rp: Radial):
    # float32 and in place where the arrays are per spot: this runs once per spot
    f32 = np.float32
    r_core = tau * f32(rp.core_scale * (0.1162 - 0.000381 * z))
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
    np.minimum(p_core, f32(1.0), out=p_core)
    return r_core, r_tail, p_core


def ehat_shape(tau: np.ndarray, sp: Sampling) -> np.ndarray:
    """Relative active share 1 + boost exp(-tau/tau_e) of a deposit at age tau = t/T; (K,)."""
    return 1.0 + sp.ehat_boost * np.exp(-np.asarray(tau) / sp.ehat_tau)


def n_spots(e_gev: np.ndarray, dp: Deposit) -> np.ndarray:
    """(n,) number of spots of showers of energy e_gev (n,)."""
    n = np.round(dp.spots_per_gev * np.power(np.asarray(e_gev, dtype=np.float64), dp.spots_exponent))
    return np.clip(n, dp.min_spots, dp.max_spots).astype(np.int64)


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
) -> Spots:
    """Spots of n electromagnetic showers.

    ``e_gev`` (n,) sets the profile (GeV), ``e_dep`` (n,) the energy the spots share (MeV),
    ``t_start`` (n,) where each shower starts along its track (radiation lengths) and
    ``shower`` (n,) its index in ``tracks``; ``active=False`` skips the active shares.
    Per-spot arrays are float32 and per-shower values reach them by ``np.repeat`` (the spots
    of a shower are contiguous): this is the simulator's hot path.
    """
    f32 = np.float32
    e_gev = np.asarray(e_gev, dtype=np.float64)
    t_start = np.asarray(t_start, dtype=np.float64)
    n = len(e_gev)
    lp = params.longitudinal
    t_max, alpha = profiles(e_gev, rng.standard_normal((2, n)), media, lp)
    counts = n_spots(e_gev, params.deposit)
    idx = np.repeat(shower, counts)  # (K,) shower of each spot, an index into tracks
    k = len(idx)

    def each(per_shower) -> np.ndarray:  # (n,) -> (K,) float32, the value of each spot's shower
        return np.repeat(np.asarray(per_shower, dtype=f32), counts)

    # depth after the start: a Gamma(alpha) variate over beta = (alpha - 1) / T
    gam = rng.standard_gamma(each(alpha), dtype=f32)  # (K,) in units of 1/beta
    depth = gam * each(t_max / (alpha - 1.0))
    t = depth + each(t_start) if np.any(t_start) else depth
    # The age that shapes the radial profile is measured against the mean depth of the
    # maximum at the shower's energy, not the shower's own T: Geant4 shows a lateral
    # containment that barely fluctuates (the 4 central layer-1 cells hold 0.888 +- 0.009
    # of a 50 GeV e+ layer), 4x less than ages of individual showers give.
    # (capped where the profile is long over: the GFlash tail radius grows exponentially)
    tau = depth * each(np.exp(-profile_moments(e_gev, media, lp)[0]))
    np.minimum(tau, f32(30.0), out=tau)
    s = tracks.path_from_depth(t, idx, media.x0_boundaries, media.boundaries)
    # the Moliere radius of the layer the shower axis is in at that depth
    moliere = media.moliere_radius
    if np.ptp(moliere) < 1e-3 * moliere[0]:
        rm = f32(moliere.mean())
    else:
        z_axis = s * tracks.cos_theta[idx] if tracks.tilted else s
        rm = moliere.astype(f32)[layer_of(z_axis, media.boundaries)]
    z, _, _ = reference_medium(media)
    rp = params.radial
    core0, k4, inv_p3 = _radial_coefficients(np.log(e_gev), z, rp)
    r_core, r_tail, p_core = _radial_at(tau, each(core0), each(k4), each(inv_p3), z, rp)
    u = rng.random((3, k), dtype=f32)
    core = u[0] < p_core
    radius = np.where(core, r_core, r_tail)
    # inverse of the cumulative F(r) = r^2/(r^2 + R^2) of 2 r R^2/(r^2 + R^2)^2, drawn below
    # F(r_max): the r^-3 tail would otherwise put a few spots metres out, a leakage whose
    # spot-by-spot noise alone exceeds the 0.16 % resolution of the Geant4 total response
    r_max2 = f32(rp.r_max**2)
    q = radius * radius
    q += r_max2
    np.divide(r_max2, q, out=q)
    q *= u[1]  # uniform in [0, F(r_max))
    r = f32(1.0) - q
    np.divide(q, r, out=r)
    np.sqrt(r, out=r)
    r *= radius
    r *= rm
    psi = u[2]
    psi *= f32(2.0 * math.pi)
    # Spot energies: exponential weights, so that cell energies are continuous. The energy
    # behind the back face is the profile's own tail, 1 - P(alpha, beta (t_back - t_start)),
    # which leaves the calorimeter; the spots in front share the rest. Leakage then
    # fluctuates with the profile, as in a real shower, and not with the count of the few
    # spots that happen to land behind the calorimeter (those carry no energy).
    t_back = media.x0_boundaries[-1] / tracks.cos_theta[shower] - t_start  # (n,) back face, after the start
    contained = gammainc(alpha, (alpha - 1.0) / t_max * np.maximum(t_back, 0.0))  # (n,)
    weights = rng.standard_exponential(k, dtype=f32)
    weights *= depth < each(t_back)
    starts = np.cumsum(counts) - counts  # every shower has at least min_spots >= 1
    w = np.add.reduceat(weights, starts, dtype=np.float64)
    share = np.divide(e_dep * contained, w, out=np.zeros(n), where=w > 0)
    energy = weights * each(share)
    uu = np.cos(psi)
    uu *= r
    vv = np.sin(psi, out=psi)
    vv *= r
    sp = params.sampling
    if not active:  # the total convention needs no active share
        return Spots(idx, s, uu, vv, energy, 1.0, sp.stochastic)
    # e/mip of each spot, scaled so that every shower's mean is ehat exactly: the few
    # hundred spots' random depths and core/tail draws, or a deep or shallow profile, must
    # not spread the active share, which in Geant4 is constant and uncorrelated with the
    # profile (the active/total ratio of the same showers spreads by 7 %/sqrt(E) only)
    hat = gam * each(-1.0 / ((alpha - 1.0) * sp.ehat_tau))  # -t / (T tau_e)
    np.exp(hat, out=hat)
    hat *= f32(sp.ehat_boost)
    hat += f32(1.0)  # ehat_shape(t / T)
    if sp.ehat_tail != 1.0:
        hat = np.where(core, hat, hat * f32(sp.ehat_tail))
    drawn = np.add.reduceat(energy * hat, starts, dtype=np.float64)
    norm = np.divide(sp.ehat * np.add.reduceat(energy, starts, dtype=np.float64), drawn, out=np.zeros(n), where=drawn > 0)
    hat *= each(norm)
    return Spots(shower=idx, s=s, u=uu, v=vv, energy=energy, ehat=hat, stochastic=sp.stochastic)
