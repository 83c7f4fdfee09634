"""Run the parametrized simulator: showers for given conditions, or streamed for sampled ones."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from calogan import __version__
from calogan.data import CONDITION_KEYS, ShowerData, particle_code, particle_name
from calogan.errors import ConfigError
from calogan.geometry import Geometry, load_geometry
from calogan.simulate.deposit import CellMap, Tracks, deposit
from calogan.simulate.em import deposited_energy, em_spots, primary_track
from calogan.simulate.hadronic import hadron_spots
from calogan.simulate.materials import Media, media
from calogan.simulate.params import SUPPORTED_PARTICLES, SimParams, default_params

__all__ = ["BLOCK", "GENERATOR", "MODES", "Distribution", "iter_simulate", "simulate", "simulate_block"]

# Showers are made in blocks of BLOCK; block b draws from its own stream
# SeedSequence(seed, spawn_key=(b,)), so a seed fixes every shower whatever the chunking.
# 64 showers of 50 GeV make ~100k spots, whose float32 arrays (400 kB each) stay in a core's
# L2 cache through the dozens of numpy passes over them: 1.3-1.5x the speed of blocks of 256.
BLOCK = 64
MODES = ("total", "active")
GENERATOR = f"calogan-param {__version__}"


@dataclass(frozen=True)
class Distribution:
    """Values for a condition: uniform in [lo, hi] (``kind="uniform"``) or fixed ``points``
    shared out in turn (shower i gets point i mod k, so each point gets n/k showers).

    >>> Distribution.parse("1:100", "--energy").kind, Distribution.parse("1,2,4", "--energy").values
    ('uniform', (1.0, 2.0, 4.0))
    """

    kind: str
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "points") or not self.values:
            raise ConfigError(f"a distribution is 'uniform' (lo, hi) or 'points' (values), got {self.kind!r} {self.values}")
        if self.kind == "uniform" and (len(self.values) != 2 or not self.values[0] < self.values[1]):
            raise ConfigError(f"a uniform range needs lo < hi, got {self.values}")

    @classmethod
    def parse(cls, text: str, option: str, *, scale: float = 1.0, positive: bool = False) -> Distribution:
        """'LO:HI' (uniform), 'A,B,C' (points) or 'A' (fixed); values times ``scale``."""
        text = str(text).strip()
        sep = ":" if ":" in text else ","
        parts = [p.strip() for p in text.split(sep)]
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise ConfigError(f"{option}: expected LO:HI, a comma-separated list or one number, got {text!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{option}: values must be finite, got {text!r}")
        if positive and any(v <= 0 for v in values):
            raise ConfigError(f"{option}: values must be > 0, got {text!r}")
        if sep == ":":
            if len(values) != 2:
                raise ConfigError(f"{option}: a range is LO:HI, got {text!r}")
            if not values[0] < values[1]:
                raise ConfigError(f"{option}: the range {text!r} is empty or reversed (need LO < HI)")
            return cls("uniform", tuple(v * scale for v in values))
        return cls("points", tuple(v * scale for v in values))

    def sample(self, rng: np.random.Generator, n: int, start: int) -> np.ndarray:
        """(n,) values of showers start .. start + n - 1."""
        if self.kind == "uniform":
            return rng.uniform(self.values[0], self.values[1], n)
        return np.asarray(self.values)[(start + np.arange(n)) % len(self.values)]


def _block_rng(seed: int, block: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(block,))))


def _resolve(geometry, particle, params: SimParams | None, mode: str) -> tuple[Geometry, Media, CellMap, str, SimParams]:
    geometry = load_geometry(geometry)
    try:
        name = particle_name(particle_code(particle))
    except ValueError:
        name = str(particle)
    if name not in SUPPORTED_PARTICLES:
        raise ConfigError(f"the simulator does not model particle {particle!r}; supported: {', '.join(SUPPORTED_PARTICLES)}")
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if params is None:
        params = default_params(name)
    elif SUPPORTED_PARTICLES[params.particle] != SUPPORTED_PARTICLES[name]:
        raise ConfigError(f"the parameters are for {params.particle}, not {name}")
    return geometry, media(geometry), CellMap.build(geometry), name, params


def simulate_block(
    rng: np.random.Generator,
    e_inc: np.ndarray,
    tracks: Tracks,
    cell_map: CellMap,
    med: Media,
    params: SimParams,
    mode: str,
) -> np.ndarray:
    """(n, n_cells) float32 MeV: one block of showers of energies e_inc (n,) GeV."""
    n = len(e_inc)
    active = mode == "active"
    if params.is_hadron:
        parts = hadron_spots(rng, e_inc, tracks, med, params.hadronic, params.em, active=active)
    else:
        e_dep = deposited_energy(rng, e_inc, params.em.deposit)
        lp = params.em.longitudinal
        parts = []
        if lp.track_x0 > 0:
            track, e_dep = primary_track(rng, e_dep, tracks, med, lp.track_x0, params.em.sampling)
            parts.append(track)
        t_start = lp.conversion_x0 * rng.standard_exponential(n) if lp.conversion_x0 > 0 else np.zeros(n)
        parts += em_spots(rng, e_inc, e_dep, t_start, np.arange(n), tracks, med, params.em, active=active)
    return deposit(parts, tracks, e_inc, cell_map, med, mode, rng)


def _check_theta(theta: np.ndarray) -> None:
    if np.any(theta < 0) or np.any(theta >= 0.5 * math.pi):
        raise ConfigError(f"theta must lie in [0, pi/2) rad (the particle enters the front face), got {float(np.max(np.abs(theta))):g}")


def _check_energies(e_inc: np.ndarray) -> np.ndarray:
    e_inc = np.asarray(e_inc, dtype=np.float64).reshape(-1)
    if len(e_inc) == 0:
        raise ConfigError("no showers to simulate (n must be >= 1)")
    if not np.all(np.isfinite(e_inc)) or np.any(e_inc <= 0):
        bad = e_inc[~(np.isfinite(e_inc) & (e_inc > 0))][0]
        raise ConfigError(f"incident energies must be finite and > 0 GeV, got {bad}")
    return e_inc


def simulate(
    geometry: Geometry | str,
    particle: str,
    e_inc,
    *,
    seed: int,
    mode: str = "total",
    x0=None,
    y0=None,
    theta=None,
    phi=None,
    params: SimParams | None = None,
) -> ShowerData:
    """Showers of ``particle`` with incident energies ``e_inc`` (N,) GeV.

    ``x0``, ``y0`` (mm, impact point on the front face) and ``theta``, ``phi`` (rad,
    direction) are scalars or (N,) arrays; those given are stored as conditions.
    ``mode="total"`` puts all deposited energy in the cells (the CaloGAN convention),
    ``"active"`` only the active-material share. ``params`` default to the ones shipped
    for the particle. The same seed gives the same showers.

    >>> d = simulate("calogan", "e+", [10.0, 50.0], seed=1)
    >>> d.cells.shape, bool((d.cells.sum(1) <= 1000 * d.e_inc).all())
    ((2, 504), True)
    """
    geometry, med, cell_map, name, params = _resolve(geometry, particle, params, mode)
    e_inc = _check_energies(e_inc)
    n = len(e_inc)
    given = {k: v for k, v in zip(CONDITION_KEYS, (x0, y0, theta, phi)) if v is not None}
    conditions = {k: np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy() for k, v in given.items()}
    for key, value in conditions.items():
        if not np.all(np.isfinite(value)):
            raise ConfigError(f"condition {key} must be finite")
    _check_theta(conditions.get("theta", np.zeros(1)))
    tracks = Tracks.make(n, **conditions)
    cells = np.empty((n, geometry.n_cells), np.float32)
    for b, start in enumerate(range(0, n, BLOCK)):
        sl = slice(start, min(start + BLOCK, n))
        cells[sl] = simulate_block(_block_rng(seed, b), e_inc[sl], tracks.select(sl), cell_map, med, params, mode)
    return ShowerData(geometry, cells, e_inc, np.full(n, particle_code(name), np.int32), conditions)


def iter_simulate(
    geometry: Geometry | str,
    particle: str,
    n: int,
    energy: Distribution,
    *,
    seed: int,
    mode: str = "total",
    x0: Distribution | None = None,
    y0: Distribution | None = None,
    theta: Distribution | None = None,
    phi: Distribution | None = None,
    params: SimParams | None = None,
    chunk_size: int = 10_240,
) -> Iterator[ShowerData]:
    """Stream n showers in chunks of about ``chunk_size`` (whole blocks of ``BLOCK``).

    Energies (GeV) and positions/angles (mm, rad) are drawn from the distributions; when
    any of x0, y0, theta, phi is given all four are stored (0 for the others), as in a
    conditional training sample. The showers depend on the seed, n and the options only,
    never on ``chunk_size``.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    geometry, med, cell_map, name, params = _resolve(geometry, particle, params, mode)
    if any(v <= 0 for v in energy.values):
        raise ConfigError(f"energies must be > 0 GeV, got {energy.values}")
    dists = dict(zip(CONDITION_KEYS, (x0, y0, theta, phi)))
    if theta is not None:
        _check_theta(np.asarray(theta.values))
    # checked here, not when the first chunk is asked for
    return _stream(geometry, med, cell_map, particle_code(name), params, n, energy, dists, seed, mode, chunk_size)


def _stream(geometry, med, cell_map, code, params, n, energy, dists, seed, mode, chunk_size) -> Iterator[ShowerData]:
    positional = any(d is not None for d in dists.values())
    blocks_per_chunk = max(1, -(-chunk_size // BLOCK))
    pending: list[ShowerData] = []
    for b, start in enumerate(range(0, n, BLOCK)):
        m = min(BLOCK, n - start)
        rng = _block_rng(seed, b)
        e_inc = energy.sample(rng, m, start)
        conditions = {}
        if positional:
            conditions = {k: (np.zeros(m) if d is None else d.sample(rng, m, start)) for k, d in dists.items()}
        tracks = Tracks.make(m, **conditions)
        cells = simulate_block(rng, e_inc, tracks, cell_map, med, params, mode)
        pending.append(ShowerData(geometry, cells, e_inc, np.full(m, code, np.int32), conditions))
        if len(pending) == blocks_per_chunk:
            yield ShowerData.concatenate(pending) if len(pending) > 1 else pending[0]
            pending = []
    if pending:
        yield ShowerData.concatenate(pending) if len(pending) > 1 else pending[0]
