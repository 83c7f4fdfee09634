"""The contract between a model family and the one training loop: GANModel and its conditions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from calogan.data import CONDITION_KEYS, ShowerData, particle_name
from calogan.errors import ConfigError
from calogan.geometry import Geometry

__all__ = ["ConditionSpec", "GANModel"]


@dataclass(frozen=True)
class ConditionSpec:
    """Which conditions a model is trained on, in which column order, and their ranges.

    The condition tensor ``cond`` handed to models is (B, n_cond) float32 in physical units:
    ``e_inc`` in GeV first, then the keys of ``keys`` beyond it (x0, y0 in mm; theta, phi in
    rad), then a one-hot block over ``particles`` (PDG codes) when there are several.
    ``ranges`` are the (min, max) of each physical key in the training data; ``normalise``
    maps each column to about [-1, 1] (energy on a log scale) for the networks.

    >>> spec = ConditionSpec(("e_inc",), ranges=((1.0, 100.0),))
    >>> spec.normalise(torch.tensor([[1.0], [10.0], [100.0]])).squeeze(1).tolist()
    [-1.0, 0.0, 1.0]
    """

    keys: tuple[str, ...] = ("e_inc",)
    ranges: tuple[tuple[float, float], ...] = ((1.0, 100.0),)
    particles: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.keys or self.keys[0] != "e_inc":
            raise ConfigError(f"conditions must start with 'e_inc', got {self.keys}")
        unknown = [k for k in self.keys[1:] if k not in CONDITION_KEYS]
        if unknown:
            raise ConfigError(f"unknown conditions {unknown}; known: e_inc, {', '.join(CONDITION_KEYS)}")
        if len(self.ranges) != len(self.keys):
            raise ConfigError(f"conditions {self.keys} need one (min, max) range each, got {len(self.ranges)}")
        object.__setattr__(self, "ranges", tuple((float(a), float(b)) for a, b in self.ranges))
        object.__setattr__(self, "particles", tuple(int(p) for p in self.particles))

    @property
    def n_cond(self) -> int:
        return len(self.keys) + (len(self.particles) if len(self.particles) > 1 else 0)

    @classmethod
    def from_data(cls, data: ShowerData, keys: tuple[str, ...] = ("e_inc",)) -> ConditionSpec:
        """The spec of ``keys`` with ranges and particle list taken from training data."""
        missing = [k for k in keys[1:] if k not in data.conditions]
        if missing:
            raise ConfigError(
                f"conditions {missing} requested but the training data hold only e_inc{''.join(', ' + k for k in data.conditions)}"
            )
        cols = data.condition_matrix(keys)
        ranges = tuple((float(c.min()), float(c.max())) for c in cols.T)
        return cls(keys, ranges, tuple(int(p) for p in np.unique(data.pdg)))

    def tensor(self, data: ShowerData) -> torch.Tensor:
        """(N, n_cond) float32 physical condition tensor of some showers."""
        cols = [data.condition_matrix(self.keys)]
        if len(self.particles) > 1:
            unknown = sorted(set(np.unique(data.pdg).tolist()) - set(self.particles))
            if unknown:
                raise ConfigError(
                    f"particles {[particle_name(p) for p in unknown]} were not in the training data {[particle_name(p) for p in self.particles]}"
                )
            cols.append((data.pdg[:, None] == np.asarray(self.particles)[None, :]).astype(np.float64))
        return torch.from_numpy(np.concatenate(cols, axis=1).astype(np.float32))

    def normalise(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, n_cond) physical -> (B, n_cond) network inputs of order one."""
        out = []
        for i, (key, (lo, hi)) in enumerate(zip(self.keys, self.ranges)):
            c = cond[:, i]
            if key == "e_inc":  # energies span decades: log scale
                lo_, hi_ = np.log(lo), np.log(hi)
                c = torch.log(c.clamp_min(1e-6))
            else:
                lo_, hi_ = lo, hi
            mid, half = 0.5 * (lo_ + hi_), max(0.5 * (hi_ - lo_), 1e-6)
            out.append((c - mid) / half)
        out = torch.stack(out, dim=1)
        return torch.cat([out, cond[:, len(self.keys) :]], dim=1)

    def to_dict(self) -> dict:
        return {"keys": list(self.keys), "ranges": [list(r) for r in self.ranges], "particles": list(self.particles)}

    @classmethod
    def from_dict(cls, d: dict) -> ConditionSpec:
        return cls(tuple(d["keys"]), tuple(tuple(r) for r in d["ranges"]), tuple(d.get("particles", ())))


class GANModel(nn.Module):
    """A generator with its discriminator(s) and the two losses the training loop minimises.

    Every model family subclasses this. The training loop (``calogan.training``) only calls:

    - ``latent(n, generator=None)`` -> (n, latent_dim) noise on the model's device (defined
      here from ``config.latent_dim``);
    - ``forward(cond, z=None)`` -> (B, n_cells) generated showers in *model space*, the
      space of ``transform`` (``calogan.transforms``), given physical ``cond`` (B, n_cond);
    - ``discriminator_loss(real, cond)`` -> (loss, logs): one discriminator/critic update's
      loss on a real model-space batch (B, n_cells), including gradient penalties and
      auxiliary heads;
    - ``generator_loss(cond, real)`` -> (loss, logs): one generator update's loss; ``real``
      (B, n_cells) are model-space training showers made at the conditions ``cond``, for
      losses that compare with data directly (families may ignore it);
    - ``generator_parameters()`` / ``discriminator_parameters()`` for the two optimisers;
    - ``prepare(data)`` once before a fresh run, to fit normalisations on the training data.

    Generation goes through ``sample_cells(cond, z)`` -> (B, n_cells) cells in MeV.
    ``logs`` maps names to detached scalar tensors shown in the progress bar. Subclasses set
    ``family`` (the registry name) and keep their hyper-parameters in a frozen config
    dataclass passed as ``config``, so that a checkpoint can rebuild them.

    A family trained without a discriminator (the VAE) sets ``adversarial = False``: its
    ``discriminator_parameters()`` is empty, the loop makes no discriminator updates and no
    discriminator optimiser, and calls ``generator_loss(cond, real)`` with the real
    model-space batch (B, n_cells) the generator learns from.
    """

    family: str = ""
    adversarial: bool = True

    def __init__(self, geometry: Geometry, conditions: ConditionSpec, transform, config) -> None:
        super().__init__()
        self.geometry = geometry
        self.conditions = conditions
        self.transform = transform
        self.config = config
        self.calibration = None  # a MarginalCalibration fitted after training (calogan calibrate-model), or None

    def prepare(self, data: ShowerData) -> None:
        """Fit data-derived constants (normalisations held in buffers) on the training showers.

        The training loop calls it once, before the first step of a fresh run (a resumed run
        gets them back from the checkpoint's state dict). The default does nothing.
        """

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, latent_dim) standard-normal noise on the model's device (drawn where ``generator`` lives)."""
        device = generator.device if generator is not None else self.device
        return torch.randn(n, self.config.latent_dim, generator=generator, device=device).to(self.device)

    def forward(self, cond: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def sample_cells(self, cond: torch.Tensor, z: torch.Tensor, *, autocast: torch.dtype | None = None) -> torch.Tensor:
        """Showers in MeV: (B, n_cond) physical conditions and (B, latent_dim) noise -> (B, n_cells) float32.

        The generator's model-space output goes through the transform's inverse, always in
        float32; with ``autocast`` (``torch.bfloat16`` or ``torch.float16``, for GPUs) the
        generator itself runs under autocast. A fitted ``calibration`` (``calogan.marginals``)
        acts on the model-space output and on the showers. Every backend, the ONNX export and
        the latent traversals make showers through this method.
        """
        if autocast is None:
            x = self(cond, z)
        else:
            with torch.autocast(device_type=cond.device.type, dtype=autocast):
                x = self(cond, z)
        if self.calibration is None:
            return self.transform.inverse(x.float(), cond[:, 0])  # (B, n_cells) MeV
        return self.calibration.showers(x, z, cond[:, 0])  # its table replaces the transform's inverse

    def discriminator_loss(self, real: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def generator_loss(self, cond: torch.Tensor, real: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def generator_parameters(self):
        raise NotImplementedError

    def discriminator_parameters(self):
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
