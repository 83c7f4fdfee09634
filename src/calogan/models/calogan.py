"""The CaloGAN (arXiv:1705.02355): one generator and discriminator stream per calorimeter layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.losses import absolute_energy_loss, bce_discriminator_loss, bce_generator_loss, flip_classes
from calogan.models.base import ConditionSpec, GANModel
from calogan.models.blocks import Conv2dSame, LayerAttention, LocallyConnected2d, MinibatchDiscrimination, hard_sparsity

__all__ = ["CaloGAN", "CaloGANConfig"]


@dataclass(frozen=True)
class CaloGANConfig:
    """Hyper-parameters of the CaloGAN; the defaults are the paper's (arXiv:1705.02355).

    Generator, per layer of shape (r, c): z (``latent_dim``, N(0, 1)) times E / E_max ->
    dense to (r + 2)(c + 2) x ``dense_channels`` -> conv 2x2 (``conv_channels``, Keras 'same')
    -> LeakyReLU(``leaky_slope``) -> BatchNorm -> locally-connected 2x2 (``local_channels``)
    -> LeakyReLU -> locally-connected 2x2 (1, no bias) -> (r, c); then the layer-to-layer
    ``attention`` and a ReLU (exact zeros give sparsity).

    Discriminator, per layer: conv 2x2 (``disc_channels[0]``, 'same') -> LeakyReLU, then three
    zero-padded locally-connected layers (``disc_channels[1:]``; 3x3 stride (1, 2), 2x2, 2x2
    stride (1, 2)) each with LeakyReLU and BatchNorm; minibatch discrimination
    (``minibatch_kernels`` x ``minibatch_dim``) on the features (``minibatch_features``) and
    the occupancy fed raw and through minibatch discrimination (``sparsity_features``).
    Global features: layer energies, total energy, minibatch discrimination on the layer
    energies, |E_tot - E| and 10 * 1[|E_tot - E| > ``energy_well_threshold`` GeV].

    Losses: binary cross-entropy (real labels flipped with probability ``label_flip``) and,
    for the generator, ``lambda_e`` * mean |E_tot - f E| / f in GeV, where f is
    ``sampling_fraction`` (1 reproduces the paper on all-deposit ``_total`` data; ``None``
    fits f = sum(E_tot E) / sum(E^2) on the training showers, for ``_active`` data). The
    discriminator's energy features use E_tot / f, so both conventions look alike to it.
    With several particle types an ACGAN head (weight ``acgan_weight``) classifies them;
    the discriminator's fake labels are redrawn with probability ``acgan_flip``.
    """

    latent_dim: int = 1024
    dense_channels: int = 36
    conv_channels: int = 16
    local_channels: int = 6
    attention: bool = True
    leaky_slope: float = 0.3
    disc_channels: tuple[int, int, int, int] = (64, 16, 8, 8)
    minibatch_kernels: int = 10
    minibatch_dim: int = 10
    minibatch_features: bool = True
    sparsity_features: bool = True
    lambda_e: float = 0.05
    sampling_fraction: float | None = 1.0
    energy_well_threshold: float = 5.0
    label_flip: float = 0.0
    acgan_weight: float = 0.2
    acgan_flip: float = 0.3

    def __post_init__(self) -> None:
        for name in ("latent_dim", "dense_channels", "conv_channels", "local_channels", "minibatch_kernels", "minibatch_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if len(self.disc_channels) != 4 or any(c < 1 for c in self.disc_channels):
            raise ConfigError(f"model.disc_channels must be four positive channel counts, got {list(self.disc_channels)}")
        for name in ("lambda_e", "acgan_weight", "energy_well_threshold", "leaky_slope"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("label_flip", "acgan_flip"):
            if not 0 <= getattr(self, name) < 0.5:
                raise ConfigError(f"model.{name} must be in [0, 0.5), got {getattr(self, name)}")
        if self.sampling_fraction is not None and not self.sampling_fraction > 0:
            raise ConfigError(f"model.sampling_fraction must be > 0 or null (fitted), got {self.sampling_fraction}")


def _keras_init(module: nn.Module) -> None:
    """Keras defaults on dense and conv layers: Glorot-uniform weights, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    # Keras' epsilon 1e-3. Its running-average momentum 0.99 (0.01 in torch's convention) lags
    # far behind a generator that trains for only hundreds of steps, and generation uses those
    # running statistics, so we keep torch's faster 0.1.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.1)


class GeneratorStream(nn.Module):
    """One layer's generator: (B, n_in) -> pre-activation image (B, 1, r, c).

    ``local=True``: the CaloGAN's locally-connected upper layers; ``False``: the conditional
    CaloGAN's convolutions of the same sizes.
    """

    def __init__(self, n_in: int, shape: tuple[int, int], config: CaloGANConfig, local: bool) -> None:
        super().__init__()
        r, c = shape
        self.shape, self.channels = (r, c), config.dense_channels
        self.dense = nn.Linear(n_in, (r + 2) * (c + 2) * config.dense_channels)
        self.conv = Conv2dSame(config.dense_channels, config.conv_channels, 2)
        self.norm = _batch_norm(config.conv_channels)
        self.act = nn.LeakyReLU(config.leaky_slope)
        _keras_init(self)
        nn.init.kaiming_uniform_(self.conv.weight, a=0.0)  # he_uniform, as in the paper's code
        if local:
            self.up1 = LocallyConnected2d(config.conv_channels, config.local_channels, (r + 2, c + 2), 2, init="he_uniform")
            self.up2 = LocallyConnected2d(config.local_channels, 1, (r + 1, c + 1), 2, bias=False, init="glorot_normal")
        else:
            self.up1 = nn.Conv2d(config.conv_channels, config.local_channels, 2)
            self.up2 = nn.Conv2d(config.local_channels, 1, 2, bias=False)
            _keras_init(self.up1)
            _keras_init(self.up2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r, c = self.shape
        x = self.dense(h).view(-1, self.channels, r + 2, c + 2)  # (B, 36, r+2, c+2)
        x = self.norm(self.act(self.conv(x)))
        x = self.act(self.up1(x))  # (B, 6, r+1, c+1)
        return self.up2(x)  # (B, 1, r, c)


class DiscriminatorStream(nn.Module):
    """One layer's discriminator features: image (B, 1, r, c) and occupancy (B, 1) -> (B, n_features)."""

    def __init__(self, shape: tuple[int, int], config: CaloGANConfig, local: bool) -> None:
        super().__init__()
        slope = config.leaky_slope
        c0, *rest = config.disc_channels
        layers: list[nn.Module] = [Conv2dSame(1, c0, 2), nn.LeakyReLU(slope)]
        size, c_in = tuple(shape), c0
        for c_out, kernel, stride in zip(rest, (3, 2, 2), ((1, 2), (1, 1), (1, 2))):
            padded = (size[0] + 2, size[1] + 2)
            lc = LocallyConnected2d(c_in, c_out, padded, kernel, stride) if local else nn.Conv2d(c_in, c_out, kernel, stride)
            layers += [nn.ZeroPad2d(1), lc, nn.LeakyReLU(slope), _batch_norm(c_out)]
            size = ((padded[0] - kernel) // stride[0] + 1, (padded[1] - kernel) // stride[1] + 1)
            c_in = c_out
        self.body = nn.Sequential(*layers)
        _keras_init(self.body)
        n = c_in * size[0] * size[1]
        k, d = config.minibatch_kernels, config.minibatch_dim
        self.mbd = MinibatchDiscrimination(n, k, d) if config.minibatch_features else None
        self.sparsity_mbd = MinibatchDiscrimination(1, k, d) if config.sparsity_features else None
        self.n_features = n + (k if self.mbd is not None else 0) + (1 + k if self.sparsity_mbd is not None else 0)

    def forward(self, image: torch.Tensor, occupancy: torch.Tensor) -> torch.Tensor:
        x = self.body(image).flatten(1)  # (B, n)
        out = [x]
        if self.mbd is not None:
            out.append(self.mbd(x))
        if self.sparsity_mbd is not None:
            out += [occupancy, self.sparsity_mbd(occupancy)]
        return torch.cat(out, dim=1)


class CaloGAN(GANModel):
    """The CaloGAN of Paganini, de Oliveira and Nachman for any layered geometry.

    ``forward(cond, z)`` maps physical conditions (B, n_cond) [E GeV, particle one-hot] and
    noise (B, latent_dim) to (B, n_cells) showers in model space, which must be linear in the
    cell energies with zero at zero (``transform`` with ``log: false`` and ``scale`` ``none``
    or ``max``; the paper's is GeV: ``energy: gev, scale: none``). See ``CaloGANConfig``.

    >>> from calogan.geometry import preset
    >>> from calogan.transforms import ShowerTransform, TransformConfig
    >>> g = preset("calogan")
    >>> t = ShowerTransform(TransformConfig(energy="gev", scale="none"), [0.0] * g.n_cells, [1.0] * g.n_cells)
    >>> model = CaloGAN(g, ConditionSpec(), t, CaloGANConfig(latent_dim=8)).eval()
    >>> model(torch.tensor([[10.0], [50.0]])).shape
    torch.Size([2, 504])
    """

    family = "calogan"
    config_class = CaloGANConfig
    local = True  # locally-connected layers; the conditional CaloGAN uses convolutions

    def __init__(self, geometry, conditions: ConditionSpec, transform, config: CaloGANConfig) -> None:
        super().__init__(geometry, conditions, transform, config)
        self._check_inputs()
        c = config
        layers = geometry.layers
        self.n_classes = len(conditions.particles) if len(conditions.particles) > 1 else 0
        n_in = self._generator_input_dim()
        self.gen_streams = nn.ModuleList(GeneratorStream(n_in, layer.shape, c, self.local) for layer in layers)
        self.attention = (
            nn.ModuleList(LayerAttention(prev.shape, layer.shape, local=self.local) for prev, layer in zip(layers[:-1], layers[1:]))
            if c.attention
            else None
        )
        # ACGAN: a class embedding multiplies the latent vector (Hadamard product, as in the paper's code).
        self.class_embedding = nn.Embedding(self.n_classes, c.latent_dim) if self.n_classes else None
        if self.class_embedding is not None:
            nn.init.xavier_normal_(self.class_embedding.weight)
        self.disc_streams = nn.ModuleList(DiscriminatorStream(layer.shape, c, self.local) for layer in layers)
        n_layers = geometry.n_layers
        self.energy_mbd = MinibatchDiscrimination(n_layers, c.minibatch_kernels, c.minibatch_dim)
        n_feat = sum(s.n_features for s in self.disc_streams) + n_layers + 3 + c.minibatch_kernels
        self.head = nn.Linear(n_feat, 1)
        self.class_head = nn.Linear(n_feat, self.n_classes) if self.n_classes else None
        _keras_init(self.head)
        if self.class_head is not None:
            _keras_init(self.class_head)
        self.e_max = float(conditions.ranges[0][1])
        # f = E_tot / E expected of a good shower; fitted by prepare() when the config says null.
        self.register_buffer("sampling_fraction", torch.tensor(float(c.sampling_fraction or 1.0)))

    # -- checks and hooks the conditional CaloGAN overrides ---------------------------------

    def _check_transform(self) -> None:
        t = self.transform.config
        if t.log or t.scale not in ("none", "max"):
            raise ConfigError(
                f"the {self.family} generator ends in a ReLU, so its model space must be linear in the cell energies with zero at zero: "
                f"use transform log: false and scale: none or max (got log: {str(t.log).lower()}, scale: {t.scale})"
            )
        if self.transform.n_cells != self.geometry.n_cells:
            raise ConfigError(f"transform has {self.transform.n_cells} cells, geometry {self.geometry.name!r} has {self.geometry.n_cells}")

    def _check_inputs(self) -> None:
        self._check_transform()
        if len(self.conditions.keys) > 1:
            raise ConfigError(
                f"the calogan family is conditioned on e_inc (and the particle) only, got conditions {list(self.conditions.keys)}; "
                "use family cond_calogan for x0, y0, theta, phi"
            )

    def _generator_input_dim(self) -> int:
        return self.config.latent_dim

    def _generator_input(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, n_in): z * E / E_max (the paper's z * E / 100), times the class embedding."""
        h = z * (cond[:, :1] / self.e_max)
        if self.class_embedding is not None:
            h = h * self.class_embedding(self._labels(cond))
        return h

    def _smear(self, i: int, image: torch.Tensor) -> torch.Tensor:
        return image

    def _occupancy(self, cells_gev: torch.Tensor) -> torch.Tensor:
        """(B, r, c) GeV -> (B, 1): fraction of cells with energy (no gradient, as in the paper)."""
        return hard_sparsity(cells_gev).unsqueeze(1)

    def _attribute_terms(self, out: dict, cond: torch.Tensor, logs: dict, prefix: str) -> torch.Tensor | float:
        return 0.0

    # -- the contract -------------------------------------------------------------------

    def prepare(self, data: ShowerData) -> None:
        """Fit the sampling fraction f = sum(E_tot E) / sum(E^2) when the config leaves it null."""
        if self.config.sampling_fraction is not None:
            return
        e_tot = data.cells.astype(np.float64).sum(axis=1) / 1000.0  # GeV
        f = float((e_tot * data.e_inc).sum() / (data.e_inc**2).sum())
        if not f > 0:
            raise ConfigError(f"cannot fit the sampling fraction: the training showers deposit no energy (E_tot/E = {f})")
        self.sampling_fraction.fill_(f)

    def forward(self, cond: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = self.latent(cond.shape[0])
        h = self._generator_input(cond, z)
        images, previous = [], None
        for i, stream in enumerate(self.gen_streams):
            x = self._smear(i, stream(h))  # (B, 1, r, c) before the ReLU
            if self.attention is not None and previous is not None:
                x = self.attention[i - 1](x, previous)
            images.append(torch.relu(x).squeeze(1))
            previous = x
        return self.geometry.flatten(images)

    def discriminator_loss(self, real: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            fake = self(cond)
        # real and fake in separate passes: batch norm and minibatch discrimination see one kind at a time
        out_real, out_fake = self.discriminate(real, cond), self.discriminate(fake, cond)
        loss = bce_discriminator_loss(out_real["logit"], out_fake["logit"], flip=self.config.label_flip)
        logs = {
            "d_real": torch.sigmoid(out_real["logit"]).mean().detach(),
            "d_fake": torch.sigmoid(out_fake["logit"]).mean().detach(),
        }
        if self.class_head is not None:
            labels = self._labels(cond)
            aux = nn.functional.cross_entropy(out_real["classes"], labels) + nn.functional.cross_entropy(
                out_fake["classes"], flip_classes(labels, self.n_classes, self.config.acgan_flip)
            )
            loss = loss + self.config.acgan_weight * aux
            logs["d_class"] = aux.detach()
        loss = loss + self._attribute_terms(out_real, cond, logs, "d")
        return loss, logs

    def generator_loss(self, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.discriminate(self(cond), cond)
        adv = bce_generator_loss(out["logit"])
        # |E_tot - f E| / f: in incident-equivalent GeV, like the discriminator's energy features,
        # so that lambda_e weighs a relative energy error the same on _active (f ~ 0.19) as on
        # the paper's all-deposit data (f = 1), instead of 1/f times less.
        energy = absolute_energy_loss(out["e_tot"] / self.sampling_fraction, cond[:, 0])
        loss = adv + self.config.lambda_e * energy
        logs = {"g_adv": adv.detach(), "g_energy": energy.detach()}
        if self.class_head is not None:
            aux = nn.functional.cross_entropy(out["classes"], self._labels(cond))
            loss = loss + self.config.acgan_weight * aux
            logs["g_class"] = aux.detach()
        loss = loss + self._attribute_terms(out, cond, logs, "g")
        return loss, logs

    def generator_parameters(self):
        params = [*self.gen_streams.parameters()]
        if self.attention is not None:
            params += [*self.attention.parameters()]
        if self.class_embedding is not None:
            params += [*self.class_embedding.parameters()]
        return params

    def discriminator_parameters(self):
        generator = {id(p) for p in self.generator_parameters()}
        return [p for p in self.parameters() if id(p) not in generator]

    # -- the discriminator --------------------------------------------------------------

    def discriminate(self, x: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """Discriminator outputs for model-space showers x (B, n_cells) at physical ``cond``.

        Returns ``logit`` (B,) real-vs-fake, ``e_tot`` (B,) deposited GeV, ``cells`` (B,
        n_cells) GeV, ``features`` (B, F) and ``classes`` (B, n_classes) with an ACGAN head.
        """
        e_inc = cond[:, 0]
        cells = self.transform.inverse(x, e_inc) / 1000.0  # (B, n_cells) GeV, differentiable
        images, layers = self.geometry.split(x), self.geometry.split(cells)
        feats = [stream(img.unsqueeze(1), self._occupancy(lay)) for stream, img, lay in zip(self.disc_streams, images, layers)]
        energies = torch.stack([lay.sum(dim=(1, 2)) for lay in layers], dim=1)  # (B, L) GeV
        e_tot = energies.sum(dim=1)
        # incident-equivalent energies, scaled as in the paper (GeV / 10 and / 100 at E_max = 100 GeV)
        scale = 100.0 / self.e_max
        eq = energies / self.sampling_fraction * scale
        well = (e_tot / self.sampling_fraction - e_inc).abs().unsqueeze(1)  # (B, 1) GeV
        glob = [
            eq / 10.0,
            eq.sum(dim=1, keepdim=True) / 100.0,
            well * scale,
            10.0 * (well > self.config.energy_well_threshold).to(well.dtype),
            self.energy_mbd(eq / 10.0),
        ]
        features = torch.cat(feats + glob, dim=1)
        out = {"logit": self.head(features).squeeze(1), "e_tot": e_tot, "cells": cells, "features": features}
        if self.class_head is not None:
            out["classes"] = self.class_head(features)
        return out

    def _labels(self, cond: torch.Tensor) -> torch.Tensor:
        """(B,) class index of each shower from the one-hot block at the end of ``cond``."""
        return cond[:, len(self.conditions.keys) :].argmax(dim=1)

    def n_parameters(self) -> dict[str, int]:
        """Trainable parameter counts of the generator and the discriminator."""
        return {
            "generator": sum(p.numel() for p in self.generator_parameters()),
            "discriminator": sum(p.numel() for p in self.discriminator_parameters()),
        }
