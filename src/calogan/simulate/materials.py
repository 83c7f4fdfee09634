"""Effective shower constants of each layer's absorber + active stack, from ``geometry.MATERIALS``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calogan.errors import ConfigError
from calogan.geometry import MATERIALS, Geometry, Layer

__all__ = ["MIP_DEDX", "Media", "layer_composition", "media"]

# Minimum ionisation dE/dx in MeV cm^2/g (PDG "Atomic and nuclear properties" tables). The
# geometry's MATERIALS table lacks it; the simulator needs it for MIP tracks and for the
# sampling fraction of a minimum-ionising particle.
MIP_DEDX: dict[str, float] = {"Pb": 1.122, "LAr": 1.519, "W": 1.145, "Si": 1.664, "Fe": 1.451}


def layer_composition(layer: Layer) -> tuple[float, float]:
    """(absorber mm, active mm) inside one layer of ``layer.depth`` mm.

    The layer is a stack of whole (absorber, active) periods; a remainder shorter than a
    period is absorber first and then a cut-short active gap, as in the Geant4 CaloGAN model.

    >>> from calogan.geometry import preset
    >>> [layer_composition(layer) for layer in preset("calogan").layers]
    [(30.0, 60.0), (116.0, 231.0), (15.0, 28.0)]
    """
    if layer.depth is None:
        raise ConfigError(f"layer {layer.name!r} has no depth")
    if layer.absorber is None:
        return 0.0, float(layer.depth)
    period = layer.period
    n_full = np.floor(layer.depth / period + 1e-9)
    rest = max(layer.depth - n_full * period, 0.0)
    absorber = n_full * layer.absorber_thickness + min(rest, layer.absorber_thickness)
    active = n_full * layer.active_thickness + max(rest - layer.absorber_thickness, 0.0)
    return float(absorber), float(active)


@dataclass(frozen=True)
class Media:
    """Effective constants of every layer of a geometry, each an array of shape (n_layers,).

    Layered media are averaged as in GFlash (Grindhammer & Peters, hep-ex/0001020, sec. 4):
    lengths X0, R_M and lambda_I by their inverse path-length-weighted sums, the critical
    energy weighted by radiation lengths, Z by mass. ``sf_mip`` is the share of a minimum
    ionising particle's energy loss that falls in the active material, ``mip_per_mm`` its mean
    loss per mm of the stack (MeV/mm) and ``mip_per_period`` per sampling period (MeV).

    >>> from calogan.geometry import preset
    >>> m = media(preset("calogan"))
    >>> round(float(m.x0[0]), 2), round(float(m.moliere_radius[0]), 1), round(float(m.sf_mip[0]), 3)
    (15.59, 35.5, 0.25)
    """

    x0: np.ndarray  # mm
    moliere_radius: np.ndarray  # mm
    critical_energy: np.ndarray  # MeV
    z_eff: np.ndarray
    interaction_length: np.ndarray  # mm
    sf_mip: np.ndarray
    mip_per_mm: np.ndarray  # MeV / mm
    mip_per_period: np.ndarray  # MeV
    period: np.ndarray  # mm
    depth: np.ndarray  # mm
    boundaries: np.ndarray  # (n_layers + 1,) z of the layer faces, mm

    @property
    def n_layers(self) -> int:
        return len(self.x0)

    @property
    def x0_boundaries(self) -> np.ndarray:
        """(n_layers + 1,) depth of the layer faces in radiation lengths along z."""
        return np.concatenate([[0.0], np.cumsum(self.depth / self.x0)])

    @property
    def lambda_boundaries(self) -> np.ndarray:
        """(n_layers + 1,) depth of the layer faces in interaction lengths along z."""
        return np.concatenate([[0.0], np.cumsum(self.depth / self.interaction_length)])

    def reference_layer(self) -> int:
        """Index of the layer with the most radiation lengths: its medium sets the profile."""
        return int(np.argmax(self.depth / self.x0))


def _layer_constants(layer: Layer) -> tuple[float, ...]:
    absorber, active = layer_composition(layer)
    parts = [(MATERIALS[layer.active], active)]
    if layer.absorber is not None and absorber > 0:
        parts.append((MATERIALS[layer.absorber], absorber))
    for material, _ in parts:
        if material.name not in MIP_DEDX:
            raise ConfigError(f"layer {layer.name!r}: no MIP dE/dx known for material {material.name!r}; known: {', '.join(MIP_DEDX)}")
    total = sum(t for _, t in parts)
    n_x0 = sum(t / m.x0 for m, t in parts)
    x0 = total / n_x0
    moliere = total / sum(t / m.moliere_radius for m, t in parts)
    critical = sum(t / m.x0 * m.critical_energy for m, t in parts) / n_x0
    mass = sum(m.density * t for m, t in parts)
    z_eff = sum(m.density * t * m.z for m, t in parts) / mass
    lam = total / sum(t / m.interaction_length for m, t in parts)
    # dE/dx [MeV cm^2/g] * density [g/cm^3] / 10 = MeV/mm
    loss = {m.name: MIP_DEDX[m.name] * m.density / 10.0 * t for m, t in parts}
    sf_mip = loss[layer.active] / sum(loss.values())
    mip_per_mm = sum(loss.values()) / total
    period = layer.period
    return x0, moliere, critical, z_eff, lam, sf_mip, mip_per_mm, mip_per_mm * period, period


def media(geometry: Geometry) -> Media:
    """Effective constants of every layer of ``geometry``; every layer needs its depth.

    A CaloChallenge binning XML does not give depths or materials: the error says so, and
    ``calogan simulate --layer-depth`` supplies an assumed depth.
    """
    missing = [layer.name for layer in geometry.layers if layer.depth is None]
    if missing:
        raise ConfigError(
            f"geometry {geometry.name!r} does not give the depth of layer(s) {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: "
            "the simulator needs every layer's depth and materials (a CaloChallenge binning XML has neither; "
            "pass --layer-depth MM, or describe the layers in a geometry .json)"
        )
    values = np.array([_layer_constants(layer) for layer in geometry.layers], dtype=np.float64)
    depth = np.array([layer.depth for layer in geometry.layers], dtype=np.float64)
    return Media(*(values[:, i].copy() for i in range(values.shape[1])), depth=depth, boundaries=geometry.layer_boundaries())
