"""The built-in parametrized simulator behind the fast-simulation interface."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calogan.data import CONDITION_KEYS, particle_code, particle_name
from calogan.errors import ConfigError
from calogan.fastsim.interface import ShowerSimulator, particle_codes
from calogan.fastsim.noise import derive_seed
from calogan.geometry import load_geometry
from calogan.simulate import MODES, SUPPORTED_PARTICLES, simulate

__all__ = ["ParametrizedBackend"]


class ParametrizedBackend(ShowerSimulator):
    """The built-in parametrized simulator (``calogan.simulate``) behind the interface.

    ``mode`` is the convention of its cells (``total`` or ``active``), ``energy`` (lo, hi)
    GeV the range it is trusted in, ``particles`` those it may simulate (default: all the
    simulator models). Any impact point and direction entering the front face are covered.
    """

    name = "parametrized"

    def __init__(self, geometry, *, mode: str, energy: tuple[float, float], particles: Sequence | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.geometry = load_geometry(geometry)
        if mode not in MODES:
            raise ConfigError(f"the parametrized simulator's mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.convention = mode
        lo, hi = (float(v) for v in energy)
        if not 0 < lo < hi:
            raise ConfigError(f"energy range must be [lo, hi] GeV with 0 < lo < hi, got [{lo:g}, {hi:g}]")
        self.energy = (lo, hi)
        supported = {particle_code(p) for p in SUPPORTED_PARTICLES}
        codes = tuple(sorted(supported)) if particles is None else tuple(particle_codes(particles, "particles"))
        unknown = [particle_name(c) for c in codes if c not in supported]
        if unknown:
            raise ConfigError(f"the parametrized simulator does not model {', '.join(unknown)}; it models {', '.join(SUPPORTED_PARTICLES)}")
        self.particles = codes

    def covers(self, pdg, e, tracks) -> np.ndarray:
        lo, hi = self.energy
        return np.isin(pdg, self.particles) & (e >= lo) & (e <= hi)

    def describe(self) -> str:
        lo, hi = self.energy
        return f"parametrized simulator ({self.convention}: {', '.join(particle_name(p) for p in self.particles)}, {lo:g}-{hi:g} GeV)"

    def _produce(self, pdg, e, tracks, seed) -> np.ndarray:
        out = np.empty((len(e), self.geometry.n_cells), np.float32)
        for code in np.unique(pdg):
            idx = np.flatnonzero(pdg == code)
            data = simulate(
                self.geometry,
                particle_name(int(code)),
                e[idx],
                seed=derive_seed(seed, int(code)),
                mode=self.convention,
                **{k: tracks[k][idx] for k in CONDITION_KEYS},
            )
            out[idx] = data.cells
        return out
