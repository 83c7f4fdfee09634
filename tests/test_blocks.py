"""Tests of the CaloGAN building blocks: exact answers against naive loops and known limits."""

from __future__ import annotations

import math

import pytest
import torch

from calogan.models.blocks import (
    Blur2d,
    Conv2dSame,
    LayerAttention,
    LocallyConnected2d,
    MinibatchDiscrimination,
    hard_sparsity,
    keras_same_padding,
    resize_matrix,
    soft_sparsity,
)


def naive_locally_connected(x, weight, bias, kernel, stride, out_shape):
    """The Keras definition, one output position and one patch entry at a time."""
    b, c, _, _ = x.shape
    kh, kw = kernel
    sh, sw = stride
    oh, ow = out_shape
    n_out = weight.shape[2]
    y = torch.zeros(b, n_out, oh, ow, dtype=x.dtype)
    for p in range(oh):
        for q in range(ow):
            for ci in range(c):
                for i in range(kh):
                    for j in range(kw):
                        k = ci * kh * kw + i * kw + j
                        y[:, :, p, q] += x[:, ci, p * sh + i, q * sw + j, None] * weight[p * ow + q, k][None, :]
            if bias is not None:
                y[:, :, p, q] += bias[:, p, q]
    return y


@pytest.mark.parametrize(
    ("c_in", "c_out", "shape", "kernel", "stride", "bias"),
    [
        (3, 2, (5, 7), 2, 1, True),
        (2, 4, (5, 9), 3, (1, 2), True),
        (1, 1, (4, 6), (2, 3), (2, 1), False),
        (6, 1, (3, 3), 3, 1, False),
    ],
)
def test_locally_connected_equals_naive_loop(c_in, c_out, shape, kernel, stride, bias):
    torch.manual_seed(0)
    lc = LocallyConnected2d(c_in, c_out, shape, kernel, stride, bias=bias).double()
    if bias:
        torch.nn.init.normal_(lc.bias)  # non-zero so that the bias layout is tested too
    x = torch.randn(3, c_in, *shape, dtype=torch.float64)
    got = lc(x)
    want = naive_locally_connected(
        x, lc.weight.detach(), None if lc.bias is None else lc.bias.detach(), lc.kernel_size, lc.stride, lc.output_shape
    )
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # gradients too (the module has its own backward for the patch gather)
    x2, w2 = x.clone().requires_grad_(True), lc.weight.detach().clone().requires_grad_(True)
    b2 = None if lc.bias is None else lc.bias.detach().clone().requires_grad_(True)
    up = torch.randn_like(got)
    naive_locally_connected(x2, w2, b2, lc.kernel_size, lc.stride, lc.output_shape).mul(up).sum().backward()
    x.requires_grad_(True)
    lc(x).mul(up).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(lc.weight.grad, w2.grad, rtol=0, atol=1e-12)
    if b2 is not None:
        torch.testing.assert_close(lc.bias.grad, b2.grad, rtol=0, atol=1e-12)


def test_locally_connected_shapes_and_errors():
    # the CaloGAN generator's last layer of layer_0: (4, 97) -> (3, 96), one filter, no bias
    lc = LocallyConnected2d(6, 1, (4, 97), 2, bias=False)
    assert lc.output_shape == (3, 96)
    assert lc.weight.shape == (3 * 96, 6 * 4, 1)
    assert lc.bias is None
    # discriminator 3x3 stride (1, 2) on the padded (5, 98) image -> (3, 48)
    assert LocallyConnected2d(64, 16, (5, 98), 3, (1, 2)).output_shape == (3, 48)
    with pytest.raises(ValueError, match="does not fit"):
        LocallyConnected2d(1, 1, (2, 2), 3)
    with pytest.raises(ValueError, match="expects"):
        lc(torch.zeros(2, 6, 4, 96))
    with pytest.raises(ValueError, match="unknown init"):
        LocallyConnected2d(1, 1, (3, 3), 2, init="zeros")


def test_keras_same_padding_known_values():
    assert keras_same_padding((3, 96), 2) == (0, 1, 0, 1)  # extra pixel after, never before
    assert keras_same_padding((5, 5), 3) == (1, 1, 1, 1)
    assert keras_same_padding((12, 12), 3, (1, 2)) == (0, 1, 1, 1)
    assert keras_same_padding((4, 4), 4) == (1, 2, 1, 2)
    assert keras_same_padding((6, 6), 1, 2) == (0, 0, 0, 0)


def test_conv2d_same_pads_asymmetrically():
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, 2).double()
    x = torch.randn(2, 2, 3, 5, dtype=torch.float64)
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), want, rtol=0, atol=0)
    assert conv(x).shape == (2, 3, 3, 5)
    assert Conv2dSame(1, 1, 3, (1, 2))(torch.zeros(1, 1, 12, 12)).shape == (1, 1, 12, 6)


def test_resize_matrix_repeats_averages_and_shares():
    up = resize_matrix(3, 12)  # layer_0 rows onto layer_1 rows: each value repeated 4 times
    assert torch.equal(up, torch.repeat_interleave(torch.eye(3), 4, dim=0))
    down = resize_matrix(96, 12)  # layer_0 columns onto layer_1: averages of 8
    assert torch.equal(down, torch.repeat_interleave(torch.eye(12), 8, dim=1) / 8)
    torch.testing.assert_close(resize_matrix(3, 2), torch.tensor([[2 / 3, 1 / 3, 0.0], [0.0, 1 / 3, 2 / 3]]))
    assert torch.allclose(resize_matrix(7, 5).sum(1), torch.ones(5))


@pytest.mark.parametrize("local", [True, False])
def test_attention_shapes_and_carry_bias(local):
    torch.manual_seed(0)
    att = LayerAttention((3, 96), (12, 12), local=local)
    own, prev = torch.rand(4, 1, 12, 12), torch.rand(4, 1, 3, 96)
    assert att(own, prev).shape == (4, 1, 12, 12)
    bias = att.mix.bias.detach()
    assert torch.all(bias[1] == -10.0) and torch.all(bias[0] == 0.0)
    # with the mixing weights at zero only the biases act: out = (own + e^-10 carried) / (1 + e^-10)
    with torch.no_grad():
        att.mix.weight.zero_()
    carried = resize_matrix(3, 12) @ prev @ resize_matrix(96, 12).T
    w1 = math.exp(-10.0) / (1.0 + math.exp(-10.0))
    torch.testing.assert_close(att(own, prev), (1 - w1) * own + w1 * carried)


def test_attention_weights_are_a_softmax_mix():
    # any logits: the output lies between the two images cell by cell
    torch.manual_seed(1)
    att = LayerAttention((12, 12), (12, 6), local=True, carry_bias=0.0)
    own, prev = torch.rand(3, 1, 12, 6), torch.rand(3, 1, 12, 12)
    carried = prev @ resize_matrix(12, 6).T
    out = att(own, prev)
    lo, hi = torch.minimum(own, carried), torch.maximum(own, carried)
    assert torch.all(out >= lo - 1e-6) and torch.all(out <= hi + 1e-6)


def test_soft_sparsity_limits():
    x = torch.tensor([[0.0, 1e-4, 0.0, 3.0, -2.0, 0.0, 5e-7, 0.0]])
    hard = hard_sparsity(x)
    assert hard.item() == 0.5
    # beta -> inf: the indicator 1[x != 0] of eq. 4, exactly
    torch.testing.assert_close(soft_sparsity(x.double(), alpha=1.0, beta=1e30), hard.double(), rtol=0, atol=1e-12)
    # beta -> 0: nothing counts
    assert soft_sparsity(x, alpha=1.0, beta=1e-30).item() < 1e-20
    # half way at |x| = beta^(-1/alpha)
    assert soft_sparsity(torch.full((1, 4), 0.01), alpha=2.0, beta=1e4).item() == pytest.approx(0.5)
    assert torch.equal(soft_sparsity(torch.zeros(2, 5), 1.0, 1.0), torch.zeros(2))
    with pytest.raises(ValueError, match="alpha > 0"):
        soft_sparsity(x, alpha=0.0, beta=1.0)


def test_soft_sparsity_gradient_is_finite_at_zero():
    x = torch.tensor([[0.0, 0.5, 0.0, 2.0]], requires_grad=True)
    soft_sparsity(x, alpha=0.5, beta=3.0).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, 0] == 0 and x.grad[0, 2] == 0  # exact zeros pass no gradient
    assert torch.all(x.grad[0, [1, 3]] > 0)  # larger |x| counts more


def test_minibatch_discrimination_matches_definition():
    torch.manual_seed(0)
    mbd = MinibatchDiscrimination(6, n_kernels=4, kernel_dim=3).double()
    torch.nn.init.normal_(mbd.bias)
    x = torch.randn(5, 6, dtype=torch.float64)
    out = mbd(x)
    assert out.shape == (5, 4)
    m = (x @ mbd.weight + mbd.bias.flatten()).view(5, 4, 3).detach()
    want = torch.empty(5, 4, dtype=torch.float64)
    for i in range(5):
        for k in range(4):
            want[i, k] = sum(math.exp(-(m[i, k] - m[j, k]).abs().sum().item()) for j in range(5)) / 5
    torch.testing.assert_close(out.detach(), want, rtol=0, atol=1e-12)


def test_minibatch_discrimination_limits():
    mbd = MinibatchDiscrimination(3, n_kernels=2, kernel_dim=4)
    same = mbd(torch.ones(7, 3))  # identical samples: every distance is 0
    torch.testing.assert_close(same, torch.ones(7, 2))
    with torch.no_grad():
        mbd.weight.fill_(1.0)
    apart = mbd(torch.tensor([[0.0, 0, 0], [1e3, 0, 0]]))  # far apart: only the self term, 1 / B
    torch.testing.assert_close(apart, torch.full((2, 2), 0.5))
    # a large batch of close samples still passes gradient (the tanh of the paper's code does not)
    x = (1 + 1e-3 * torch.randn(256, 3)).requires_grad_(True)
    mbd(x).sum().backward()
    assert x.grad.abs().sum() > 0 and mbd.weight.grad.abs().sum() > 0


def test_blur_is_fixed_box_and_conserves_energy():
    blur = Blur2d((3, 3))
    assert list(blur.parameters()) == []  # frozen: never seen by an optimiser
    x = torch.zeros(1, 2, 6, 6)
    x[0, 0, 2, 3] = 9.0
    x[0, 1, 3, 2] = 4.5
    y = blur(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.sum((2, 3)), torch.tensor([[9.0, 4.5]]))
    torch.testing.assert_close(y[0, 0, 1:4, 2:5], torch.ones(3, 3))
    assert y[0, 0].count_nonzero() == 9 and y[0, 0, 0].abs().sum() == 0
    # even kernels pad the Keras way: the blur leans towards the start of the axis
    z = Blur2d((1, 2))(torch.tensor([[[[0.0, 2.0, 0.0]]]]))
    torch.testing.assert_close(z, torch.tensor([[[[1.0, 1.0, 0.0]]]]))
