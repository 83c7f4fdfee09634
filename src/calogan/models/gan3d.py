"""The 3D convolutional GAN for voxel showers, after the CERN 3D GAN.

Khattak, Vallecorsa and Carminati, "Three Dimensional Energy Parametrized Generative
Adversarial Networks for Electromagnetic Shower Simulation" (IEEE ICIP 2018), and the angle-
conditioned version (Khattak, Vallecorsa, Carminati and Khan, "Fast simulation of a high
granularity calorimeter by generative adversarial networks", Eur. Phys. J. C, 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.geometry import Geometry
from calogan.losses import bce_discriminator_loss, bce_generator_loss, mean_absolute_percentage_error
from calogan.models.base import ConditionSpec, GANModel

__all__ = ["GAN3D", "GAN3DConfig", "check_voxel_geometry", "polyval"]


@dataclass(frozen=True)
class GAN3DConfig:
    """Hyper-parameters of the 3D GAN; the defaults follow the open code of the CERN 3D GAN.

    Generator: the latent z (``latent_dim``, N(0, 1)) is multiplied by E / ``energy_scale``
    (E in GeV; the open code's ``noise * E / 100``), so that the energy sets the scale of
    the input rather than entering as one more number. Further conditions (angles, impact
    point: normalised; a particle one-hot) are appended to it, as the angle-conditioned
    versions append the angle; ``append_energy`` appends the normalised log E too. Then a
    dense layer to a grid of a quarter of the voxel block per axis with ``gen_channels[0]``
    channels, and three 3D convolutions (``gen_kernel``, 'same' padding) to
    ``gen_channels[1:]`` channels, each with LeakyReLU, the first two with batch norm and a
    2x nearest upsampling; the grid is centre-cropped to the block and a last convolution
    makes one channel, clipped by a ReLU at the transform's empty-cell value (exact zeros).
    ``gen_last_upsample: transposed`` runs the third convolution at half resolution and
    replaces the last upsampling and convolution by a transposed convolution (kernel 2,
    stride 2) to one channel: about 8 times fewer operations in the costliest layers, for
    CPUs, where 3D convolutions of few channels run at a few GFLOP/s.

    Discriminator on the model-space block (1, L, R, C): 3D convolutions of
    ``disc_channels`` channels (``disc_kernel``, 'same' padding, strides ``disc_strides``),
    each with LeakyReLU and dropout ``dropout``, all but the first with batch norm, then
    average pooling by ``pool`` and three heads: real/fake (a logit), the incident-energy
    regression (E / ``energy_scale``) and, with conditions beyond the energy, their
    regression (normalised values). Beside them stands the summed energy of the shower: the
    open code's fixed ``ecal`` output.

    Losses with the open code's weights: ``gan_weight`` x binary cross-entropy (labels
    flipped with probability ``label_flip``), ``aux_weight`` x the mean absolute percentage
    error of the energy regression, on real and fake showers alike, ``ecal_weight`` x the
    percentage error of the generated summed energy from its expected value, a polynomial of
    degree ``ecal_fit_degree`` in log E of E_tot / E fitted on the training showers (the
    open code's fit of the summed energy), and ``condition_weight`` x the mean squared error
    of the other conditions' regression.
    """

    latent_dim: int = 200
    energy_scale: float = 100.0
    append_energy: bool = False
    gen_channels: tuple[int, int, int, int] = (8, 64, 6, 6)
    gen_kernel: int = 5
    gen_last_upsample: str = "nearest"
    disc_channels: tuple[int, ...] = (32, 8, 8, 8)
    disc_kernel: int = 5
    disc_strides: tuple[int, ...] = (1, 1, 1, 1)
    dropout: float = 0.2
    pool: int = 2
    leaky_slope: float = 0.3
    gan_weight: float = 2.0
    aux_weight: float = 0.1
    ecal_weight: float = 0.1
    condition_weight: float = 0.1
    label_flip: float = 0.05
    ecal_fit_degree: int = 2

    def __post_init__(self) -> None:
        for name in ("latent_dim", "gen_kernel", "disc_kernel", "pool"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gen_kernel", "disc_kernel"):
            if getattr(self, name) % 2 == 0:
                raise ConfigError(f"model.{name} must be odd ('same' padding keeps the block centred), got {getattr(self, name)}")
        if self.gen_last_upsample not in ("nearest", "transposed"):
            raise ConfigError(f"model.gen_last_upsample must be nearest or transposed, got {self.gen_last_upsample!r}")
        if len(self.gen_channels) != 4 or any(c < 1 for c in self.gen_channels):
            raise ConfigError(f"model.gen_channels must be four positive channel counts, got {list(self.gen_channels)}")
        if not self.disc_channels or any(c < 1 for c in self.disc_channels):
            raise ConfigError(f"model.disc_channels must be a non-empty list of positive channel counts, got {list(self.disc_channels)}")
        if len(self.disc_strides) != len(self.disc_channels) or any(s < 1 for s in self.disc_strides):
            raise ConfigError(
                f"model.disc_strides must give one positive stride per discriminator layer ({len(self.disc_channels)}), got {list(self.disc_strides)}"
            )
        if not self.energy_scale > 0:
            raise ConfigError(f"model.energy_scale must be > 0 (GeV), got {self.energy_scale}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.label_flip < 0.5:
            raise ConfigError(f"model.label_flip must be in [0, 0.5), got {self.label_flip}")
        for name in ("gan_weight", "aux_weight", "ecal_weight", "condition_weight", "leaky_slope"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if self.ecal_fit_degree < 0:
            raise ConfigError(f"model.ecal_fit_degree must be >= 0, got {self.ecal_fit_degree}")


def check_voxel_geometry(geometry: Geometry, family: str = "gan3d") -> tuple[int, int, int]:
    """(L, R, C) of a single-block voxel geometry: every layer the same 2D grid.

    Cartesian layers must share their shape; polar (CaloChallenge) layers their shape and
    radial bin edges, so that the layers stack into one regular grid. Anything else is
    refused with the layers that differ.

    >>> from calogan.geometry import preset
    >>> check_voxel_geometry(preset("voxel-25"))
    (25, 25, 25)
    """
    first = geometry.layers[0]
    for layer in geometry.layers[1:]:
        same = layer.shape == first.shape and layer.binning == first.binning
        if same and first.binning == "polar":
            same = layer.r_edges == first.r_edges
        if not same:
            what = (
                f"layers {first.name!r} {first.binning} {first.shape[0]}x{first.shape[1]} and "
                f"{layer.name!r} {layer.binning} {layer.shape[0]}x{layer.shape[1]}"
            )
            if layer.shape == first.shape and layer.binning == first.binning:
                what += " have different radial bin edges"
            raise ConfigError(
                f"model family {family} needs a single-block voxel geometry (every layer the same 2D grid, such as voxel-25 "
                f"or a regular CaloChallenge binning); geometry {geometry.name!r} differs: {what}"
            )
    return (geometry.n_layers, *first.shape)


def polyval(coeffs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Horner's sum c_0 u^k + ... + c_k (highest power first, as numpy.polyfit returns them).

    >>> polyval(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([3.0])).item()
    19.0
    """
    out = torch.zeros_like(u)
    for c in coeffs:
        out = out * u + c
    return out


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)


class Generator3d(nn.Module):
    """(B, n_in) -> (B, 1, L, R, C) pre-activation voxel block."""

    def __init__(self, n_in: int, block: tuple[int, int, int], config: GAN3DConfig) -> None:
        super().__init__()
        c0, c1, c2, c3 = config.gen_channels
        k, slope = config.gen_kernel, config.leaky_slope
        self.block = block
        self.grid = tuple(-(-n // 4) for n in block)  # a quarter of the block, rounded up
        self.channels = c0
        self.dense = nn.Linear(n_in, c0 * int(np.prod(self.grid)))
        layers: list[nn.Module] = [
            _conv(c0, c1, k),
            nn.LeakyReLU(slope),
            nn.BatchNorm3d(c1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(c1, c2, k),
            nn.LeakyReLU(slope),
            nn.BatchNorm3d(c2),
        ]
        self.transposed = config.gen_last_upsample == "transposed"
        if self.transposed:  # the last layers at half resolution, one transposed convolution up
            layers += [_conv(c2, c3, k), nn.LeakyReLU(slope), nn.ConvTranspose3d(c3, 1, 2, stride=2)]
        else:  # the open code's: upsample, then convolutions at full resolution (after the crop)
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.head = nn.Sequential(_conv(c2, c3, k), nn.LeakyReLU(slope), _conv(c3, 1, k))
        self.body = nn.Sequential(*layers)
        for m in self.modules():  # the open code's he_uniform
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_uniform_(m.weight, a=slope)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.dense(h).view(-1, self.channels, *self.grid)  # (B, c0, L/4, R/4, C/4)
        x = self.body(x)  # (B, c2 or 1, 4 ceil(L/4), ...)
        (a, b, c), (n0, n1, n2) = self.block, x.shape[2:]
        i, j, k = (n0 - a) // 2, (n1 - b) // 2, (n2 - c) // 2
        x = x[:, :, i : i + a, j : j + b, k : k + c]  # centre crop to the block
        return x if self.transposed else self.head(x)  # (B, 1, L, R, C)


class Discriminator3d(nn.Module):
    """(B, 1, L, R, C) -> (B, F) features."""

    def __init__(self, block: tuple[int, int, int], config: GAN3DConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 1, np.array(block)
        for i, (c_out, stride) in enumerate(zip(config.disc_channels, config.disc_strides)):
            layers += [_conv(c_in, c_out, config.disc_kernel, stride), nn.LeakyReLU(config.leaky_slope)]
            if i > 0:
                layers.append(nn.BatchNorm3d(c_out))
            layers.append(nn.Dropout(config.dropout))
            c_in, size = c_out, (size - 1) // stride + 1
        pool = min(config.pool, int(size.min()))
        layers += [nn.AvgPool3d(pool), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.n_features = c_in * int(np.prod(size // pool))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.body(image)


class GAN3D(GANModel):
    """The CERN 3D GAN for single-block voxel geometries (voxel-25, regular CaloChallenge grids).

    ``forward(cond, z)`` maps physical conditions (B, n_cond) and noise (B, latent_dim) to
    (B, n_cells) showers in model space; the flat cells are the voxel block (L, R, C) in
    layer-major order, so ``x.view(B, 1, L, R, C)`` is the image the 3D convolutions see.
    See ``GAN3DConfig`` for the networks and the losses.

    >>> from calogan.geometry import Geometry, Layer
    >>> from calogan.transforms import ShowerTransform, TransformConfig
    >>> g = Geometry("block", tuple(Layer(f"z{i}", (6, 6), (5.0, 5.0), 3.0) for i in range(5)))
    >>> t = ShowerTransform(TransformConfig(energy="gev", scale="none"), np.zeros(g.n_cells), np.ones(g.n_cells))
    >>> config = GAN3DConfig(latent_dim=8, gen_channels=(4, 4, 4, 4), gen_kernel=3, disc_channels=(4, 4), disc_kernel=3, disc_strides=(1, 1))
    >>> model = GAN3D(g, ConditionSpec(), t, config).eval()
    >>> model(torch.tensor([[10.0], [50.0]])).shape
    torch.Size([2, 180])
    """

    family = "gan3d"
    config_class = GAN3DConfig

    def __init__(self, geometry: Geometry, conditions: ConditionSpec, transform, config: GAN3DConfig) -> None:
        super().__init__(geometry, conditions, transform, config)
        self.block = check_voxel_geometry(geometry, self.family)
        if transform.n_cells != geometry.n_cells:
            raise ConfigError(f"transform has {transform.n_cells} cells, geometry {geometry.name!r} has {geometry.n_cells}")
        c = config
        self.n_extra = conditions.n_cond - 1  # conditions beyond the energy
        n_in = c.latent_dim + self.n_extra + (1 if c.append_energy else 0)
        self.generator = Generator3d(n_in, self.block, c)
        self.discriminator = Discriminator3d(self.block, c)
        n = self.discriminator.n_features
        self.fake_head = nn.Linear(n, 1)
        self.energy_head = nn.Linear(n, 1)
        self.condition_head = nn.Linear(n, self.n_extra) if self.n_extra else None
        # E_tot / E_inc as a polynomial in log(E / GeV), fitted by prepare(); 1 until then.
        coeffs = torch.zeros(c.ecal_fit_degree + 1)
        coeffs[-1] = 1.0
        self.register_buffer("ecal_coeffs", coeffs)

    # -- the contract ---------------------------------------------------------------------

    def prepare(self, data: ShowerData) -> None:
        """Fit the expected summed energy: E_tot / E_inc against log E, least squares."""
        e_inc = np.asarray(data.e_inc, np.float64)
        ratio = data.cells.sum(axis=1, dtype=np.float64) / (1000.0 * e_inc)
        u = np.log(e_inc)
        # a polynomial cannot have more terms than there are distinct energies
        degree = min(self.config.ecal_fit_degree, len(np.unique(u)) - 1)
        fit = np.polyfit(u, ratio, degree) if degree > 0 else np.array([ratio.mean()])
        coeffs = np.zeros(self.config.ecal_fit_degree + 1)
        coeffs[len(coeffs) - len(fit) :] = fit
        if not np.isfinite(coeffs).all() or not ratio.mean() > 0:
            raise ConfigError(f"cannot fit the summed energy of the training showers (mean E_tot/E_inc = {ratio.mean():.3g})")
        self.ecal_coeffs.copy_(torch.from_numpy(coeffs).to(self.ecal_coeffs))

    def forward(self, cond: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = self.latent(cond.shape[0])
        h = self.generator_input(cond, z)
        x = self.generator(h).flatten(1)  # (B, n_cells)
        return torch.maximum(x, self.transform.zero_point().to(x.dtype))  # exact zeros, never below empty

    def generator_input(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, n_in): z * E / energy_scale, then the normalised other conditions (and log E)."""
        parts = [z * (cond[:, :1] / self.config.energy_scale).to(z.dtype)]
        c = self.conditions.normalise(cond).to(z.dtype)
        if self.config.append_energy:
            parts.append(c[:, :1])
        if self.n_extra:
            parts.append(c[:, 1:])
        return torch.cat(parts, dim=1)

    def discriminator_loss(self, real: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        with torch.no_grad():
            fake = self(cond)
        # real and fake in separate passes, as the open code trains on them: batch norm sees one kind at a time
        out_real, out_fake = self.discriminate(real, cond), self.discriminate(fake, cond)
        adv = bce_discriminator_loss(out_real["logit"], out_fake["logit"], flip=c.label_flip)
        target = cond[:, 0] / c.energy_scale
        aux = 0.5 * (
            mean_absolute_percentage_error(out_real["energy"], target) + mean_absolute_percentage_error(out_fake["energy"], target)
        )
        loss = c.gan_weight * adv + c.aux_weight * aux
        logs = {
            "d_real": torch.sigmoid(out_real["logit"]).mean().detach(),
            "d_fake": torch.sigmoid(out_fake["logit"]).mean().detach(),
            "d_aux": aux.detach(),
        }
        if self.condition_head is not None:
            want = self.conditions.normalise(cond)[:, 1:]
            reg = 0.5 * (((out_real["conditions"] - want) ** 2).mean() + ((out_fake["conditions"] - want) ** 2).mean())
            loss = loss + c.condition_weight * reg
            logs["d_cond"] = reg.detach()
        return loss, logs

    def generator_loss(self, cond: torch.Tensor, real: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        out = self.discriminate(self(cond), cond)
        adv = bce_generator_loss(out["logit"])
        aux = mean_absolute_percentage_error(out["energy"], cond[:, 0] / c.energy_scale)
        ecal = mean_absolute_percentage_error(out["e_tot"], self.expected_energy(cond[:, 0]))
        loss = c.gan_weight * adv + c.aux_weight * aux + c.ecal_weight * ecal
        logs = {"g_adv": adv.detach(), "g_aux": aux.detach(), "g_ecal": ecal.detach()}
        if self.condition_head is not None:
            reg = ((out["conditions"] - self.conditions.normalise(cond)[:, 1:]) ** 2).mean()
            loss = loss + c.condition_weight * reg
            logs["g_cond"] = reg.detach()
        return loss, logs

    def generator_parameters(self):
        return list(self.generator.parameters())

    def discriminator_parameters(self):
        params = [*self.discriminator.parameters(), *self.fake_head.parameters(), *self.energy_head.parameters()]
        if self.condition_head is not None:
            params += list(self.condition_head.parameters())
        return params

    # -- helpers --------------------------------------------------------------------------

    def expected_energy(self, e_inc: torch.Tensor) -> torch.Tensor:
        """(B,) GeV: the fitted mean summed energy of showers of incident energy e_inc (B,) GeV."""
        e = e_inc.float()
        return e * polyval(self.ecal_coeffs.float(), torch.log(e))

    def discriminate(self, x: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """Discriminator outputs for model-space showers x (B, n_cells) at physical ``cond``.

        ``logit`` (B,) real vs fake, ``energy`` (B,) the regressed E / energy_scale,
        ``e_tot`` (B,) the summed energy in GeV (differentiable through the transform's
        inverse), ``conditions`` (B, n_cond - 1) the regressed other conditions when there are.
        """
        feats = self.discriminator(x.view(-1, 1, *self.block))
        with torch.autocast(device_type=x.device.type, enabled=False):  # a sum of 10^4 cells wants float32
            e_tot = self.transform.inverse(x.float(), cond[:, 0].float()).sum(dim=1) / 1000.0
        out = {"logit": self.fake_head(feats).squeeze(1), "energy": self.energy_head(feats).squeeze(1), "e_tot": e_tot}
        if self.condition_head is not None:
            out["conditions"] = self.condition_head(feats)
        return out
