"""Per-shower latent noise: a counter-based function of (seed, shower index), and sub-stream seeds."""

from __future__ import annotations

import numpy as np

from calogan.errors import ConfigError

__all__ = ["derive_seed", "latent_noise"]

_NOISE_DOMAIN = 0x63616C6F67616E  # "calogan": second word of the Philox key, apart from other uses of a seed


def latent_noise(seed: int, start: int, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 N(0, 1) latent vectors of showers ``start`` .. ``start + n - 1`` of stream ``seed``.

    Counter-based: shower i's vector is a function of (seed, i) only (Philox keyed by the
    seed, positioned at i's counter; Box-Muller on float32 uniforms), so any batching of a
    run, and any backend fed from it, sees the same noise. Uniforms carry 24 bits, so
    |z| <= 5.8 (a 1e-8 tail is cut).

    >>> a = latent_noise(7, 0, 5, 3)
    >>> bool((np.concatenate([latent_noise(7, 0, 2, 3), latent_noise(7, 2, 3, 3)]) == a).all())
    True
    """
    for name, v in (("seed", seed), ("start", start), ("n", n), ("dim", dim)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"latent_noise: {name} must be an integer, got {v!r}")
    if not 0 <= seed < 2**64:
        raise ConfigError(f"seed must be in [0, 2^64), got {seed}")
    if start < 0 or n < 0 or dim < 1:
        raise ConfigError(f"latent_noise needs start >= 0, n >= 0, dim >= 1, got {start}, {n}, {dim}")
    pairs = (dim + 1) // 2
    per = 8 * -(-2 * pairs // 8)  # uniforms per shower: whole Philox blocks (4 x 64 bits = 8 float32)
    counter = int(start) * (per // 8)
    bits = np.random.Philox(
        key=np.array([int(seed), _NOISE_DOMAIN], dtype=np.uint64),
        counter=np.array([counter & (2**64 - 1), counter >> 64, 0, 0], dtype=np.uint64),
    )
    u = np.random.Generator(bits).random((int(n), per), dtype=np.float32)
    radius = np.sqrt(np.float32(-2.0) * np.log1p(-u[:, :pairs]))  # (n, pairs); u < 1 keeps it finite
    angle = np.float32(2.0 * np.pi) * u[:, pairs : 2 * pairs]
    z = np.empty((int(n), 2 * pairs), np.float32)
    np.multiply(radius, np.cos(angle), out=z[:, :pairs])
    np.multiply(radius, np.sin(angle), out=z[:, pairs:])
    return z[:, :dim]


def derive_seed(seed: int, *words: int) -> int:
    """A seed for a sub-stream (a route, a particle) of ``seed``.

    >>> derive_seed(7, 1) == derive_seed(7, 1) != derive_seed(7, 2)
    True
    """
    return int(np.random.SeedSequence([int(seed), *[int(w) & (2**32 - 1) for w in words]]).generate_state(2, np.uint32).view(np.uint64)[0])
