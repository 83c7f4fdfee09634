"""The conditional CaloGAN: CaloGAN conditioned on xi = (E, x0, y0, theta, phi).

After "Controlling Physical Attributes in GAN-Accelerated Simulation of Electromagnetic
Calorimeters" (de Oliveira, Paganini and Nachman, arXiv:1711.08813).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from calogan.errors import ConfigError
from calogan.losses import attribute_regression_loss
from calogan.models.base import ConditionSpec
from calogan.models.blocks import Blur2d, soft_sparsity
from calogan.models.calogan import CaloGAN, CaloGANConfig

__all__ = ["CondCaloGAN", "CondCaloGANConfig", "blur_kernel"]


@dataclass(frozen=True)
class CondCaloGANConfig(CaloGANConfig):
    """Hyper-parameters of the conditional CaloGAN: those of ``CaloGANConfig`` plus

    - ``sparsity_alpha``, ``sparsity_beta``: soft sparsity (``blocks.soft_sparsity``) of each
      layer on cells in GeV, fed to the discriminator raw and through minibatch
      discrimination; a cell counts half at |x| = beta^(-1/alpha) (defaults: 10 keV);
    - ``blur_mm``: frozen box blurs 1/(nm) on the generator's layers, n x m cells spanning
      about ``blur_mm`` (odd sizes; a layer whose cells are wider gets none; 0 turns blur off);
    - ``lambda_x0``, ``lambda_y0``, ``lambda_theta``, ``lambda_phi``: per-attribute weights of
      the attribute-regression loss (eq. 3), on attributes scaled to about [-1, 1];
    - ``regression_hidden``, ``regression_dropout``: the regression head Xi on the flattened
      cells over their sum (shape only), dense layers with LeakyReLU and dropout as in the
      authors' code;
    - ``label_flip``: the discriminator's labels are flipped with this probability.

    The locally-connected layers and the attention of the CaloGAN become convolutions.
    """

    label_flip: float = 0.05
    sparsity_alpha: float = 1.0
    sparsity_beta: float = 1e5
    blur_mm: float = 15.0
    lambda_x0: float = 0.2
    lambda_y0: float = 0.2
    lambda_theta: float = 0.2
    lambda_phi: float = 0.2
    regression_hidden: tuple[int, ...] = (512, 1024, 1024, 128)
    regression_dropout: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.sparsity_alpha > 0 and self.sparsity_beta > 0):
            raise ConfigError(f"model.sparsity_alpha and model.sparsity_beta must be > 0, got {self.sparsity_alpha}, {self.sparsity_beta}")
        for name in ("blur_mm", "lambda_x0", "lambda_y0", "lambda_theta", "lambda_phi"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if not self.regression_hidden or any(h < 1 for h in self.regression_hidden):
            raise ConfigError(f"model.regression_hidden must be a non-empty list of positive sizes, got {list(self.regression_hidden)}")
        if not 0 <= self.regression_dropout < 1:
            raise ConfigError(f"model.regression_dropout must be in [0, 1), got {self.regression_dropout}")


def blur_kernel(cell_size: tuple[float, float], blur_mm: float) -> tuple[int, int]:
    """Odd (n, m) cells spanning about ``blur_mm`` along each axis of cells ``cell_size`` mm.

    >>> blur_kernel((160.0, 5.0), 15.0)
    (1, 3)
    """
    return tuple(2 * int(blur_mm // (2.0 * s)) + 1 for s in cell_size)


class CondCaloGAN(CaloGAN):
    """Conditional CaloGAN (de Oliveira, Paganini, Nachman; arXiv:1711.08813) for any layered geometry.

    Conditions: E and any of x0, y0, theta, phi (``ConditionSpec.keys``). The generator gets
    z * E / E_max concatenated with the encoded attributes: x0, y0, theta scaled to about
    [-1, 1] and the direction as (w cos phi, w sin phi) with w = sin theta / sin theta_max
    (phi is periodic and meaningless at theta = 0, so it enters as a continuous transverse
    direction). The discriminator's regression head Xi estimates the same encoding from a
    shower; both players minimise lambda^T E|xi - Xi(x)|: the discriminator on real showers
    (eq. 3), the generator on its own. Soft sparsity, convolutions, convolutional attention
    and frozen blurs as in ``CondCaloGANConfig``.

    >>> from calogan.geometry import preset
    >>> from calogan.transforms import ShowerTransform, TransformConfig
    >>> g = preset("calogan")
    >>> t = ShowerTransform(TransformConfig(energy="gev", scale="none"), [0.0] * g.n_cells, [1.0] * g.n_cells)
    >>> spec = ConditionSpec(("e_inc", "x0", "theta"), ((1.0, 100.0), (-50.0, 50.0), (0.0, 0.35)))
    >>> model = CondCaloGAN(g, spec, t, CondCaloGANConfig(latent_dim=8)).eval()
    >>> model(torch.tensor([[10.0, -20.0, 0.1], [50.0, 30.0, 0.3]])).shape
    torch.Size([2, 504])
    """

    family = "cond_calogan"
    config_class = CondCaloGANConfig
    local = False

    def __init__(self, geometry, conditions: ConditionSpec, transform, config: CondCaloGANConfig) -> None:
        super().__init__(geometry, conditions, transform, config)
        blurs = []
        for layer in geometry.layers:
            if config.blur_mm == 0:
                kernel = (1, 1)
            elif layer.cell_size is None:
                raise ConfigError(
                    f"model.blur_mm needs cell sizes in mm, but layer {layer.name!r} of {geometry.name!r} has none; set blur_mm: 0"
                )
            else:
                kernel = blur_kernel(layer.cell_size, config.blur_mm)
            blurs.append(nn.Identity() if kernel == (1, 1) else Blur2d(kernel))
        self.blurs = nn.ModuleList(blurs)
        weights = [getattr(config, f"lambda_{key}") for key, n in self._attribute_columns() for _ in range(n)]
        self.register_buffer("attribute_weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        layers, width = [], geometry.n_cells
        for i, h in enumerate(config.regression_hidden):
            # the authors' head: dropout 0.2 after the first layer, the configured rate after the others
            layers += [nn.Linear(width, h), nn.LeakyReLU(config.leaky_slope), nn.Dropout(0.2 if i == 0 else config.regression_dropout)]
            width = h
        layers.append(nn.Linear(width, len(weights)))
        self.regressor = nn.Sequential(*layers)

    # -- hooks of CaloGAN -----------------------------------------------------------------

    def _check_inputs(self) -> None:
        if len(self.conditions.keys) < 2:
            raise ConfigError(
                "the cond_calogan family needs conditions beyond e_inc (x0, y0, theta, phi); for e_inc only use family calogan"
            )
        self._check_transform()

    def _attribute_columns(self) -> list[tuple[str, int]]:
        """(key, number of encoded columns) of each attribute beyond e_inc."""
        return [(key, 2 if key == "phi" else 1) for key in self.conditions.keys[1:]]

    def _generator_input_dim(self) -> int:
        return self.config.latent_dim + sum(n for _, n in self._attribute_columns())

    def _generator_input(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([super()._generator_input(cond, z), self.attributes(cond)], dim=1)

    def _smear(self, i: int, image: torch.Tensor) -> torch.Tensor:
        return self.blurs[i](image)

    def _occupancy(self, cells_gev: torch.Tensor) -> torch.Tensor:
        return soft_sparsity(cells_gev, self.config.sparsity_alpha, self.config.sparsity_beta).unsqueeze(1)

    def _attribute_terms(self, out: dict, cond: torch.Tensor, logs: dict, prefix: str) -> torch.Tensor:
        loss = attribute_regression_loss(self.regress(out["cells"]), self.attributes(cond), self.attribute_weights)
        logs[f"{prefix}_attr"] = loss.detach()
        return loss

    # -- attributes ---------------------------------------------------------------------

    def attributes(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, n_cond) physical conditions -> (B, A) encoded attributes xi (see the class doc)."""
        keys = self.conditions.keys
        norm = self.conditions.normalise(cond)
        cols = []
        for i, key in enumerate(keys[1:], start=1):
            if key != "phi":
                cols.append(norm[:, i])
                continue
            phi = cond[:, i]
            w = torch.ones_like(phi)
            if "theta" in keys:
                lo, hi = self.conditions.ranges[keys.index("theta")]
                top = math.sin(min(max(abs(lo), abs(hi)), math.pi / 2))
                w = torch.sin(cond[:, keys.index("theta")]) / (top if top > 1e-6 else 1.0)
            cols += [w * torch.cos(phi), w * torch.sin(phi)]
        return torch.stack(cols, dim=1)

    def regress(self, cells_gev: torch.Tensor) -> torch.Tensor:
        """Xi: showers (B, n_cells) GeV -> (B, A) estimated encoded attributes, from their shape."""
        shape = cells_gev / cells_gev.sum(dim=1, keepdim=True).clamp_min(1e-6)
        return self.regressor(shape)
