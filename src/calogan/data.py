"""ShowerData: cells and conditions of N showers in one geometry, splits and selections; Conditions: the same without cells."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from calogan.geometry import Geometry

__all__ = ["CONDITION_KEYS", "PARTICLES", "Conditions", "ShowerData", "particle_code", "particle_name"]

# Optional per-shower conditions beside the incident energy: impact point (mm) on the
# front face and direction (rad), the conditioning vector xi of the conditional CaloGAN.
CONDITION_KEYS = ("x0", "y0", "theta", "phi")

# PDG codes of the particles calogan knows by name.
PARTICLES = {"e-": 11, "e+": -11, "gamma": 22, "pi+": 211, "pi-": -211, "pi0": 111, "mu-": 13, "mu+": -13}
_ALIASES = {"eplus": "e+", "positron": "e+", "electron": "e-", "photon": "gamma", "piplus": "pi+", "pion": "pi+"}


def particle_code(name: str | int) -> int:
    """PDG code of a particle name (``e+``, ``gamma``, ``pi+``, ...) or of a code."""
    if isinstance(name, (int, np.integer)):
        return int(name)
    key = _ALIASES.get(str(name).strip(), str(name).strip())
    if key in PARTICLES:
        return PARTICLES[key]
    try:
        return int(key)
    except ValueError:
        raise ValueError(f"unknown particle {name!r}; known: {', '.join(PARTICLES)}") from None


def particle_name(code: int) -> str:
    """Name of a PDG code, or the code as text when calogan has no name for it."""
    for name, c in PARTICLES.items():
        if c == code:
            return name
    return str(code)


@dataclass(frozen=True)
class ShowerData:
    """N showers: cell energies (MeV) and the conditions they were made with.

    - ``cells``: (N, n_cells) float32, MeV, flat in ``geometry`` order.
    - ``e_inc``: (N,) float64 incident energy in GeV.
    - ``pdg``: (N,) int32 PDG code of the incident particle (0 when unknown).
    - ``conditions``: optional (N,) arrays keyed by ``CONDITION_KEYS`` (x0, y0 in mm at the
      front face; theta, phi in rad).
    - ``overflow``: (N, n_layers) MeV deposited outside the cells, or ``None``.

    >>> from calogan.geometry import preset
    >>> d = ShowerData(preset("calogan"), np.zeros((2, 504), np.float32), np.array([10.0, 20.0]))
    >>> len(d), d.layers()[1].shape
    (2, (2, 12, 12))
    """

    geometry: Geometry
    cells: np.ndarray
    e_inc: np.ndarray
    pdg: np.ndarray | None = None
    conditions: dict[str, np.ndarray] = field(default_factory=dict)
    overflow: np.ndarray | None = None

    def __post_init__(self) -> None:
        cells = np.asarray(self.cells, dtype=np.float32)
        e_inc = np.asarray(self.e_inc, dtype=np.float64).reshape(-1)
        n = cells.shape[0]
        if cells.ndim != 2 or cells.shape[1] != self.geometry.n_cells:
            raise ValueError(f"cells must have shape (N, {self.geometry.n_cells}) for geometry {self.geometry.name!r}, got {cells.shape}")
        if e_inc.shape != (n,):
            raise ValueError(f"e_inc must have {n} entries, got {e_inc.shape[0]}")
        pdg = np.zeros(n, np.int32) if self.pdg is None else np.asarray(self.pdg, dtype=np.int32).reshape(-1)
        if pdg.shape != (n,):
            raise ValueError(f"pdg must have {n} entries, got {pdg.shape[0]}")
        conds = {}
        for key, value in self.conditions.items():
            if key not in CONDITION_KEYS:
                raise ValueError(f"unknown condition {key!r}; known: {', '.join(CONDITION_KEYS)}")
            value = np.asarray(value, dtype=np.float64).reshape(-1)
            if value.shape != (n,):
                raise ValueError(f"condition {key!r} must have {n} entries, got {value.shape[0]}")
            conds[key] = value
        overflow = self.overflow
        if overflow is not None:
            overflow = np.asarray(overflow, dtype=np.float32).reshape(n, -1)
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "e_inc", e_inc)
        object.__setattr__(self, "pdg", pdg)
        object.__setattr__(self, "conditions", {k: conds[k] for k in CONDITION_KEYS if k in conds})
        object.__setattr__(self, "overflow", overflow)

    def __len__(self) -> int:
        return self.cells.shape[0]

    def layers(self) -> list[np.ndarray]:
        """Per-layer views, each (N, rows, cols)."""
        return self.geometry.split(self.cells)

    @property
    def particles(self) -> list[str]:
        """Names of the particle types present."""
        return [particle_name(int(c)) for c in np.unique(self.pdg)]

    def condition_matrix(self, keys: tuple[str, ...] = ("e_inc",) + CONDITION_KEYS) -> np.ndarray:
        """(N, k) float64 of the requested conditions that are present, in order."""
        return _condition_matrix(self.e_inc, self.conditions, keys)

    def select(self, index) -> ShowerData:
        """A subset by boolean mask, integer indices or slice."""
        return replace(
            self,
            cells=self.cells[index],
            e_inc=self.e_inc[index],
            pdg=self.pdg[index],
            conditions={k: v[index] for k, v in self.conditions.items()},
            overflow=None if self.overflow is None else self.overflow[index],
        )

    def split(self, fractions: tuple[float, ...], seed: int = 0) -> tuple[ShowerData, ...]:
        """Random disjoint parts with the given fractions of N (the last takes the rest)."""
        if any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
            raise ValueError(f"split fractions must be positive and sum to at most 1, got {fractions}")
        order = np.random.default_rng(seed).permutation(len(self))
        bounds = np.round(np.cumsum((0.0,) + tuple(fractions)) * len(self)).astype(int)
        bounds[-1] = min(bounds[-1], len(self))
        return tuple(self.select(np.sort(order[a:b])) for a, b in zip(bounds[:-1], bounds[1:]))

    def batches(self, size: int) -> Iterator[ShowerData]:
        """Consecutive chunks of at most ``size`` showers."""
        for start in range(0, len(self), size):
            yield self.select(slice(start, start + size))

    @staticmethod
    def concatenate(parts: list[ShowerData]) -> ShowerData:
        """Join showers of one geometry; conditions must be present in every part or none."""
        if not parts:
            raise ValueError("nothing to concatenate")
        geometry = parts[0].geometry
        if any(p.geometry != geometry for p in parts):
            raise ValueError("cannot concatenate showers of different geometries")
        keys = set(parts[0].conditions)
        if any(set(p.conditions) != keys for p in parts):
            raise ValueError("cannot concatenate showers with different conditions")
        has_overflow = all(p.overflow is not None for p in parts)
        return ShowerData(
            geometry,
            np.concatenate([p.cells for p in parts]),
            np.concatenate([p.e_inc for p in parts]),
            np.concatenate([p.pdg for p in parts]),
            {k: np.concatenate([p.conditions[k] for p in parts]) for k in keys},
            np.concatenate([p.overflow for p in parts]) if has_overflow else None,
        )


@dataclass(frozen=True)
class Conditions:
    """What N showers are to be generated for: e_inc (N,) GeV, pdg (N,) and optional
    ``conditions`` (N,) arrays keyed by x0, y0 (mm), theta, phi (rad).

    It reads like a ShowerData without cells, so ``ConditionSpec.tensor`` accepts it.

    >>> c = Conditions([10.0, 20.0], -11, {"x0": [1.0, 2.0]})
    >>> c.condition_matrix(("e_inc", "x0")).tolist()
    [[10.0, 1.0], [20.0, 2.0]]
    """

    e_inc: np.ndarray
    pdg: np.ndarray
    conditions: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = np.asarray(self.e_inc, np.float64).reshape(-1)
        pdg = np.broadcast_to(np.asarray(self.pdg, np.int32).reshape(-1), e.shape).copy()
        conds = {k: np.asarray(v, np.float64).reshape(-1) for k, v in self.conditions.items()}
        for k, v in conds.items():
            if k not in CONDITION_KEYS or v.shape != e.shape:
                raise ValueError(f"condition {k!r} must be one of {CONDITION_KEYS} with {e.shape[0]} entries")
        object.__setattr__(self, "e_inc", e)
        object.__setattr__(self, "pdg", pdg)
        object.__setattr__(self, "conditions", conds)

    def __len__(self) -> int:
        return self.e_inc.shape[0]

    @classmethod
    def from_data(cls, data: ShowerData) -> Conditions:
        """The conditions of existing showers (a reference or validation set), in order."""
        return cls(data.e_inc, data.pdg, dict(data.conditions))

    def select(self, index) -> Conditions:
        return Conditions(self.e_inc[index], self.pdg[index], {k: v[index] for k, v in self.conditions.items()})

    def condition_matrix(self, keys: tuple[str, ...] = ("e_inc",) + CONDITION_KEYS) -> np.ndarray:
        """(N, k) float64 of the requested conditions that are present, in order."""
        return _condition_matrix(self.e_inc, self.conditions, keys)


def _condition_matrix(e_inc: np.ndarray, conditions: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    """(N, k) float64 of the conditions ``keys`` that are present (``e_inc`` always is), in order."""
    cols = [e_inc if k == "e_inc" else conditions[k] for k in keys if k == "e_inc" or k in conditions]
    return np.stack(cols, axis=1)
