"""The built-in parametrized shower simulator: GFlash-style EM showers and an approximate pion model.

It is calogan's embedded default reference (showers to train on without a Geant4 sample)
and the classical fast-simulation baseline every GAN is compared with. Parameters fitted on
the Geant4 samples ship with calogan (``params/*.json``); ``calogan calibrate`` refits them.

>>> from calogan.simulate import simulate
>>> showers = simulate("calogan", "e+", [10.0, 20.0, 50.0], seed=0)
>>> showers.cells.shape
(3, 504)
"""

from calogan.simulate.materials import Media, media
from calogan.simulate.params import SUPPORTED_PARTICLES, SimParams, default_params, load_params, save_params
from calogan.simulate.simulator import BLOCK, GENERATOR, MODES, Distribution, iter_simulate, simulate

__all__ = [
    "BLOCK",
    "GENERATOR",
    "MODES",
    "SUPPORTED_PARTICLES",
    "Distribution",
    "Media",
    "SimParams",
    "default_params",
    "iter_simulate",
    "load_params",
    "media",
    "save_params",
    "simulate",
]
