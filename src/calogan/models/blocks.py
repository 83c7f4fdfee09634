"""Network building blocks shared by the model families."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "Blur2d",
    "Conv2dSame",
    "LayerAttention",
    "LocallyConnected2d",
    "MinibatchDiscrimination",
    "Swish",
    "cell_noise_features",
    "hard_sparsity",
    "keras_same_padding",
    "latent_cell_noise",
    "resize_image",
    "resize_matrix",
    "soft_sparsity",
]


class Swish(nn.Module):
    """Trainable Swish activation ``x * sigmoid(beta * x)`` (Ramachandran et al.), the ATLAS GAN's activation.

    ``beta`` is learned, one per feature (``num_features``) or a single one (``num_features=1``);
    beta = 1 is SiLU, beta -> inf tends to ReLU, beta -> 0 to a linear x / 2. Shapes (B, F) ->
    (B, F) or any (B, F, ...) with per-feature betas on dim 1.

    >>> act = Swish(4)
    >>> act(torch.zeros(2, 4)).shape
    torch.Size([2, 4])
    """

    def __init__(self, num_features: int = 1, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.full((num_features,), float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta.view((1, -1) + (1,) * (x.dim() - 2)) if x.dim() > 1 else self.beta
        return x * torch.sigmoid(beta * x)


def cell_noise_features(latent_dim: int, n_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed random features (freq (latent_dim, n_cells), phase (n_cells,)) for ``latent_cell_noise``.

    The same for every model of these sizes (drawn from seed 0): frequencies N(0, 50^2), so
    that the phases z @ freq spread over hundreds of radians, and phases U(0, 2 pi).
    """
    rng = torch.Generator().manual_seed(0)
    freq = 50.0 * torch.randn(latent_dim, n_cells, generator=rng)
    phase = 2 * math.pi * torch.rand(n_cells, generator=rng)
    return freq, phase


def latent_cell_noise(z: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Per-cell noise of zero mean and unit variance drawn from the latent itself: (B, latent_dim) -> (B, n_cells).

    sqrt(2) sin(z @ freq + phase) with the fixed features of ``cell_noise_features``: for
    z ~ N(0, 1) the phases are spread over so many turns that every cell's value is an
    effectively independent draw, yet the shower stays a function of (conditions, z), so the
    latent width and every seed-to-shower contract (export, backends) stay as they are.
    Computed in float32 even under autocast: bf16 would lose the phase of ~10^2 rad.

    >>> freq, phase = cell_noise_features(4, 1000)
    >>> noise = latent_cell_noise(torch.randn(64, 4, generator=torch.Generator().manual_seed(1)), freq, phase)
    >>> noise.shape, abs(noise.mean().item()) < 0.05, abs(noise.var().item() - 1) < 0.05
    (torch.Size([64, 1000]), True, True)
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        return math.sqrt(2.0) * torch.sin(z.float() @ freq + phase)


# -- CaloGAN blocks (arXiv:1705.02355 and the conditional CaloGAN, arXiv:1711.08813) ------------


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def keras_same_padding(size: tuple[int, int], kernel_size, stride=1) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding of a Keras/TensorFlow ``padding='same'`` conv.

    The output has ceil(size / stride) positions per axis; the total padding
    max((out - 1) * stride + k - size, 0) is split with the extra pixel at the end (right,
    bottom), so a 2x2 kernel at stride 1 pads 0 before and 1 after, unlike a symmetric pad.

    >>> keras_same_padding((3, 96), 2)
    (0, 1, 0, 1)
    >>> keras_same_padding((12, 12), (3, 3), (1, 2))
    (0, 1, 1, 1)
    """
    pads = []
    for n, k, s in zip(size, _pair(kernel_size), _pair(stride)):
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return (left, right, top, bottom)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with Keras ``padding='same'``: asymmetric zero padding for even kernels.

    (B, C_in, H, W) -> (B, C_out, ceil(H / s_h), ceil(W / s_w)).

    >>> Conv2dSame(1, 16, 2)(torch.zeros(4, 1, 3, 96)).shape
    torch.Size([4, 16, 3, 96])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = keras_same_padding(tuple(x.shape[-2:]), self.kernel_size, self.stride)
        return super().forward(nn.functional.pad(x, pad))


def _taps(h: torch.Tensor, kernel_size, stride, output_shape):
    """The k_h k_w strided views (H', W', B, C) of h (H, W, B, C), one per kernel offset (i, j)."""
    (kh, kw), (sh, sw), (oh, ow) = kernel_size, stride, output_shape
    return [h[i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw] for i in range(kh) for j in range(kw)]


class _Patches(torch.autograd.Function):
    """(H, W, B, C) -> (L, B, C k_h k_w) patches, with a backward that accumulates into one
    buffer (autograd's own would allocate a full-size zero tensor per kernel offset)."""

    @staticmethod
    def forward(ctx, h, kernel_size, stride, output_shape):
        ctx.meta = (h.shape, kernel_size, stride, output_shape)
        oh, ow = output_shape
        return torch.stack(_taps(h, kernel_size, stride, output_shape), dim=-1).reshape(oh * ow, h.shape[2], -1)

    @staticmethod
    def backward(ctx, grad):
        shape, kernel_size, stride, (oh, ow) = ctx.meta
        g = grad.reshape(oh, ow, shape[2], shape[3], -1)  # (H', W', B, C, k_h k_w)
        out = grad.new_zeros(shape)
        for t, view in enumerate(_taps(out, kernel_size, stride, (oh, ow))):
            view += g[..., t]
        return out, None, None, None


class LocallyConnected2d(nn.Module):
    """2D locally-connected layer (Keras ``LocallyConnected2D``): a convolution whose weights
    differ at every output position.

    'valid' padding: an (H, W) input gives (H', W') = ((H - k_h) // s_h + 1, (W - k_w) // s_w
    + 1) outputs. Weight (H' W', C_in k_h k_w, C_out) with the patch index ordered (c, i, j);
    bias (C_out, H', W'). Computed as patches (L, B, C_in k_h k_w) and one batched matmul
    with the L position-wise weights:

        y[b, f, p, q] = sum_{c,i,j} x[b, c, p s_h + i, q s_w + j] W[p W' + q, (c, i, j), f] + b[f, p, q]

    (B, C_in, H, W) -> (B, C_out, H', W'). ``init`` is ``"he_uniform"``, ``"glorot_uniform"``
    or ``"glorot_normal"`` with the fans of the equivalent convolution.

    >>> lc = LocallyConnected2d(16, 6, (4, 97), 2)
    >>> lc(torch.zeros(2, 16, 4, 97)).shape
    torch.Size([2, 6, 3, 96])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        input_shape: tuple[int, int],
        kernel_size,
        stride=1,
        bias: bool = True,
        init: str = "glorot_uniform",
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.input_shape = _pair(input_shape)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        (h, w), (kh, kw), (sh, sw) = self.input_shape, self.kernel_size, self.stride
        self.output_shape = ((h - kh) // sh + 1, (w - kw) // sw + 1)
        if min(self.output_shape) < 1:
            raise ValueError(f"locally-connected kernel {self.kernel_size} does not fit an input of shape {self.input_shape}")
        n_pos, n_patch = self.output_shape[0] * self.output_shape[1], self.in_channels * kh * kw
        self.weight = nn.Parameter(torch.empty(n_pos, n_patch, self.out_channels))
        self.bias = nn.Parameter(torch.zeros(self.out_channels, *self.output_shape)) if bias else None
        fan_in, fan_out = n_patch, self.out_channels * kh * kw
        if init == "he_uniform":
            bound = math.sqrt(6.0 / fan_in)
            nn.init.uniform_(self.weight, -bound, bound)
        elif init == "glorot_uniform":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            nn.init.uniform_(self.weight, -bound, bound)
        elif init == "glorot_normal":
            nn.init.trunc_normal_(self.weight, std=math.sqrt(2.0 / (fan_in + fan_out)))
        else:
            raise ValueError(f"unknown init {init!r}; known: he_uniform, glorot_uniform, glorot_normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != (self.in_channels, *self.input_shape):
            raise ValueError(
                f"locally-connected layer expects (B, {self.in_channels}, {self.input_shape[0]}, {self.input_shape[1]}), got {tuple(x.shape)}"
            )
        oh, ow = self.output_shape
        # Patches straight in the (L, B, C k_h k_w) layout of the batched matmul: from an
        # (H, W, B, C) copy every patch entry is a contiguous run of C channels, which on CPU
        # is about 1.5x faster than F.unfold followed by its large transposing copy.
        h = x.permute(2, 3, 0, 1).contiguous()  # (H, W, B, C)
        patches = _Patches.apply(h, self.kernel_size, self.stride, self.output_shape)  # (L, B, C k_h k_w), index (c, i, j)
        out = torch.bmm(patches, self.weight)  # (L, B, C_out)
        out = out.permute(1, 2, 0).reshape(x.shape[0], self.out_channels, oh, ow)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, input_shape={self.input_shape}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, bias={self.bias is not None}"
        )


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016) as in CaloGAN: how alike a sample is
    to the rest of its batch.

    Features f (B, F) are projected by a tensor T to K kernels of dimension D, M = f T + b
    (B, K, D); the output is the mean similarity o[i, k] = (1/B) sum_j exp(-||M[i, k] -
    M[j, k]||_1) (B, K), in (0, 1]: 1 when the whole batch is alike, 1/B when sample i is far
    from all others (the sum includes j = i). The CaloGAN code wraps the sum in tanh instead,
    which is exactly 1 in float32 once the sum exceeds about 9, so with batches of 256 and
    close samples (a scalar occupancy) it passes no gradient at all; the mean keeps the same
    information without saturating.

    >>> MinibatchDiscrimination(7, 10, 10)(torch.zeros(5, 7)).shape
    torch.Size([5, 10])
    """

    def __init__(self, in_features: int, n_kernels: int = 10, kernel_dim: int = 10) -> None:
        super().__init__()
        self.n_kernels, self.kernel_dim = int(n_kernels), int(kernel_dim)
        self.weight = nn.Parameter(torch.empty(in_features, self.n_kernels * self.kernel_dim))
        self.bias = nn.Parameter(torch.zeros(self.n_kernels, self.kernel_dim))
        bound = math.sqrt(6.0 / (in_features + self.n_kernels * self.kernel_dim))
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x @ self.weight).view(x.shape[0], self.n_kernels, self.kernel_dim) + self.bias  # (B, K, D)
        m = m.transpose(0, 1)  # (K, B, D)
        dist = torch.cdist(m, m, p=1.0)  # (K, B, B) L1 distances; 2.5x faster than broadcasting on CPU
        return torch.exp(-dist).mean(-1).transpose(0, 1)  # (B, K)


def hard_sparsity(x: torch.Tensor) -> torch.Tensor:
    """Fraction of non-zero entries per sample (eq. 4 of arXiv:1711.08813). (B, ...) -> (B,); no gradient."""
    return (x != 0).flatten(1).to(x.dtype).mean(1)


def soft_sparsity(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Differentiable occupancy per sample (soft sparsity, eq. 5 of arXiv:1711.08813 as read here).

    Each entry counts s(x) = beta |x|^alpha / (beta |x|^alpha + 1), in [0, 1): exactly 0 at
    x = 0, 1/2 at |x| = beta^(-1 / alpha), and the indicator 1[x != 0] of eq. 4 in the limit
    beta -> inf (eq. 6); alpha sets how sharp the step is in log |x|. Eq. 5 as printed,
    (|x|^a + |x|^-b) / (|x|^a + |x|^-b + 1), tends to 1 for every x (also x -> 0), contrary to
    its stated limit, so we use this form with the same two hyper-parameters. Entries at
    exactly 0 pass no gradient. (B, ...) -> (B,).

    >>> round(soft_sparsity(torch.tensor([[0.0, 1.0, 0.0, 4.0]]), alpha=1.0, beta=1.0).item(), 6)
    0.325
    """
    if alpha <= 0 or beta <= 0:
        raise ValueError(f"soft sparsity needs alpha > 0 and beta > 0, got alpha={alpha}, beta={beta}")
    a = x.flatten(1).abs()
    hit = a > 0
    p = beta * torch.where(hit, a, torch.ones_like(a)) ** alpha  # safe power: no inf gradient at 0
    return torch.where(hit, p / (p + 1.0), torch.zeros_like(a)).mean(1)


def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) area-weighted resampling of n_in equal bins onto n_out over one extent.

    Row i averages the input bins under output bin i with weights equal to their overlap, so
    rows sum to 1: an integer upsampling repeats values, an integer downsampling averages
    them (CaloGAN's UpSampling2D + AveragePooling2D), other ratios share bins pro rata.

    >>> resize_matrix(4, 2).tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    i = torch.arange(n_out, dtype=torch.float64)[:, None]
    j = torch.arange(n_in, dtype=torch.float64)[None, :]
    # in units of 1 / (n_in n_out): output bin i is [i n_in, (i + 1) n_in], input bin j is [j n_out, (j + 1) n_out]
    overlap = (torch.minimum((i + 1) * n_in, (j + 1) * n_out) - torch.maximum(i * n_in, j * n_out)).clamp_min(0)
    return (overlap / n_in).to(torch.float32)


def resize_image(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(B, C, r, c) -> (B, C, r', c') with ``rows`` (r', r) and ``cols`` (c', c) from ``resize_matrix``."""
    return rows @ x @ cols.transpose(0, 1)


class LayerAttention(nn.Module):
    """CaloGAN layer-to-layer attention: a layer's image inherits from the layer before it.

    The previous layer's image (B, 1, r', c') is resized to this layer's shape (r, c) by area
    resampling, concatenated with this layer's own image to (B, 2, r, c), zero-padded by one
    and mapped by a 3x3 locally-connected layer (``local=True``, the CaloGAN) or a 3x3
    convolution (``local=False``, the conditional CaloGAN's translation-invariant variant) to
    two logits per cell; a softmax over the two channels weights the sum of the two images:

        out = w_0 * own + w_1 * carried,  (w_0, w_1) = softmax(mix(pad([own, carried])))

    The carried-over channel's bias starts at ``carry_bias`` (-10): at first a layer keeps
    its own image (w_1 ~ e^-10) and learns how much to take over. (B, 1, r, c) -> (B, 1, r, c).

    >>> att = LayerAttention((3, 96), (12, 12))
    >>> att(torch.zeros(2, 1, 12, 12), torch.zeros(2, 1, 3, 96)).shape
    torch.Size([2, 1, 12, 12])
    """

    def __init__(self, previous_shape: tuple[int, int], shape: tuple[int, int], local: bool = True, carry_bias: float = -10.0) -> None:
        super().__init__()
        self.previous_shape, self.shape = _pair(previous_shape), _pair(shape)
        self.register_buffer("rows", resize_matrix(self.previous_shape[0], self.shape[0]), persistent=False)
        self.register_buffer("cols", resize_matrix(self.previous_shape[1], self.shape[1]), persistent=False)
        padded = (self.shape[0] + 2, self.shape[1] + 2)
        self.mix = LocallyConnected2d(2, 2, padded, 3) if local else nn.Conv2d(2, 2, 3)
        with torch.no_grad():
            self.mix.bias.zero_()
            self.mix.bias[1] = carry_bias

    def forward(self, own: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        carried = resize_image(previous, self.rows, self.cols)  # (B, 1, r, c)
        x = torch.cat([own, carried], dim=1)  # (B, 2, r, c)
        w = torch.softmax(self.mix(nn.functional.pad(x, (1, 1, 1, 1))), dim=1)
        return (x * w).sum(dim=1, keepdim=True)


class Blur2d(nn.Module):
    """Fixed n x m box blur (the conditional CaloGAN's frozen smearing kernels).

    Weights are 1/(n m) and never trained (a buffer, not a parameter); Keras 'same' zero
    padding keeps the shape, so energy away from the edges is conserved. Each channel is
    blurred on its own. (B, C, H, W) -> (B, C, H, W).

    >>> Blur2d((1, 3))(torch.tensor([[[[0.0, 3.0, 0.0, 0.0]]]])).tolist()
    [[[[1.0, 1.0, 1.0, 0.0]]]]
    """

    def __init__(self, kernel_size) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        n, m = self.kernel_size
        if n < 1 or m < 1:
            raise ValueError(f"blur kernel must be at least 1x1, got {self.kernel_size}")
        self.register_buffer("weight", torch.full((1, 1, n, m), 1.0 / (n * m)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = nn.functional.pad(x, keras_same_padding(tuple(x.shape[-2:]), self.kernel_size))
        return nn.functional.conv2d(x, self.weight.expand(c, 1, *self.kernel_size).to(x.dtype), groups=c)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
