"""The fast-simulation interface ``ShowerSimulator``: (particle, energy, position, direction) -> cells.

This module also reads the interface's inputs: particles and energies, and the impact point
and direction of each track as the conditions x0, y0, theta, phi.
"""

from __future__ import annotations

import numpy as np

from calogan.data import particle_code, particle_name
from calogan.errors import ConfigError
from calogan.geometry import Geometry

__all__ = [
    "AXIS_TOLERANCE_RAD",
    "CENTRE_TOLERANCE_MM",
    "DEFAULT_TRACK",
    "ShowerSimulator",
    "describe_shower",
    "particle_codes",
    "particles_and_energies",
    "track_conditions",
]

# A model that is not conditioned on the impact point or the direction knows only the beam
# it was trained on: the centre of the front face (x0 = y0 = 0), along z (theta = 0).
CENTRE_TOLERANCE_MM = 1e-3
AXIS_TOLERANCE_RAD = 1e-6
DEFAULT_TRACK = {"x0": 0.0, "y0": 0.0, "theta": 0.0, "phi": 0.0}
_UNIT_TOLERANCE = 1e-4  # |direction| may differ from 1 by this (float32 unit vectors)


def particles_and_energies(particle, energy) -> tuple[np.ndarray, np.ndarray]:
    """(B,) int32 PDG codes and (B,) float64 GeV from the user's particle and energy."""
    e = np.asarray(energy, dtype=np.float64) if not isinstance(energy, np.ndarray) else energy.astype(np.float64)
    if e.ndim != 1 or e.shape[0] == 0:
        raise ConfigError(f"energy must be a 1-D array of B >= 1 incident energies in GeV, got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        bad = e[~(np.isfinite(e) & (e > 0))][0]
        raise ConfigError(f"energies must be finite and > 0 GeV, got {bad}")
    b = e.shape[0]
    if isinstance(particle, (str, int, np.integer)):
        names = [particle]
    else:
        names = list(np.asarray(particle, dtype=object).reshape(-1)) if np.ndim(particle) == 1 else None
        if names is None or len(names) != b:
            raise ConfigError(f"particle must be one name or PDG code, or B = {b} of them (one per energy), got shape {np.shape(particle)}")
    codes = {}
    for p in set(names):
        try:
            codes[p] = particle_code(p)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    pdg = np.array([codes[p] for p in names], dtype=np.int32)
    return np.broadcast_to(pdg, (b,)).copy(), e


def track_conditions(n: int, position=None, direction=None) -> dict[str, np.ndarray]:
    """Impact point and direction of n particles as the conditions x0, y0 (mm), theta, phi (rad).

    Axes are the geometry's: x along the layers' rows, y along their columns, z the depth,
    origin at the centre of the front face (z = 0).

    - ``position``: None (the centre of the front face), (n, 2) (x, y) mm on the front face,
      or (n, 3) (x, y, z) mm with z <= 0, a point of the straight track before the
      calorimeter, carried along ``direction`` to the front face.
    - ``direction``: None (along +z), (n, 2) (theta, phi) rad with theta in [0, pi/2) from
      the z axis and phi from x towards y, or (n, 3) unit vectors (dx, dy, dz), dz > 0.

    Returns (n,) float64 arrays keyed x0, y0, theta, phi (phi in [0, 2 pi)).

    >>> c = track_conditions(1, [[0.0, 0.0, -10.0]], [[0.6, 0.0, 0.8]])
    >>> round(float(c["x0"][0]), 6), round(float(c["theta"][0]), 6)
    (7.5, 0.643501)
    """

    def matrix(value, name):
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a (B, 2) or (B, 3) array of numbers with B = {n}, got ragged or non-numeric rows") from None
        if a.ndim != 2 or a.shape[0] != n or a.shape[1] not in (2, 3):
            raise ConfigError(f"{name} must have shape (B, 2) or (B, 3) with B = {n} (one row per energy), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ConfigError(f"{name} must be finite")
        return a

    if direction is None:
        theta, phi = np.zeros(n), np.zeros(n)
        d = np.tile([0.0, 0.0, 1.0], (n, 1))
    else:
        a = matrix(direction, "direction")
        if a.shape[1] == 3:
            norm = np.linalg.norm(a, axis=1)
            bad = np.abs(norm - 1.0) > _UNIT_TOLERANCE
            if bad.any():
                raise ConfigError(f"direction rows must be unit vectors; row {int(np.argmax(bad))} has length {norm[bad][0]:.6g}")
            d = a / norm[:, None]
            if np.any(d[:, 2] <= 0):
                raise ConfigError(f"direction must point into the calorimeter (dz > 0); row {int(np.argmax(d[:, 2] <= 0))} does not")
            theta = np.arccos(np.clip(d[:, 2], -1.0, 1.0))
            phi = np.mod(np.arctan2(d[:, 1], d[:, 0]), 2 * np.pi)
        else:
            theta, phi = a[:, 0], np.mod(a[:, 1], 2 * np.pi)
            if np.any((theta < 0) | (theta >= np.pi / 2)):
                raise ConfigError(
                    f"direction theta must be in [0, pi/2) rad (into the calorimeter), got {theta[(theta < 0) | (theta >= np.pi / 2)][0]:.6g}"
                )
            d = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    if position is None:
        x0, y0 = np.zeros(n), np.zeros(n)
    else:
        p = matrix(position, "position")
        x0, y0 = p[:, 0].copy(), p[:, 1].copy()
        if p.shape[1] == 3:
            z = p[:, 2]
            if np.any(z > CENTRE_TOLERANCE_MM):
                raise ConfigError(
                    f"position z must be <= 0 (at or before the front face z = 0), got {z[z > CENTRE_TOLERANCE_MM][0]:.6g} mm"
                )
            x0 -= z * d[:, 0] / d[:, 2]
            y0 -= z * d[:, 1] / d[:, 2]
    return {"x0": x0, "y0": y0, "theta": np.asarray(theta, np.float64), "phi": np.asarray(phi, np.float64)}


def describe_shower(pdg: int, e: float, tracks: dict[str, np.ndarray], i: int) -> str:
    """'e+ at 150 GeV' plus the track when it is not the default beam."""
    text = f"{particle_name(int(pdg))} at {e:g} GeV"
    if any(abs(tracks[k][i]) > 0 for k in ("x0", "y0", "theta")):
        text += (
            f" entering at ({tracks['x0'][i]:g}, {tracks['y0'][i]:g}) mm, theta {tracks['theta'][i]:.4g}, phi {tracks['phi'][i]:.4g} rad"
        )
    return text


def particle_codes(particles, where: str) -> list[int]:
    if isinstance(particles, (str, int)):
        particles = [particles]
    codes = []
    for p in particles:
        try:
            codes.append(particle_code(p))
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    if not codes:
        raise ConfigError(f"{where}: name at least one particle")
    return codes


class ShowerSimulator:
    """The fast-simulation interface: ``simulate(particle, energy, position, direction) -> cells``.

    - ``particle``: a name (``"e+"``) or PDG code for all showers, or B of them;
    - ``energy``: (B,) incident energies in GeV;
    - ``position``, ``direction``: see ``track_conditions`` (default: centre, along z);
    - ``seed``: the showers of a call are a function of its inputs and ``seed``; without one,
      each call takes the next seed of the simulator's own sequence (``seed`` at construction),
      so successive calls differ and a sequence of calls is reproducible.

    Returns (B, n_cells) float32 cell energies in MeV, flat in ``geometry`` order, in the
    order of the inputs. ``convention`` says what the cells hold (``"total"``: all energy
    deposited in the cell's volume; ``"active"``: the active medium's share), or None when
    unknown. Bad particles, energies outside every range and bad shapes raise ``ConfigError``.
    """

    geometry: Geometry
    convention: str | None = None
    name: str = "simulator"

    def __init__(self, seed: int = 0) -> None:
        self._seeds = np.random.default_rng(seed)

    def simulate(self, particle, energy, position=None, direction=None, *, seed: int | None = None) -> np.ndarray:
        pdg, e = particles_and_energies(particle, energy)
        tracks = track_conditions(len(e), position, direction)
        if seed is None:
            seed = int(self._seeds.integers(2**63))
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2^63), got {seed!r}")
        return self._run(pdg, e, tracks, int(seed))

    def covers(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) bool: which showers this backend can simulate (particle, energy and track)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line: the backend and what it covers."""
        return self.name

    def _run(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray], seed: int) -> np.ndarray:
        """Checked showers: raise ``ConfigError`` for any shower outside ``covers``."""
        ok = self.covers(pdg, e, tracks)
        if not ok.all():
            i = int(np.argmin(ok))
            raise ConfigError(f"{self.describe()} cannot simulate {describe_shower(pdg[i], e[i], tracks, i)}")
        return self._produce(pdg, e, tracks, seed)

    def _produce(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray], seed: int) -> np.ndarray:
        raise NotImplementedError
