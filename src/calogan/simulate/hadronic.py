"""Charged pions: an APPROXIMATE hadronic shower model, a baseline rather than hadron physics.

A pion flies as a minimum-ionising particle (Landau-fluctuating losses) to its first
inelastic interaction, exponential in depth with mean ``lambda_scale`` interaction lengths;
many pions cross the whole CaloGAN stack (~1.3 lambda_I) without one (punch-through). At the
interaction the remaining energy splits into an electromagnetic part, a shower-by-shower
fluctuating fraction f_em (pi0 -> gamma gamma) that develops like a GFlash shower, and a
hadronic part that is longer and wider (Gamma profile and core + tail radial profile in
interaction lengths) and of which only a fluctuating fraction is visible (binding energy,
neutrinos and slow neutrons are invisible). Energy behind the back face or beside the cells
leaks out. Nothing here tracks nuclear fragments, neutrons or the jets of secondary hadrons
of a real shower: distributions are matched on average, not shower by shower.
"""

from __future__ import annotations

import math

import numpy as np

from calogan.simulate.deposit import Spots, Tracks, track_spots
from calogan.simulate.em import em_spots, n_spots
from calogan.simulate.materials import Media
from calogan.simulate.params import EMParams, HadronicParams

__all__ = ["em_fraction_mean", "hadron_spots", "mip_losses"]

_MOYAL_MEAN = 0.5772156649 + math.log(2.0)  # Euler's gamma + ln 2
_MOYAL_STD = math.pi / math.sqrt(2.0)


def em_fraction_mean(e_gev: np.ndarray, hp: HadronicParams) -> np.ndarray:
    """Mean electromagnetic fraction 1 - (E/E0)^(k-1) of a hadron shower of E GeV; (n,)."""
    return np.clip(1.0 - np.power(np.maximum(e_gev, 1e-6) / hp.em_e0, hp.em_k - 1.0), 0.0, 0.95)


def mip_losses(rng: np.random.Generator, lengths: np.ndarray, media: Media, hp: HadronicParams) -> np.ndarray:
    """(n, L) MeV lost by minimum-ionising tracks crossing ``lengths`` (n, L) mm of each layer.

    Each layer's loss is its mean times a Moyal (Landau-like) factor of relative width
    ``mip_landau``, never below zero.
    """
    z = rng.standard_normal(lengths.shape)
    moyal = -np.log(np.maximum(z * z, 1e-300))
    factor = np.maximum(1.0 + hp.mip_landau * (moyal - _MOYAL_MEAN) / _MOYAL_STD, 0.0)
    return lengths * (hp.mip_scale * media.mip_per_mm) * factor


def _beta(rng: np.random.Generator, mean: np.ndarray, sigma: float) -> np.ndarray:
    """Beta variates of the given means (n,) and common spread, the spread capped to fit."""
    mean = np.clip(mean, 1e-3, 1 - 1e-3)
    var = np.minimum(sigma**2, 0.9 * mean * (1 - mean))
    nu = mean * (1 - mean) / var - 1.0
    return rng.beta(mean * nu, (1 - mean) * nu)


def hadron_spots(
    rng: np.random.Generator, e_gev: np.ndarray, tracks: Tracks, media: Media, hp: HadronicParams, em: EMParams, active: bool = True
) -> list[Spots]:
    """Spots of n charged pions of energies ``e_gev`` (n,) GeV along ``tracks``: the MIP track, the
    EM part and the hadronic part; ``active=False`` skips the active shares of the EM part."""
    e_gev = np.asarray(e_gev, dtype=np.float64)
    n = len(e_gev)
    showers = np.arange(n)
    cos_t = tracks.cos_theta
    # first inelastic interaction, measured along the track in interaction lengths
    t_int = hp.lambda_scale * rng.standard_exponential(n)
    s_int = tracks.path_from_depth(t_int, showers, media.lambda_boundaries, media.boundaries)
    s_back = media.boundaries[-1] / cos_t
    # MIP track up to the interaction (or through the stack): path length in every layer
    lo, lengths = tracks.crossed(np.minimum(s_int, s_back), media)  # (n, L) mm
    losses = mip_losses(rng, lengths, media, hp)
    # a slow pion stops when its energy is spent
    cum = np.minimum(np.cumsum(losses, axis=1), 1000.0 * e_gev[:, None])
    losses = np.diff(cum, axis=1, prepend=0.0)
    parts = [track_spots(rng, lo, lengths, losses, hp.mip_ehat, em.sampling.stochastic)]

    hit = np.flatnonzero(s_int < s_back)
    if len(hit):
        e_left = np.maximum(e_gev[hit] - 1e-3 * losses[hit].sum(axis=1), 0.0)  # GeV
        f_em = _beta(rng, em_fraction_mean(e_left, hp), hp.em_sigma)
        e_em = f_em * e_left
        # the EM part: pi0 photons start showers at the interaction point, and (a share
        # em_late) at a later generation's, a depth drawn from the hadronic profile
        e_had = (1.0 - f_em) * e_left
        start_x0 = tracks.depth_from_path(s_int[hit], hit, media.x0_boundaries, media.boundaries)
        e_parts, starts, owners = [e_em], [start_x0], [hit]
        if hp.em_late > 0:
            later = t_int[hit] + _hadronic_depths(rng, e_had, np.ones(len(hit), np.int64), hp)
            s_late = tracks.path_from_depth(later, hit, media.lambda_boundaries, media.boundaries)
            e_parts = [(1.0 - hp.em_late) * e_em, hp.em_late * e_em]
            starts.append(tracks.depth_from_path(s_late, hit, media.x0_boundaries, media.boundaries))
            owners.append(hit)
        e_em, start_x0, owner = (np.concatenate(v) for v in (e_parts, starts, owners))
        live = e_em > 1e-3
        if live.any():
            h = owner[live]
            parts += em_spots(rng, hp.em_energy_scale * e_em[live], 1000.0 * e_em[live], start_x0[live], h, tracks, media, em, active)
        # the hadronic part: longer, wider, partly invisible
        mean_visible = hp.visible * np.power(np.maximum(e_left, 1e-3) / 10.0, hp.visible_slope)
        visible = np.clip(mean_visible + hp.visible_sigma * rng.standard_normal(len(hit)), 0.0, 1.0)
        parts.append(_hadronic_spots(rng, e_had, 1000.0 * e_had * visible, t_int[hit], hit, tracks, media, hp, em))
    return parts


def _hadronic_depths(rng: np.random.Generator, e_gev: np.ndarray, counts: np.ndarray, hp: HadronicParams) -> np.ndarray:
    """(sum counts,) depths in lambda_I after the first interaction, ``counts`` (n,) of them for
    each hadronic part of ``e_gev`` (n,) GeV: its Gamma profile, whose maximum moves deeper with ln E."""
    t_max = np.maximum(hp.t_max + hp.t_max_slope * np.log(np.maximum(e_gev, 1e-3) / 10.0), 0.05)
    return rng.standard_gamma(hp.alpha, int(counts.sum())) * np.repeat(t_max / (hp.alpha - 1.0), counts)


def _hadronic_spots(
    rng: np.random.Generator,
    e_gev: np.ndarray,
    e_dep: np.ndarray,
    t_start: np.ndarray,
    shower: np.ndarray,
    tracks: Tracks,
    media: Media,
    hp: HadronicParams,
    em: EMParams,
) -> Spots:
    counts = n_spots(np.maximum(e_gev, 1e-3), em.deposit) * em.deposit.lateral  # as many spots as an EM shower
    idx = np.repeat(np.arange(len(e_gev)), counts)
    depth = _hadronic_depths(rng, e_gev, counts, hp)
    s = tracks.path_from_depth(t_start[idx] + depth, shower[idx], media.lambda_boundaries, media.boundaries)
    lam = media.interaction_length
    if np.all(lam == lam[0]):
        scale = lam[0]
    else:
        z_axis = s * tracks.cos_theta[shower[idx]]
        scale = lam[np.clip(np.searchsorted(media.boundaries, z_axis, side="right") - 1, 0, media.n_layers - 1)]
    u = rng.random((3, len(idx)))
    radius = np.where(u[0] < hp.p_core, hp.r_core, hp.r_tail)
    if hp.r_slope != 0.0:
        radius = radius * np.power(np.maximum(e_gev, 1e-3) / 10.0, hp.r_slope)[idx]
    r = scale * radius * np.sqrt(u[1] / (1.0 - u[1]))
    psi = (2.0 * math.pi) * u[2]
    weights = rng.standard_exponential(len(idx))
    energy = weights * (e_dep / np.maximum(np.bincount(idx, weights=weights, minlength=len(e_gev)), 1e-300))[idx]
    return Spots(shower[idx], s, r * np.cos(psi), r * np.sin(psi), energy, hp.ehat, hp.stochastic)
