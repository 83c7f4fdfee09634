"""The router: each shower to the first backend that covers it, and the YAML routing table that builds one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calogan.config import config_from_dict, read_config
from calogan.data import particle_name
from calogan.errors import ConfigError
from calogan.fastsim.generator import GeneratorBackend, load_backend
from calogan.fastsim.interface import ShowerSimulator, describe_shower, particle_codes, particles_and_energies, track_conditions
from calogan.fastsim.noise import derive_seed
from calogan.fastsim.parametrized import ParametrizedBackend
from calogan.geometry import load_geometry

__all__ = ["BACKENDS", "Route", "RouteConfig", "Router", "RouterConfig", "load_router"]

BACKENDS = ("torch", "onnxruntime", "parametrized")


@dataclass(frozen=True)
class Route:
    """One row of the routing table: ``particles`` (PDG codes) in ``energy`` (lo, hi) GeV go to ``backend``."""

    name: str
    particles: tuple[int, ...]
    energy: tuple[float, float]
    backend: ShowerSimulator

    def matches(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) bool: the route's particles and energies, and tracks its backend covers."""
        lo, hi = self.energy
        ok = np.isin(pdg, self.particles) & (e >= lo) & (e <= hi)
        if isinstance(self.backend, GeneratorBackend):
            ok &= self.backend.covers_tracks(tracks)
        return ok

    def describe(self) -> str:
        lo, hi = self.energy
        return f"{self.name}: {', '.join(particle_name(p) for p in self.particles)} {lo:g}-{hi:g} GeV -> {self.backend.describe()}"


class Router(ShowerSimulator):
    """Sends each shower to the first route that matches it, else to the fallback.

    A route matches a shower when its particles include the shower's, its energy range holds
    the shower's energy and its backend covers the impact point and direction (a model not
    trained on them covers only the default beam). The fallback (usually the parametrized
    simulator) takes what no route takes, within its own particles and energy range; any
    shower left raises ``ConfigError`` naming it and the table. All backends must share one
    geometry, and those that know their convention must agree.
    """

    name = "router"

    def __init__(self, routes: Sequence[Route], fallback: Route | None = None, *, seed: int = 0, convention: str | None = None) -> None:
        super().__init__(seed)
        self.routes = tuple(routes)
        self.fallback = fallback
        table = [*self.routes, *([fallback] if fallback is not None else [])]
        if not table:
            raise ConfigError("a router needs at least one route or a fallback")
        names = [r.name for r in table]
        if len(set(names)) != len(names):
            raise ConfigError(f"route names must be unique, got {names}")
        self.geometry = table[0].backend.geometry
        for r in table[1:]:
            if r.backend.geometry != self.geometry:
                raise ConfigError(
                    f"route {r.name} simulates geometry {r.backend.geometry.name!r}, route {table[0].name} {self.geometry.name!r}: one router, one geometry"
                )
        known = {r.name: r.backend.convention for r in table if r.backend.convention}
        if convention is not None:
            known = {"the router": convention, **known}
        if len(set(known.values())) > 1:
            raise ConfigError(
                f"backends disagree on the cell convention (total or active): {', '.join(f'{k}: {v}' for k, v in known.items())}"
            )
        self.convention = next(iter(known.values()), None)
        for r in table:
            lo, hi = r.energy
            if not 0 < lo < hi:
                raise ConfigError(f"route {r.name}: energy range must be [lo, hi] GeV with 0 < lo < hi, got [{lo:g}, {hi:g}]")

    @property
    def table(self) -> tuple[Route, ...]:
        return (*self.routes, *([self.fallback] if self.fallback is not None else []))

    def describe(self) -> str:
        return "; ".join(r.describe() for r in self.table)

    def assign(self, particle, energy, position=None, direction=None) -> np.ndarray:
        """(B,) route names chosen for these showers (``""`` where none matches)."""
        pdg, e = particles_and_energies(particle, energy)
        tracks = track_conditions(len(e), position, direction)
        index = self._assign(pdg, e, tracks)
        names = np.array([r.name for r in self.table] + [""], dtype=object)
        return names[index]

    def _assign(self, pdg, e, tracks) -> np.ndarray:
        """(B,) index into ``table`` of each shower's route; len(table) where none matches."""
        table = self.table
        index = np.full(len(e), len(table))
        for i, r in enumerate(table):
            free = index == len(table)
            if not free.any():
                break
            index[free & r.matches(pdg, e, tracks)] = i
        return index

    def covers(self, pdg, e, tracks) -> np.ndarray:
        return self._assign(pdg, e, tracks) < len(self.table)

    def _run(self, pdg, e, tracks, seed) -> np.ndarray:
        table = self.table
        index = self._assign(pdg, e, tracks)
        if (index == len(table)).any():
            i = int(np.argmax(index == len(table)))
            if not any(pdg[i] in r.particles for r in table):
                raise ConfigError(f"particle {particle_name(int(pdg[i]))} is not simulated by any route ({self.describe()})")
            raise ConfigError(f"no route covers {describe_shower(pdg[i], e[i], tracks, i)}: it is outside every range ({self.describe()})")
        out = np.empty((len(e), self.geometry.n_cells), np.float32)
        for i, r in enumerate(table):
            idx = np.flatnonzero(index == i)
            if idx.size:
                sub = {k: v[idx] for k, v in tracks.items()}
                out[idx] = r.backend._produce(pdg[idx], e[idx], sub, derive_seed(seed, i))
        return out


@dataclass(frozen=True)
class RouteConfig:
    """One route of a routing YAML.

    ``backend``: ``torch`` (``model``: a checkpoint), ``onnxruntime`` (``model``: an exported
    .onnx) or ``parametrized`` (``mode``: total or active, default the router's
    ``convention``). ``particles``: names or PDG codes (default: the model's). ``energy``:
    [lo, hi] GeV (default: the model's training range; required for ``parametrized``).
    ``device``, ``threads``, ``precision``, ``compile`` as for ``calogan generate``.
    ``name`` labels the route (default: backend and model file).
    """

    backend: str
    model: str | None = None
    particles: tuple[str, ...] = ()
    energy: tuple[float, float] | None = None
    name: str | None = None
    mode: str | None = None
    device: str = "cpu"
    threads: int | None = None
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "parametrized":
            if self.model is not None:
                raise ConfigError("the parametrized backend takes no model")
            if self.energy is None:
                raise ConfigError("the parametrized backend needs energy: [lo, hi] GeV, the range it is trusted in")
        elif self.model is None:
            raise ConfigError(f"backend {self.backend} needs model: PATH")


@dataclass(frozen=True)
class RouterConfig:
    """A routing YAML: ``routes`` (a list of RouteConfig mappings, tried in order), an optional
    ``fallback`` (one more, usually parametrized), ``geometry`` and ``convention`` to check
    every backend against, and the ``seed`` of the router's own seed sequence."""

    routes: tuple[dict, ...] = ()
    fallback: dict | None = None
    geometry: str | None = None
    convention: str | None = None
    seed: int = 0


def load_router(path: str | Path, *, seed: int | None = None) -> Router:
    """A Router from a routing YAML (see ``RouterConfig``; ``configs/fastsim_eplus.yaml``).

    Model paths are relative to the working directory, as in training configs.
    """
    values = read_config(path, "routing table")
    try:
        config = config_from_dict(RouterConfig, values if values is not None else {}, where="")
        entries = [(f"routes[{i}]", r) for i, r in enumerate(config.routes)] + ([("fallback", config.fallback)] if config.fallback else [])
        parsed = [(where, _route_config(r, where)) for where, r in entries]
        # Models first: a parametrized route takes its geometry and convention from them by default.
        built = {where: _model_route(rc, where) for where, rc in parsed if rc.backend != "parametrized"}
        models = [r.backend for r in built.values()]
        geometry = load_geometry(config.geometry) if config.geometry is not None else (models[0].geometry if models else None)
        for where, route in built.items():
            if route.backend.geometry != geometry:
                raise ConfigError(
                    f"{where}: the model simulates geometry {route.backend.geometry.name!r}, the table names {geometry.name!r}"
                )
        conventions = {b.convention for b in models if b.convention}
        convention = config.convention or (conventions.pop() if len(conventions) == 1 else None)
        for where, rc in parsed:
            if rc.backend == "parametrized":
                built[where] = _parametrized_route(rc, where, geometry, convention)
        routes = [built[where] for where, _ in parsed if where != "fallback"]
        router = Router(routes, built.get("fallback"), seed=config.seed if seed is None else seed, convention=config.convention)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return router


def _route_config(values, where: str) -> RouteConfig:
    try:
        return config_from_dict(RouteConfig, values, where=where)
    except ConfigError as err:
        raise ConfigError(str(err) if where in str(err) else f"{where}: {err}") from None


def _parametrized_route(rc: RouteConfig, where: str, geometry, convention: str | None) -> Route:
    mode = rc.mode or convention
    if mode is None:
        raise ConfigError(f"{where}: the parametrized backend needs mode: total or active (or a model or router convention to follow)")
    if geometry is None:
        raise ConfigError(f"{where}: with no model route, name the geometry (geometry: a preset, .xml or .json)")
    try:
        backend = ParametrizedBackend(geometry, mode=mode, energy=rc.energy, particles=rc.particles or None)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return Route(rc.name or f"parametrized-{mode}", backend.particles, backend.energy, backend)


def _model_route(rc: RouteConfig, where: str) -> Route:
    if rc.mode is not None:
        raise ConfigError(f"{where}: mode is for the parametrized backend; a model's convention comes from its training data")
    if rc.threads is not None and rc.threads < 1:
        raise ConfigError(f"{where}: threads must be >= 1, got {rc.threads}")
    if rc.backend == "torch" and rc.threads is not None:
        torch.set_num_threads(rc.threads)
    backend = load_backend(rc.model, backend=rc.backend, device=rc.device, precision=rc.precision, compile=rc.compile, threads=rc.threads)
    particles = tuple(particle_codes(rc.particles, f"{where}.particles")) if rc.particles else backend.particles
    if not particles:
        raise ConfigError(f"{where}: {rc.model} does not record its particle: name it with particles: [...]")
    if backend.particles:
        foreign = [particle_name(p) for p in particles if p not in backend.particles]
        if foreign:
            raise ConfigError(
                f"{where}: {rc.model} was trained on {', '.join(particle_name(p) for p in backend.particles)}, not {', '.join(foreign)}"
            )
    energy = tuple(float(v) for v in rc.energy) if rc.energy is not None else backend.conditions.ranges[0]
    return Route(rc.name or f"{rc.backend}:{Path(rc.model).name}", tuple(particles), energy, backend)
