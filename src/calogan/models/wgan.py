"""The ATLAS conditional WGAN-GP on flat cells, with a second critic on physics variables.

After Ghosh and Rousseau, "Generative Adversarial Networks for Fast Shower Simulation in ATLAS",
the GAN of AtlFast3 (arXiv:2109.02551; ATL-SOFT-PUB-2020-006).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from calogan.data import ShowerData
from calogan.errors import ConfigError
from calogan.losses import (
    drift_penalty,
    gradient_penalty,
    marginal_wasserstein_loss,
    moment_matching_loss,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from calogan.models.base import ConditionSpec, GANModel
from calogan.models.blocks import Swish, cell_noise_features, latent_cell_noise

__all__ = ["WGAN", "WGANConfig", "physics_fractions", "shape_features"]

_ACTIVATIONS = ("swish", "relu", "leaky_relu", "silu")
_OUTPUTS = ("relu", "linear", "softplus")
_FEATURES = ("total", "total+layers", "shapes")
_SCALINGS = ("sqrt_e", "none", "binned")
# log10 of a layer's energy fraction is taken of E_l / E_inc + this: an empty layer sits at -7.
_LOG_FLOOR = 1e-7


@dataclass(frozen=True)
class WGANConfig:
    """Hyper-parameters of the conditional WGAN-GP (defaults: the ATLAS open configuration).

    Generator: [z (``latent_dim``), conditions] -> ``generator_hidden`` dense layers with
    ``generator_activation`` (trainable Swish) -> n_cells with ``output_activation``
    (``relu``: a ReLU about the transform's empty-cell value, so empty cells come out exactly
    empty in any transform; ``linear``; ``softplus``). ``cell_noise`` adds to each cell,
    before the output activation, zero-mean unit-variance noise with a learned, condition-
    dependent scale (noise injection, as in StyleGAN): the cell-by-cell sampling fluctuations
    of a sampling calorimeter, which a dense generator fed by a 50-dimensional latent makes
    only slowly. The per-cell noise is drawn from the latent z itself, sqrt(2) sin(W z + b)
    with fixed random W of high frequency (so the cells' noises are practically independent),
    which keeps the latent width ``latent_dim`` and every seed-to-shower contract unchanged.
    Critic: [cells, conditions] -> ``critic_hidden`` dense layers (``None``: three layers of
    n_cells units) -> one score, gradient penalty ``lambda_gp`` and optional ``drift``.

    The physics critic (``physics_critic``) sees only physics variables of the physical
    (inverse-transformed) showers: E_tot / E_inc (``"total"``) and the layer energies over
    E_inc (``"total+layers"``), standardised on the training data; with ``physics_scaling``
    ``"sqrt_e"`` their deviations from the mean are also multiplied by sqrt(E_inc / GeV), so
    that a calorimeter's stochastic a / sqrt(E) spread looks alike at every energy. It has
    its own small gradient penalty ``physics_lambda_gp`` (the ATLAS GAN's: the penalty is what
    stops a critic from using the sum) and enters the generator loss with weight
    ``physics_weight``. The variables are inputs to that critic, not functions it
    differentiates through: the ATLAS GAN's stop-gradient. ``physics_batch_std`` also shows
    that critic the standard deviation of each variable over the batch (the minibatch
    standard deviation of Karras et al.), so that a too narrow energy resolution is visible
    in one look instead of having to be inferred from single showers.

    ``moment_weight`` > 0 adds to the generator loss the feature matching of the physics
    variables' mean and standard deviation in ``moment_bins`` incident-energy bins (equal
    population in the training data) to their training-set values: a direct pull on the
    response and the resolution that the adversarial physics critic only reaches slowly.

    What a classifier uses to tell generated showers from Geant4 is mostly the shower-to-shower
    fluctuation of their *shapes*, so three options reach beyond the ATLAS recipe:

    - ``physics_features: shapes`` gives the physics critic, per layer, log10 of the energy
      fraction, the energy-weighted centroid and the log of the width along x and y, E_ratio
      of the two hottest cells and the fraction of hit cells (a sigmoid of the distance to
      the transform's threshold, so that it has a gradient), beside log10 E_tot / E_inc
      (``shape_features``). ``physics_scaling: binned`` standardises every variable by its
      mean and standard deviation at the shower's energy (``physics_bins`` bins of log E_inc
      with equal population, interpolated): a too wide width at 5 GeV then looks as wrong as
      at 80 GeV.
    - ``layer_energies`` adds a second output head for log10 E_layer / E_inc and rescales the
      hit cells of each layer to sum to it. The energy per layer (and so the response and
      resolution) is then one number the generator sets directly instead of a sum of hundreds
      of cells whose fluctuations would have to cancel.
    - ``marginal_weight`` > 0 adds ``losses.marginal_wasserstein_loss`` (``marginal_chunks``
      chunks of neighbouring energies) of the model-space cells and of the standardised
      physics variables against the real batch the generator's conditions come from: every
      cell's hit probability and spectrum and every shape observable's distribution are
      pulled into place from the first step, and the critics are left the correlations.
      ``init_output`` starts the last layer's biases at the training showers' mean model-space
      cells (with small weights), so that training starts from the mean shower.
    """

    latent_dim: int = 50
    generator_hidden: tuple[int, ...] = (50, 100, 200)
    generator_activation: str = "swish"
    output_activation: str = "relu"
    critic_hidden: tuple[int, ...] | None = None
    critic_activation: str = "relu"
    lambda_gp: float = 10.0
    drift: float = 0.0
    physics_critic: bool = True
    physics_features: str = "total+layers"
    physics_hidden: tuple[int, ...] = (64, 64)
    physics_activation: str = "relu"
    physics_lambda_gp: float = 1e-3
    physics_weight: float = 1.0
    physics_scaling: str = "sqrt_e"
    physics_batch_std: bool = False
    moment_weight: float = 0.0
    moment_bins: int = 5
    cell_noise: bool = False
    physics_bins: int = 16
    layer_energies: bool = False
    marginal_weight: float = 0.0
    marginal_chunks: int = 8
    init_output: bool = False

    def __post_init__(self) -> None:
        def check(name, value, allowed):
            if value not in allowed:
                raise ConfigError(f"model.{name} must be one of {', '.join(allowed)}, got {value!r}")

        check("generator_activation", self.generator_activation, _ACTIVATIONS)
        check("critic_activation", self.critic_activation, _ACTIVATIONS)
        check("physics_activation", self.physics_activation, _ACTIVATIONS)
        check("output_activation", self.output_activation, _OUTPUTS)
        check("physics_features", self.physics_features, _FEATURES)
        check("physics_scaling", self.physics_scaling, _SCALINGS)
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        for name in ("generator_hidden", "critic_hidden", "physics_hidden"):
            sizes = getattr(self, name)
            if sizes is not None and (not sizes or any(s < 1 for s in sizes)):
                raise ConfigError(f"model.{name} must be a non-empty list of positive layer sizes, got {list(sizes)}")
        for name in ("moment_bins", "physics_bins", "marginal_chunks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.moment_weight > 0 and not self.physics_critic:
            raise ConfigError("model.moment_weight needs model.physics_critic: true (it matches the physics variables)")
        if self.marginal_weight > 0 and not self.physics_critic:
            raise ConfigError("model.marginal_weight needs model.physics_critic: true (it matches the physics variables too)")
        for name in ("lambda_gp", "drift", "physics_lambda_gp", "physics_weight", "moment_weight", "marginal_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")


def _activation(name: str, width: int) -> nn.Module:
    if name == "swish":
        return Swish(width)
    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU}[name]()


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, activation: str) -> nn.Sequential:
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), _activation(activation, h)]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def physics_fractions(cells: torch.Tensor, e_inc: torch.Tensor, layer_matrix: torch.Tensor, with_layers: bool) -> torch.Tensor:
    """Physics variables of physical showers as fractions of the incident energy.

    ``cells`` (B, n_cells) MeV, ``e_inc`` (B,) GeV, ``layer_matrix`` (n_cells, n_layers)
    0/1 membership. Returns (B, 1) [E_tot / E_inc] or (B, 1 + n_layers) [E_tot, E_1, ...,
    E_L] / E_inc.
    """
    scale = 1.0 / (1000.0 * e_inc.reshape(-1, 1).to(cells.dtype))
    layers = (cells @ layer_matrix.to(cells.dtype)) * scale  # (B, L)
    total = layers.sum(dim=1, keepdim=True)  # (B, 1)
    return torch.cat([total, layers], dim=1) if with_layers else total


def shape_features(
    cells: torch.Tensor, e_inc: torch.Tensor, layer_matrix: torch.Tensor, cell_xy: torch.Tensor, layer_slices
) -> torch.Tensor:
    """Per-shower shape observables of physical showers, differentiable in the cells.

    ``cells`` (B, n_cells) MeV, ``e_inc`` (B,) GeV, ``layer_matrix`` (n_cells, L) 0/1
    membership, ``cell_xy`` (2, n_cells) cell centres in mm, ``layer_slices`` the L slices of
    the flat cells. Returns (B, 1 + 6 L): log10 E_tot / E_inc, then per layer log10 of
    E_l / E_inc (+1e-7), centroid x and y (mm), log of the width along x and y (sqrt of
    variance + 1 mm^2) and E_ratio = (E_max1 - E_max2) / (E_max1 + E_max2 + 1 keV). An
    empty layer has centroid 0 and log width 0.
    """
    e = 1000.0 * e_inc.reshape(-1, 1).to(cells.dtype)
    layers = cells @ layer_matrix.to(cells.dtype)  # (B, L)
    total = layers.sum(dim=1, keepdim=True)
    share = cells / (layers @ layer_matrix.T.to(cells.dtype)).clamp_min(1e-9)  # (B, n_cells) fraction of its layer
    cols = [torch.log10(total / e + _LOG_FLOOR), torch.log10(layers / e + _LOG_FLOOR)]
    for coord in cell_xy.to(cells.dtype):
        mean = (share * coord) @ layer_matrix.to(cells.dtype)  # (B, L)
        var = (share * coord**2) @ layer_matrix.to(cells.dtype) - mean**2
        cols += [mean, 0.5 * torch.log(var.clamp_min(0.0) + 1.0)]
    ratios = []
    for s in layer_slices:
        top = torch.topk(cells[:, s], min(2, s.stop - s.start), dim=1).values
        second = top[:, 1] if top.shape[1] > 1 else torch.zeros_like(top[:, 0])
        ratios.append((top[:, 0] - second) / (top[:, 0] + second + 1e-3))
    cols.append(torch.stack(ratios, dim=1))
    return torch.cat(cols, dim=1)


class WGAN(GANModel):
    """Conditional WGAN-GP on the flat cell vector of any geometry (ATLAS FastCaloGAN style).

    ``forward(cond, z)`` maps physical conditions (B, n_cond) and noise (B, latent_dim) to
    (B, n_cells) showers in the transform's model space. Two critics: one on cells with the
    usual gradient penalty, one on physics variables with a small one (see ``WGANConfig``).

    >>> from calogan.geometry import preset
    >>> from calogan.transforms import ShowerTransform, TransformConfig
    >>> g = preset("atlas-barrel")
    >>> t = ShowerTransform(TransformConfig(), np.zeros(g.n_cells), np.ones(g.n_cells))
    >>> model = WGAN(g, ConditionSpec(), t, WGANConfig())
    >>> model(torch.tensor([[10.0], [50.0]])).shape
    torch.Size([2, 266])
    """

    family = "wgan"
    config_class = WGANConfig

    def __init__(self, geometry, conditions: ConditionSpec, transform, config: WGANConfig) -> None:
        super().__init__(geometry, conditions, transform, config)
        n_cells, n_cond = geometry.n_cells, conditions.n_cond
        if transform.n_cells != n_cells:
            raise ConfigError(f"transform has {transform.n_cells} cells, geometry {geometry.name!r} has {n_cells}")
        c = config
        if c.layer_energies and transform.config.scale != "hits":
            # the rescaling is a shift of log energies: the hits transform's model space
            raise ConfigError(f"model.layer_energies needs the transform scale 'hits', got {transform.config.scale!r}")
        self.generator = _mlp(c.latent_dim + n_cond, c.generator_hidden, n_cells, c.generator_activation)
        if c.cell_noise:
            # log of the per-cell noise scale from the conditions, starting small (e^-4 ~ 0.02)
            self.noise_scale = nn.Linear(n_cond, n_cells)
            nn.init.zeros_(self.noise_scale.weight)
            nn.init.constant_(self.noise_scale.bias, -4.0)
            # Fixed random features of z: sin(W z + b) is an effectively independent draw per cell.
            freq, phase = cell_noise_features(c.latent_dim, n_cells)
            self.register_buffer("noise_freq", freq)
            self.register_buffer("noise_phase", phase)
        # log10 E_layer / E_inc of each layer, standardised by layer_mean / layer_std
        self.layer_head = nn.Linear(c.generator_hidden[-1], geometry.n_layers) if c.layer_energies else None
        self.register_buffer("layer_mean", torch.zeros(geometry.n_layers))
        self.register_buffer("layer_std", torch.ones(geometry.n_layers))
        critic_hidden = c.critic_hidden if c.critic_hidden is not None else (n_cells,) * 3
        self.critic = _mlp(n_cells + n_cond, critic_hidden, 1, c.critic_activation)
        membership = np.zeros((n_cells, geometry.n_layers), np.float32)
        for i in range(geometry.n_layers):
            membership[geometry.layer_slice(i), i] = 1.0
        self.register_buffer("layer_matrix", torch.from_numpy(membership), persistent=False)
        self.register_buffer("cell_xy", torch.from_numpy(np.stack(geometry.cell_centres()).astype(np.float32)), persistent=False)
        n_phys = {"total": 1, "total+layers": 1 + geometry.n_layers, "shapes": 1 + 7 * geometry.n_layers}[c.physics_features]
        n_in = n_phys * (2 if c.physics_batch_std else 1) + n_cond
        self.physics = _mlp(n_in, c.physics_hidden, 1, c.physics_activation) if c.physics_critic else None
        # Standardisation of the physics variables, fitted by prepare() on the training data.
        self.register_buffer("physics_mean", torch.zeros(n_phys))
        self.register_buffer("physics_std", torch.ones(n_phys))
        # physics_scaling binned: mean and std of the variables in bins of log E_inc (bin centres)
        nb = c.physics_bins
        self.register_buffer("bin_centres", torch.zeros(nb))
        self.register_buffer("bin_mean", torch.zeros(nb, n_phys))
        self.register_buffer("bin_std", torch.ones(nb, n_phys))
        # Targets of the moment matching: log E_inc bin edges, per-bin mean and std of the variables.
        k = c.moment_bins
        self.register_buffer("moment_edges", torch.zeros(max(k - 1, 0)))
        self.register_buffer("moment_mean", torch.zeros(k, n_phys))
        self.register_buffer("moment_std", torch.ones(k, n_phys))

    # -- the contract ---------------------------------------------------------------------

    def prepare(self, data: ShowerData) -> None:
        """Fit the physics-variable standardisation (and the output start) on training showers."""
        cells = torch.from_numpy(np.asarray(data.cells, np.float64))
        e_inc = torch.from_numpy(np.asarray(data.e_inc, np.float64))
        x = torch.from_numpy(self.transform.forward(data.cells, data.e_inc)).double()  # (N, n_cells) model space
        f = self._raw_physics(cells, e_inc, x)  # (N, n_phys)
        log_e = torch.log(e_inc)
        mean = f.mean(dim=0)
        dev = (f - mean) * self._weight(e_inc)
        std = torch.maximum(dev.std(dim=0), 1e-3 * mean.abs() + 1e-12)  # a constant variable must not blow up
        self.physics_mean.copy_(mean.to(self.physics_mean))
        self.physics_std.copy_(std.to(self.physics_std))
        if self.config.physics_scaling == "binned":
            nb = self.config.physics_bins
            bins = self._groups(log_e, torch.quantile(log_e, torch.linspace(0, 1, nb + 1, dtype=log_e.dtype)[1:-1]))  # (N, nb)
            n = bins.sum(dim=0).clamp_min(1.0)
            centres = (bins.T @ log_e) / n
            m = (bins.T @ f) / n[:, None]
            sd = ((bins.T @ f**2) / n[:, None] - m**2).clamp_min(0).sqrt()
            self.bin_centres.copy_(centres.to(self.bin_centres))
            self.bin_mean.copy_(m.to(self.bin_mean))
            self.bin_std.copy_(torch.maximum(sd, std / 100).to(self.bin_std))  # a bin without spread must not blow up
        p = self._standardise(f, e_inc)  # (N, n_phys) the standardised variables
        k = self.config.moment_bins
        edges = torch.quantile(log_e, torch.linspace(0, 1, k + 1, dtype=log_e.dtype)[1:-1])
        groups = self._groups(log_e, edges)  # (N, k)
        n = groups.sum(dim=0).clamp_min(1.0)
        m = (groups.T @ p) / n[:, None]
        var = (groups.T @ p**2) / n[:, None] - m**2
        self.moment_edges.copy_(edges.to(self.moment_edges))
        self.moment_mean.copy_(m.to(self.moment_mean))
        self.moment_std.copy_(var.clamp_min(0).sqrt().to(self.moment_std))
        if self.config.cell_noise:
            self._init_cell_noise(data, groups)
        layers = torch.log10(cells @ self.layer_matrix.double() / (1000.0 * e_inc[:, None]) + _LOG_FLOOR)
        self.layer_mean.copy_(layers.mean(dim=0).to(self.layer_mean))
        self.layer_std.copy_(layers.std(dim=0).clamp_min(1e-3).to(self.layer_std))
        if self.config.init_output:
            with torch.no_grad():
                last = self.generator[-1]
                last.bias.copy_(x.mean(dim=0).to(last.bias))
                last.weight.mul_(0.1)

    def _init_cell_noise(self, data: ShowerData, groups: torch.Tensor) -> None:
        """Start each cell's noise at a third of its model-space spread in the training data,
        with the energy dependence of that spread: log(scale) linear in the normalised log E.

        Adam moves a log-scale by about the learning rate per step, so a start far from the
        right magnitude would cost tens of thousands of steps; never-hit cells get none.
        """
        x = torch.from_numpy(self.transform.forward(data.cells, data.e_inc)).double()  # (N, n_cells)
        n = groups.sum(dim=0)  # (k,)
        ok = n > 1
        g = groups[:, ok]
        mean = (g.T @ x) / n[ok, None]
        std = ((g.T @ x**2) / n[ok, None] - mean**2).clamp_min(0).sqrt()  # (k', n_cells)
        cond = self.conditions.tensor(data).double()
        c_e = (g.T @ self.conditions.normalise(cond)[:, 0].double()) / n[ok]  # (k',) bin centres in network units
        log_s = torch.log(0.3 * std + 1e-9)  # (k', n_cells); floor: a never-hit cell gets ~no noise
        if len(c_e) > 1:
            slope = ((c_e - c_e.mean())[:, None] * (log_s - log_s.mean(0))).sum(0) / ((c_e - c_e.mean()) ** 2).sum().clamp_min(1e-12)
        else:
            slope = torch.zeros_like(log_s[0])
        with torch.no_grad():
            self.noise_scale.weight.zero_()
            self.noise_scale.weight[:, 0] = slope.to(self.noise_scale.weight)
            self.noise_scale.bias.copy_((log_s.mean(0) - slope * c_e.mean()).to(self.noise_scale.bias))

    def forward(self, cond: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            z = self.latent(cond.shape[0])
        c = self.conditions.normalise(cond)
        hidden = self.generator[:-1](torch.cat([z, c], dim=1))
        h = self.generator[-1](hidden)
        if self.config.cell_noise:
            h = h + torch.exp(self.noise_scale(c)) * self.cell_noise(z)
        if self.layer_head is not None:
            h = self._rescale_layers(h, self.layer_head(hidden), cond[:, 0])
        act = self.config.output_activation
        if act == "relu":  # clipped at the empty-cell value: exact zeros, never negative energies
            return torch.maximum(h, self.transform.zero_point().to(h.dtype))
        if act == "softplus":
            return nn.functional.softplus(h)
        return h

    def discriminator_loss(self, real: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.conditions.normalise(cond)
        with torch.no_grad():
            fake = self(cond)
        d_real, d_fake = self._critic(real, c), self._critic(fake, c)
        gp = gradient_penalty(lambda x: self._critic(x, c), real, fake)
        loss = wasserstein_critic_loss(d_real, d_fake) + self.config.lambda_gp * gp
        if self.config.drift:
            loss = loss + self.config.drift * drift_penalty(d_real)
        logs = {"w": (d_real.mean() - d_fake.mean()).detach(), "gp": gp.detach()}
        if self.physics is not None:
            # Physics variables enter this critic as inputs (computed without a graph): the
            # ATLAS GAN's stop-gradient, so the cell critic's penalty never constrains them.
            with torch.no_grad():
                p_real, p_fake = self.physics_variables(real, cond), self.physics_variables(fake, cond)
            q_real, q_fake = self._physics_critic(p_real, c), self._physics_critic(p_fake, c)
            gp_phys = gradient_penalty(lambda p: self._physics_critic(p, c), p_real, p_fake)
            loss = loss + wasserstein_critic_loss(q_real, q_fake) + self.config.physics_lambda_gp * gp_phys
            logs["w_phys"] = (q_real.mean() - q_fake.mean()).detach()
            # spread of E_tot / E_inc of fakes over reals: the resolution the ATLAS GAN first missed
            logs["res_ratio"] = p_fake[:, 0].std() / p_real[:, 0].std().clamp_min(1e-12)
        return loss, logs

    def generator_loss(self, cond: torch.Tensor, real: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.conditions.normalise(cond)
        fake = self(cond)
        loss = wasserstein_generator_loss(self._critic(fake, c))
        logs = {"g": loss.detach()}
        if self.config.marginal_weight and real is not None:
            e = cond[:, 0]
            with torch.no_grad():
                p_real = self.physics_variables(real, cond)
            g_marg = marginal_wasserstein_loss(real, fake, e, self.config.marginal_chunks) + marginal_wasserstein_loss(
                p_real, self.physics_variables(fake, cond), e, self.config.marginal_chunks
            )
            loss = loss + self.config.marginal_weight * g_marg
            logs["g_marg"] = g_marg.detach()
        if self.physics is not None:
            # Here the gradient does flow through the physics variables into the generator.
            p = self.physics_variables(fake, cond)
            g_phys = wasserstein_generator_loss(self._physics_critic(p, c))
            loss = loss + self.config.physics_weight * g_phys
            logs["g_phys"] = g_phys.detach()
            if self.config.moment_weight:
                groups = self._groups(torch.log(cond[:, 0]), self.moment_edges)
                g_mom = moment_matching_loss(p, groups, self.moment_mean, self.moment_std)
                loss = loss + self.config.moment_weight * g_mom
                logs["g_mom"] = g_mom.detach()
        return loss, logs

    def generator_parameters(self):
        params = list(self.generator.parameters())
        if self.config.cell_noise:
            params += list(self.noise_scale.parameters())
        if self.layer_head is not None:
            params += list(self.layer_head.parameters())
        return params

    def discriminator_parameters(self):
        params = list(self.critic.parameters())
        if self.physics is not None:
            params += list(self.physics.parameters())
        return params

    # -- helpers --------------------------------------------------------------------------

    def cell_noise(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, n_cells) per-cell noise of zero mean and unit variance (``latent_cell_noise``)."""
        return latent_cell_noise(z, self.noise_freq, self.noise_phase)

    def physics_variables(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Standardised physics variables (B, n_phys) of model-space showers x (B, n_cells)."""
        # float32 even under bf16 autocast: bf16 keeps 3 significant digits, so E_tot / E_inc
        # would carry a 0.4 % rounding error, a quarter of a 100-GeV shower's whole spread.
        with torch.autocast(device_type=x.device.type, enabled=False):
            e_inc = cond[:, 0].float()
            cells = self.transform.inverse(x.float(), e_inc)  # physical MeV, differentiable
            return self._standardise(self._raw_physics(cells, e_inc, x.float()), e_inc)

    def _raw_physics(self, cells: torch.Tensor, e_inc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, n_phys) physics variables of physical ``cells`` whose model-space values are ``x``."""
        if self.config.physics_features != "shapes":
            return physics_fractions(cells, e_inc, self.layer_matrix, self.config.physics_features == "total+layers")
        slices = [self.geometry.layer_slice(i) for i in range(self.geometry.n_layers)]
        shapes = shape_features(cells, e_inc, self.layer_matrix, self.cell_xy, slices)
        # hit fraction per layer, smooth in the distance to the threshold (in model-space units)
        soft = torch.sigmoid(4.0 * (x - self.transform.threshold().to(x.dtype)))
        hits = (soft @ self.layer_matrix.to(x.dtype)) / self.layer_matrix.sum(dim=0).to(x.dtype)
        return torch.cat([shapes, hits], dim=1)

    def _standardise(self, f: torch.Tensor, e_inc: torch.Tensor) -> torch.Tensor:
        """Physics variables (B, n_phys) in units of their training spread (``physics_scaling``)."""
        if self.config.physics_scaling != "binned":
            return (f - self.physics_mean.to(f.dtype)) * self._weight(e_inc).to(f.dtype) / self.physics_std.to(f.dtype)
        # linear interpolation of the per-bin mean and std between the bin centres in log E
        centres = self.bin_centres.to(f.dtype)
        log_e = torch.log(e_inc.to(f.dtype)).clamp(centres[0], centres[-1])
        j = torch.bucketize(log_e, centres[1:-1]).clamp_max(max(len(centres) - 2, 0))
        if len(centres) > 1:
            t = ((log_e - centres[j]) / (centres[j + 1] - centres[j]).clamp_min(1e-12)).clamp(0, 1)[:, None]
            m = torch.lerp(self.bin_mean[j].to(f.dtype), self.bin_mean[j + 1].to(f.dtype), t)
            sd = torch.lerp(self.bin_std[j].to(f.dtype), self.bin_std[j + 1].to(f.dtype), t)
        else:
            m, sd = self.bin_mean[j].to(f.dtype), self.bin_std[j].to(f.dtype)
        return (f - m) / sd

    def _rescale_layers(self, x: torch.Tensor, layer_out: torch.Tensor, e_inc: torch.Tensor) -> torch.Tensor:
        """Model-space cells (B, n_cells) whose hit cells are rescaled, layer by layer, to the
        energies of the layer head (B, L) (standardised log10 E_layer / E_inc)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, e = x.float(), e_inc.float().reshape(-1, 1)
            target = torch.pow(10.0, layer_out.float() * self.layer_std + self.layer_mean) * 1000.0 * e  # (B, L) MeV
            have = self.transform.inverse(x, e_inc.float()) @ self.layer_matrix  # (B, L) MeV of the hit cells
            ratio = (target / have.clamp_min(1e-9)).clamp(1e-3, 1e3)  # a layer without hits keeps its (empty) cells
            shift = torch.log(ratio) @ self.layer_matrix.T / self.transform.scale  # (B, n_cells) in model-space units
            return x + shift * (x > self.transform.threshold()).to(x.dtype)  # a mask, not Where: faster in onnxruntime

    @staticmethod
    def _groups(log_e: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """(B, K) one-hot incident-energy bin of each shower; K = len(edges) + 1."""
        idx = torch.bucketize(log_e, edges.to(log_e.dtype))
        return nn.functional.one_hot(idx, edges.numel() + 1).to(log_e.dtype)

    def _weight(self, e_inc: torch.Tensor) -> torch.Tensor:
        """(B, 1) per-shower factor on the deviations: sqrt(E_inc) or 1."""
        if self.config.physics_scaling == "sqrt_e":
            return torch.sqrt(e_inc.reshape(-1, 1))
        return torch.ones_like(e_inc.reshape(-1, 1))

    def _critic(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.critic(torch.cat([x, c.to(x.dtype)], dim=1)).squeeze(1)

    def _physics_critic(self, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        parts = [p]
        if self.config.physics_batch_std:
            parts.append(p.std(dim=0, keepdim=True).expand_as(p))  # (B, n_phys), one row repeated
        return self.physics(torch.cat([*parts, c.to(p.dtype)], dim=1)).squeeze(1)
