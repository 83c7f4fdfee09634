"""Known answers for the GAN losses: a sign or a swapped argument must fail here."""

import pytest
import torch

from calogan.losses import gradient_penalty, marginal_wasserstein_loss, wasserstein_critic_loss, wasserstein_generator_loss


def test_gradient_penalty_of_a_linear_critic_is_the_norm_gap_squared():
    torch.manual_seed(0)
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5: every gradient of x -> w.x + 1 is w
    real, fake = torch.randn(64, 2), torch.randn(64, 2)
    gp = gradient_penalty(lambda x: x @ w + 1.0, real, fake)
    assert gp.item() == pytest.approx((5.0 - 1.0) ** 2)
    unit = w / 5.0
    assert gradient_penalty(lambda x: x @ unit, real, fake).item() == pytest.approx(0.0, abs=1e-12)


def test_gradient_penalty_trains_the_critic_towards_unit_gradients():
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    gp = gradient_penalty(lambda x: x @ w, torch.zeros(8, 2), torch.ones(8, 2))
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    torch.testing.assert_close(w.grad, 2 * 4.0 * torch.tensor([3.0, 4.0]) / 5.0)


def test_wasserstein_losses_have_the_critic_score_reals_high():
    d_real, d_fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0])
    assert wasserstein_critic_loss(d_real, d_fake).item() == pytest.approx(0.0 - 3.0)  # E[D(fake)] - E[D(real)]
    assert wasserstein_generator_loss(d_fake).item() == pytest.approx(0.0)
    assert wasserstein_generator_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)  # higher scores, lower loss


def test_marginal_wasserstein_loss_known_values():
    real = torch.tensor([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0], [3.0, 40.0]])
    e = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert marginal_wasserstein_loss(real, real[torch.randperm(4)], e, 1).item() == 0.0  # order within a chunk is free
    shifted = real + torch.tensor([1.0, -2.0])
    assert marginal_wasserstein_loss(real, shifted, e, 1).item() == pytest.approx(1.5)  # mean of |1| and |-2|
    # two chunks by energy: rows (0, 1) and (2, 3) are compared only with each other
    swapped = real[[2, 3, 0, 1]]
    assert marginal_wasserstein_loss(real, swapped, e, 1).item() == 0.0
    assert marginal_wasserstein_loss(real, swapped, e, 2).item() == pytest.approx((2.0 + 20.0) / 2)
