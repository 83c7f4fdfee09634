"""The conditional variational autoencoder on flat cells, with an optional inverse autoregressive flow.

The VAE that ATLAS compared its GANs with ("Deep generative models for fast photon shower
simulation in ATLAS", arXiv:2210.06204; ATL-SOFT-PUB-2018-001; the GAN of AtlFast3,
arXiv:2109.02551, ATL-SOFT-PUB-2020-006), whose latent space, not Gaussian on its own, is
made closer to Gaussian by inverse autoregressive flow layers (Kingma et al., "Improved
Variational Inference with Inverse Autoregressive Flow", arXiv:1606.04934).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from calogan.errors import ConfigError
from calogan.geometry import Geometry
from calogan.losses import gaussian_kl
from calogan.models.base import ConditionSpec, GANModel
from calogan.models.blocks import Swish, cell_noise_features, latent_cell_noise

__all__ = ["VAE", "IAFStep", "MaskedLinear", "VAEConfig"]

_ACTIVATIONS = ("relu", "leaky_relu", "elu", "silu", "swish")
_OUTPUTS = ("sigmoid", "relu", "linear")
_RECONSTRUCTIONS = ("bce", "mse", "gaussian")


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of the conditional VAE (defaults: the ATLAS photon VAE's shape).

    Encoder q(z | x, c): [cells, conditions] -> ``encoder_hidden`` dense layers with
    ``activation`` -> mean and log-variance of a ``latent_dim`` Gaussian. With
    ``iaf_layers`` > 0 its sample z_0 goes through that many inverse autoregressive flow
    steps (``IAFStep``: a masked autoregressive network of ``iaf_hidden`` units per hidden
    layer, fed a ``context_dim`` summary of the shower from the encoder), each followed by a
    reversal of the latent order: a posterior more flexible than a diagonal Gaussian, so
    that the showers' latent codes can fill the N(0, 1) prior the generator samples from.

    Decoder p(x | z, c): [z, conditions] -> ``decoder_hidden`` -> n_cells with
    ``output_activation``: ``sigmoid`` (model-space cells in [0, 1]: the transform's
    ``scale: max``), ``relu`` (clipped at the transform's empty-cell value: exact zeros) or
    ``linear``. Generation decodes z ~ N(0, 1): the decoder's output is the shower.

    ``reconstruction``: ``bce``, binary cross-entropy (needs the sigmoid output), or ``mse``,
    squared error, of the decoder's output (the ATLAS VAE: a shower is the decoder's mean,
    its fluctuations live in the latent only); or ``gaussian``, where the decoder also gives
    each cell a standard deviation sigma(z, c) in model space, the loss is the Gaussian
    negative log-likelihood, and a shower is the mean plus sigma times per-cell noise drawn
    from z itself (``latent_cell_noise``, as the WGAN's cell noise), before the output
    activation, rescaled layer by layer to the layer energies of the mean: the cell-by-cell
    fluctuations, and the empty cells a ReLU output makes, that a mean cannot show, without
    the spread of the layer energies that independent cell noise would add (the latent
    carries those). In training the reconstruction carries random noise of the same kind.

    Loss per shower: the reconstruction summed over cells plus
    ``kl_weight`` times the KL divergence of the posterior from N(0, 1) (in closed form
    without the flow, the one-sample estimate log q(z_T | x) - log p(z_T) with it); plus
    ``energy_weight`` x |E_tot - E_tot'| / E_inc and ``layer_weight`` x sum_l |E_l - E_l'| /
    E_inc between the shower and its reconstruction in MeV (the ATLAS VAE's energy terms).
    """

    latent_dim: int = 10
    encoder_hidden: tuple[int, ...] = (256, 128, 64)
    decoder_hidden: tuple[int, ...] = (64, 128, 256)
    activation: str = "relu"
    output_activation: str = "sigmoid"
    reconstruction: str = "bce"
    kl_weight: float = 1.0
    iaf_layers: int = 0
    iaf_hidden: int = 64
    context_dim: int = 16
    energy_weight: float = 0.0
    layer_weight: float = 0.0

    def __post_init__(self) -> None:
        def check(name, value, allowed):
            if value not in allowed:
                raise ConfigError(f"model.{name} must be one of {', '.join(allowed)}, got {value!r}")

        check("activation", self.activation, _ACTIVATIONS)
        check("output_activation", self.output_activation, _OUTPUTS)
        check("reconstruction", self.reconstruction, _RECONSTRUCTIONS)
        if self.reconstruction == "bce" and self.output_activation != "sigmoid":
            raise ConfigError(
                f"model.reconstruction 'bce' needs model.output_activation 'sigmoid' (outputs in [0, 1]), got {self.output_activation!r}"
            )
        for name in ("latent_dim", "iaf_hidden", "context_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.iaf_layers < 0:
            raise ConfigError(f"model.iaf_layers must be >= 0, got {self.iaf_layers}")
        if self.iaf_layers and self.latent_dim < 2:
            raise ConfigError(
                f"model.iaf_layers needs model.latent_dim >= 2 (an autoregressive flow of one variable is a scaling), got {self.latent_dim}"
            )
        for name in ("encoder_hidden", "decoder_hidden"):
            sizes = getattr(self, name)
            if not sizes or any(s < 1 for s in sizes):
                raise ConfigError(f"model.{name} must be a non-empty list of positive layer sizes, got {list(sizes)}")
        for name in ("kl_weight", "energy_weight", "layer_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")


def _activation(name: str, width: int) -> nn.Module:
    if name == "swish":
        return Swish(width)
    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU, "silu": nn.SiLU}[name]()


def _mlp(n_in: int, hidden: tuple[int, ...], activation: str) -> nn.Sequential:
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), _activation(activation, h)]
        width = h
    return nn.Sequential(*layers)


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 ``mask`` (out_features, in_features):
    the connections of a masked autoencoder (MADE, Germain et al., arXiv:1502.03509).

    >>> layer = MaskedLinear(2, 2, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    >>> _ = torch.nn.init.ones_(layer.weight), torch.nn.init.zeros_(layer.bias)
    >>> layer(torch.tensor([[3.0, 5.0]])).tolist()  # output 0 sees nothing, output 1 sees input 0
    [[0.0, 3.0]]
    """

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFStep(nn.Module):
    """One inverse autoregressive flow step in the numerically stable form of Kingma et al. (arXiv:1606.04934).

    ``forward(z, h)``: z (B, D) and context h (B, H) -> (z', log_det) with
    [m, s] = MADE(z, h), sigma = sigmoid(s + 1), z' = sigma * z + (1 - sigma) * m and
    log_det = sum_i log sigma_i (B,). Output i depends on z_1 .. z_{i-1} only, so the
    Jacobian dz'/dz is lower triangular with diagonal sigma: its log-determinant is exact.
    The +1 is the paper's "forget gate" bias, which keeps sigma away from 0 at the start.

    >>> step = IAFStep(3, hidden=8, context=2)
    >>> z, log_det = step(torch.zeros(4, 3), torch.zeros(4, 2))
    >>> z.shape, log_det.shape
    (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(self, dim: int, hidden: int, context: int) -> None:
        super().__init__()
        degree_in = torch.arange(1, dim + 1)  # variable i has degree i
        degree_hidden = torch.arange(hidden) % max(dim - 1, 1) + 1  # in 1 .. D-1
        self.inp = MaskedLinear(dim, hidden, degree_hidden[:, None] >= degree_in[None, :])
        self.context = nn.Linear(context, hidden)  # the context reaches every hidden unit
        self.mid = MaskedLinear(hidden, hidden, degree_hidden[:, None] >= degree_hidden[None, :])
        out_mask = degree_in[:, None] > degree_hidden[None, :]  # strictly earlier variables only
        self.out = MaskedLinear(hidden, 2 * dim, torch.cat([out_mask, out_mask]))
        with torch.no_grad():  # start near z' = sigma z: small outputs, yet gradients reach every layer
            self.out.weight.mul_(0.01)
        nn.init.zeros_(self.out.bias)
        self.act = nn.ELU()

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.act(self.inp(z) + self.context(h))
        a = self.act(self.mid(a))
        m, s = self.out(a).chunk(2, dim=1)  # (B, D) each
        sigma = torch.sigmoid(s + 1.0)
        return sigma * z + (1.0 - sigma) * m, F.logsigmoid(s + 1.0).sum(dim=1)


class VAE(GANModel):
    """Conditional VAE on the flat cell vector of any geometry, generating like the GANs.

    ``forward(cond, z)`` decodes noise z (B, latent_dim) ~ N(0, 1) at physical conditions
    (B, n_cond) into (B, n_cells) showers in model space, so that generation, ONNX export,
    the benchmark and the fast-simulation backends use it like any generator. Training
    needs the real showers (``adversarial = False``): ``generator_loss(cond, real)`` is the
    negative evidence lower bound of the batch plus the energy terms (see ``VAEConfig``).

    >>> from calogan.geometry import preset
    >>> from calogan.transforms import ShowerTransform, TransformConfig
    >>> g = preset("atlas-barrel")
    >>> t = ShowerTransform(TransformConfig(), np.zeros(g.n_cells), np.ones(g.n_cells))
    >>> model = VAE(g, ConditionSpec(), t, VAEConfig(iaf_layers=2)).eval()
    >>> model(torch.tensor([[10.0], [50.0]])).shape
    torch.Size([2, 266])
    """

    family = "vae"
    config_class = VAEConfig
    adversarial = False

    def __init__(self, geometry: Geometry, conditions: ConditionSpec, transform, config: VAEConfig) -> None:
        super().__init__(geometry, conditions, transform, config)
        n_cells, n_cond, c = geometry.n_cells, conditions.n_cond, config
        if transform.n_cells != n_cells:
            raise ConfigError(f"transform has {transform.n_cells} cells, geometry {geometry.name!r} has {n_cells}")
        if c.output_activation == "sigmoid" and (transform.config.log or transform.config.scale == "standard"):
            raise ConfigError(
                "model.output_activation 'sigmoid' makes model-space cells in [0, 1]: use transform log: false with scale: max "
                f"(got log: {str(transform.config.log).lower()}, scale: {transform.config.scale})"
            )
        self.encoder = _mlp(n_cells + n_cond, c.encoder_hidden, c.activation)
        width = c.encoder_hidden[-1]
        self.to_mu = nn.Linear(width, c.latent_dim)
        self.to_log_var = nn.Linear(width, c.latent_dim)
        self.to_context = nn.Linear(width, c.context_dim) if c.iaf_layers else None
        self.flow = nn.ModuleList(IAFStep(c.latent_dim, c.iaf_hidden, c.context_dim) for _ in range(c.iaf_layers))
        self.gaussian = c.reconstruction == "gaussian"
        n_out = 2 * n_cells if self.gaussian else n_cells  # (mean, log sigma) per cell
        self.decoder = nn.Sequential(_mlp(c.latent_dim + n_cond, c.decoder_hidden, c.activation), nn.Linear(c.decoder_hidden[-1], n_out))
        if self.gaussian:
            freq, phase = cell_noise_features(c.latent_dim, n_cells)
            self.register_buffer("noise_freq", freq)
            self.register_buffer("noise_phase", phase)
        # Largest model-space value of each cell in the training data (prepare), plus one: the
        # decoder's output is capped there, so that no shower of the log transform overflows.
        self.register_buffer("upper", torch.full((n_cells,), float("inf")))
        membership = np.zeros((n_cells, geometry.n_layers), np.float32)
        for i in range(geometry.n_layers):
            membership[geometry.layer_slice(i), i] = 1.0
        self.register_buffer("layer_matrix", torch.from_numpy(membership), persistent=False)

    # -- the contract ---------------------------------------------------------------------

    def prepare(self, data) -> None:
        """Cap each cell's output one unit above its largest model-space value in the training showers."""
        top = np.full(self.geometry.n_cells, -np.inf, np.float32)
        for a in range(0, len(data), 4096):  # in chunks: no model-space copy of all the showers
            x = self.transform.forward(data.cells[a : a + 4096], data.e_inc[a : a + 4096])  # (n, n_cells) float32
            top = np.maximum(top, x.max(axis=0))
        self.upper.copy_(torch.from_numpy(top + 1.0).to(self.upper))

    def forward(self, cond: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = self.latent(cond.shape[0])
        noise = latent_cell_noise(z, self.noise_freq, self.noise_phase) if self.gaussian else None
        return self.decode(z, cond, noise)[0]

    def generator_loss(self, cond: torch.Tensor, real: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative ELBO of real model-space showers (B, n_cells) at ``cond`` (B, n_cond), batch mean."""
        if real is None:
            raise ConfigError("the vae family learns from real showers: generator_loss needs the real batch")
        c = self.config
        cn = self.conditions.normalise(cond)
        z, kl = self.encode(real, cn)
        noise = torch.randn_like(real) if self.gaussian else None
        x, mean, log_sigma = self.decode(z, cond, noise)  # (B, n_cells) each: reconstruction, its mean and log sigma
        if self.gaussian:
            rec = (0.5 * ((real - mean) * torch.exp(-log_sigma)) ** 2 + log_sigma).sum(dim=1)
        elif c.reconstruction == "bce":
            with torch.autocast(device_type=x.device.type, enabled=False):  # BCE is unsafe in reduced precision
                rec = F.binary_cross_entropy(x.float(), real.float().clamp(0.0, 1.0), reduction="none").sum(dim=1)
        else:
            rec = ((x - real) ** 2).sum(dim=1)
        loss = (rec + c.kl_weight * kl).mean()
        logs = {"rec": rec.mean().detach(), "kl": kl.mean().detach()}
        if c.energy_weight or c.layer_weight:
            with torch.autocast(device_type=x.device.type, enabled=False):
                e_inc = cond[:, 0].float()
                scale = 1.0 / (1000.0 * e_inc[:, None])  # MeV -> fraction of E_inc
                layers = self.transform.inverse(x.float(), e_inc) @ self.layer_matrix * scale  # (B, L)
                target = self.transform.inverse(real.float(), e_inc) @ self.layer_matrix * scale
            d_total = (layers.sum(dim=1) - target.sum(dim=1)).abs().mean()
            d_layers = (layers - target).abs().sum(dim=1).mean()
            loss = loss + c.energy_weight * d_total + c.layer_weight * d_layers
            logs.update(e_tot=d_total.detach(), e_layers=d_layers.detach())
        return loss, logs

    def discriminator_loss(self, real: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise ConfigError("the vae family has no discriminator")

    def generator_parameters(self):
        return list(self.parameters())

    def discriminator_parameters(self):
        return []

    # -- encoder and decoder --------------------------------------------------------------

    def encode(self, x: torch.Tensor, cn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A posterior sample z (B, D) of model-space showers x (B, n_cells) at normalised
        conditions cn (B, n_cond), and the KL term of each shower (B,)."""
        h = self.encoder(torch.cat([x, cn.to(x.dtype)], dim=1))
        mu, log_var = self.to_mu(h), self.to_log_var(h).clamp(-20.0, 10.0)
        eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * log_var) * eps
        if not self.flow:
            return z, gaussian_kl(mu, log_var)
        # log q(z_0 | x) of the Gaussian sample, then each step's log-determinant
        log_q = -0.5 * (log_var + eps**2 + math.log(2 * math.pi)).sum(dim=1)
        context = self.to_context(h)
        for step in self.flow:
            z, log_det = step(z, context)
            log_q = log_q - log_det
            z = z.flip(1)  # the next step conditions on the other end first
        log_p = -0.5 * (z**2 + math.log(2 * math.pi)).sum(dim=1)
        return z, log_q - log_p

    def decode(
        self, z: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Model-space showers (B, n_cells) of latent z (B, D) at physical conditions cond (B, n_cond).

        Returns (shower, mean, log sigma). Without the ``gaussian`` reconstruction the shower
        is the output activation of the decoder's mean (and log sigma is None). With it, the
        shower is the output activation of mean + sigma * noise (``noise`` (B, n_cells)),
        rescaled layer by layer to the layer energies of the mean: the noise moves energy
        between the cells of a layer, the latent alone sets how much each layer holds.
        """
        out = self.decoder(torch.cat([z, self.conditions.normalise(cond).to(z.dtype)], dim=1))
        if not self.gaussian:
            return self._output(out), out, None
        n = self.geometry.n_cells
        mean, log_sigma = out[:, :n], out[:, n:].clamp(-9.0, 3.0)
        shower = self._output(mean + torch.exp(log_sigma) * noise.to(mean.dtype))
        with torch.autocast(device_type=z.device.type, enabled=False):
            e_inc = cond[:, 0].float()
            smooth = self.transform.inverse(self._output(mean).float(), e_inc)  # (B, n_cells) MeV
            noisy = self.transform.inverse(shower.float(), e_inc)
            ratio = (smooth @ self.layer_matrix) / (noisy @ self.layer_matrix).clamp_min(1e-6)  # (B, n_layers)
            shower = self.transform.forward(noisy * (ratio @ self.layer_matrix.T), e_inc)
        return shower, mean, log_sigma

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """The output activation, below each cell's cap."""
        x = torch.minimum(x, self.upper.to(x.dtype))
        act = self.config.output_activation
        if act == "sigmoid":
            return torch.sigmoid(x)
        if act == "relu":  # clipped at the empty-cell value: exact zeros, never negative energies
            return torch.maximum(x, self.transform.zero_point().to(x.dtype))
        return x
