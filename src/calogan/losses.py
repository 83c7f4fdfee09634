"""GAN losses, gradient penalties and auxiliary physics losses: pure functions of tensors."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "absolute_energy_loss",
    "attribute_regression_loss",
    "bce_discriminator_loss",
    "bce_generator_loss",
    "drift_penalty",
    "energy_conservation_loss",
    "flip_classes",
    "flip_labels",
    "gaussian_kl",
    "gradient_penalty",
    "interpolate",
    "marginal_wasserstein_loss",
    "mean_absolute_percentage_error",
    "moment_matching_loss",
    "smooth_labels",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
]


def wasserstein_critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """E[D(fake)] - E[D(real)]: the critic minimises it. (B,) or (B, 1) each -> scalar."""
    return d_fake.mean() - d_real.mean()


def wasserstein_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """-E[D(fake)]: the generator minimises it. (B,) or (B, 1) -> scalar."""
    return -d_fake.mean()


def interpolate(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_hat = eps * real + (1 - eps) * fake, one eps ~ U(0, 1) per sample. (B, ...) -> (B, ...)."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, device=real.device, dtype=real.dtype, generator=generator)
    return eps * real + (1 - eps) * fake


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates (Gulrajani et al.).

    ``critic`` maps (B, ...) inputs to (B,) or (B, 1) scores with everything else (the
    conditions) bound in; ``real`` and ``fake`` are (B, ...) and treated as constants. The
    result keeps its graph so that the penalty trains the critic. Returns a scalar, not yet
    multiplied by lambda.
    """
    x_hat = interpolate(real.detach(), fake.detach(), generator).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norm - 1.0) ** 2).mean()


def drift_penalty(d_real: torch.Tensor) -> torch.Tensor:
    """E[D(real)^2], which keeps WGAN critic scores from drifting (Karras et al.). -> scalar."""
    return (d_real.float() ** 2).mean()


def smooth_labels(target: torch.Tensor, amount: float) -> torch.Tensor:
    """One-sided label smoothing: 1 -> 1 - amount, 0 stays 0. Same shape as ``target``."""
    if not 0 <= amount < 1:
        raise ValueError(f"label smoothing must be in [0, 1), got {amount}")
    return target * (1.0 - amount)


def flip_labels(target: torch.Tensor, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Labels y -> 1 - y for a random fraction ``probability`` of entries (noisy labels)."""
    if not 0 <= probability <= 1:
        raise ValueError(f"label flip probability must be in [0, 1], got {probability}")
    flip = torch.rand(target.shape, device=target.device, generator=generator) < probability
    return torch.where(flip, 1.0 - target, target)


def bce_discriminator_loss(
    logits_real: torch.Tensor,
    logits_fake: torch.Tensor,
    *,
    smoothing: float = 0.0,
    flip: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Binary cross-entropy of a discriminator on real (label 1) and fake (label 0) logits.

    ``smoothing`` lowers the real label to 1 - smoothing; ``flip`` swaps a random fraction of
    labels. Logits (B,) or (B, 1) each -> scalar mean over both halves.
    """
    real_t = smooth_labels(torch.ones_like(logits_real), smoothing)
    fake_t = torch.zeros_like(logits_fake)
    if flip:
        real_t, fake_t = flip_labels(real_t, flip, generator), flip_labels(fake_t, flip, generator)
    loss_real = F.binary_cross_entropy_with_logits(logits_real, real_t)
    loss_fake = F.binary_cross_entropy_with_logits(logits_fake, fake_t)
    return 0.5 * (loss_real + loss_fake)


def bce_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: BCE of fake logits against label 1. -> scalar."""
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def energy_conservation_loss(e_deposit: torch.Tensor, e_inc: torch.Tensor, response: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Mean |E_dep - response * E_inc| / E_inc: penalises showers that create or lose energy.

    ``e_deposit`` and ``e_inc`` are (B,) in the same unit; ``response`` is the expected
    E_dep / E_inc (1 for a total-energy calorimeter, the sampling fraction for active cells),
    a number or a (B,) tensor. The CaloGAN auxiliary loss with response 1. -> scalar.
    """
    return ((e_deposit - response * e_inc).abs() / e_inc.clamp_min(1e-12)).mean()


def absolute_energy_loss(e_deposit: torch.Tensor, e_requested: torch.Tensor) -> torch.Tensor:
    """Mean |E_dep - E_req| in the unit given (the CaloGAN energy loss, weighted lambda_E = 0.05
    in GeV). (B,) each -> scalar."""
    return (e_deposit - e_requested).abs().mean()


def flip_classes(labels: torch.Tensor, n_classes: int, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Class labels (B,) with a random fraction ``probability`` replaced by a different class
    (the ACGAN head's noisy fake labels; for two classes, a bit flip)."""
    if not 0 <= probability <= 1:
        raise ValueError(f"label flip probability must be in [0, 1], got {probability}")
    if n_classes < 2 or probability == 0:
        return labels
    flip = torch.rand(labels.shape, device=labels.device, generator=generator) < probability
    shift = torch.randint(1, n_classes, labels.shape, device=labels.device, generator=generator)
    return torch.where(flip, (labels + shift) % n_classes, labels)


def attribute_regression_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """lambda^T E|xi - Xi(x)| (eq. 3 of the conditional CaloGAN, arXiv:1711.08813): per-attribute mean absolute errors, weighted.

    ``predicted`` and ``target`` (B, A), ``weights`` (A,) -> scalar.
    """
    return ((predicted - target).abs().mean(dim=0) * weights).sum()


def moment_matching_loss(features: torch.Tensor, groups: torch.Tensor, target_mean: torch.Tensor, target_std: torch.Tensor) -> torch.Tensor:
    """Squared distance of per-group means and standard deviations from their targets.

    ``features`` (B, F) of generated showers, ``groups`` (B, K) one-hot group membership
    (e.g. incident-energy bins), ``target_mean`` and ``target_std`` (K, F) of the reference.
    Returns the mean over groups with at least two members and over features of
    (mean - target_mean)^2 + (std - target_std)^2: feature matching (Salimans et al.) of the
    first two moments, the direct handle on a calorimeter's response and resolution. -> scalar.
    """
    w = groups.to(features.dtype)  # (B, K)
    n = w.sum(dim=0)  # (K,)
    mean = (w.T @ features) / n.clamp_min(1.0)[:, None]  # (K, F)
    dev2 = (features[:, None, :] - mean[None]) ** 2  # (B, K, F)
    var = (w[:, :, None] * dev2).sum(dim=0) / (n - 1).clamp_min(1.0)[:, None]  # (K, F), unbiased
    std = torch.sqrt(var + 1e-12)
    used = (n > 1).to(features.dtype)[:, None]  # (K, 1)
    per_group = ((mean - target_mean) ** 2 + (std - target_std) ** 2) * used
    return per_group.sum() / (used.sum() * features.shape[1]).clamp_min(1.0)


def marginal_wasserstein_loss(real: torch.Tensor, fake: torch.Tensor, e_inc: torch.Tensor, n_chunks: int) -> torch.Tensor:
    """Mean 1-Wasserstein distance between the one-dimensional marginals of ``real`` and ``fake``.

    ``real`` and ``fake`` (B, F) are showers (or features of showers) made for the same
    conditions row by row — ``fake`` generated at ``real``'s conditions — and ``e_inc`` (B,)
    their incident energies. The batch is sorted by energy and cut into ``n_chunks`` chunks
    of neighbouring energies; within each, every column of ``real`` and of ``fake`` is sorted
    and the mean absolute difference of the sorted values is the W1 distance of the two
    empirical marginals. Returns the mean over chunks and columns (scalar).

    Unlike a critic, which must first learn where two distributions differ, this term pulls
    every marginal (each cell's hit probability and energy spectrum, each shower-shape
    observable) towards the data from the first step; the critic is left the correlations.
    Sorting is differentiable almost everywhere (a permutation).

    >>> r = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> float(marginal_wasserstein_loss(r, r.flip(0) + 0.5, torch.tensor([1.0, 2.0, 3.0, 4.0]), 1))
    0.5
    """
    order = torch.argsort(e_inc)
    chunks = [idx for idx in order.chunk(n_chunks) if len(idx) > 0]
    total = sum((real[idx].sort(dim=0).values - fake[idx].sort(dim=0).values).abs().mean() for idx in chunks)
    return total / len(chunks)


def mean_absolute_percentage_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """100 * mean |predicted - target| / |target| (Keras' ``mean_absolute_percentage_error``, the
    3D GAN's energy losses). (B,) each -> scalar; targets are floored at 1e-7 in magnitude.

    >>> mean_absolute_percentage_error(torch.tensor([1.5, 3.0]), torch.tensor([1.0, 4.0])).item()  # 50 % and 25 %
    37.5
    """
    return 100.0 * ((predicted - target).abs() / target.abs().clamp_min(1e-7)).mean()


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(log_var)) || N(0, 1)) summed over the latent dimensions: (B, D) each -> (B,).

    >>> gaussian_kl(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]])).tolist()
    [0.5]
    """
    return 0.5 * (mu**2 + log_var.exp() - 1.0 - log_var).sum(dim=1)
