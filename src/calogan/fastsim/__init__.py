"""The generic fast-simulation interface: (particle, energy, position, direction) -> cells, routed to a backend.

A framework hands over a batch of particles entering the calorimeter and gets their showers
back: one interface in front of several fast-simulation options, ML-based or not, as proposed
for GeantV (Orlova, Vallecorsa and Gheata, "GANs for simulation: development for distributed
computing systems"). Backends: a checkpoint run by torch (``TorchBackend``), an exported ONNX
file run by onnxruntime (``OnnxBackend``) and the parametrized simulator
(``ParametrizedBackend``). A ``Router`` sends each particle to the first backend whose particle
and energy range (and position/direction coverage) fit, with the parametrized simulator as the
fallback outside the models' ranges; ``load_router`` builds one from a small YAML table.

Modules: ``noise`` (per-shower latent noise), ``interface`` (``ShowerSimulator`` and its
inputs), ``generator`` (torch and onnxruntime backends), ``onnx_format`` (the exported file's
description), ``parametrized`` and ``router``. ``calogan.export`` and ``calogan.generate``
build on this package; it imports neither.

>>> from calogan.fastsim import ParametrizedBackend
>>> sim = ParametrizedBackend("calogan", mode="active", energy=(1.0, 100.0))
>>> sim.simulate("e+", [10.0, 50.0], position=[[0.0, 0.0], [10.0, -5.0]], direction=[[0.0, 0.0], [0.1, 1.0]], seed=1).shape
(2, 504)
"""

from calogan.fastsim.generator import CPU_TILE_ROWS, PRECISIONS, GeneratorBackend, OnnxBackend, TorchBackend, load_backend
from calogan.fastsim.interface import ShowerSimulator, track_conditions
from calogan.fastsim.noise import derive_seed, latent_noise
from calogan.fastsim.parametrized import ParametrizedBackend
from calogan.fastsim.router import BACKENDS, Route, RouteConfig, Router, RouterConfig, load_router

__all__ = [
    "BACKENDS",
    "CPU_TILE_ROWS",
    "PRECISIONS",
    "GeneratorBackend",
    "OnnxBackend",
    "ParametrizedBackend",
    "Route",
    "RouteConfig",
    "Router",
    "RouterConfig",
    "ShowerSimulator",
    "TorchBackend",
    "derive_seed",
    "latent_noise",
    "load_backend",
    "load_router",
    "track_conditions",
]
