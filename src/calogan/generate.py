"""Generate showers from a trained model in chunks, at sampled or at a reference file's conditions."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from calogan.data import Conditions, ShowerData, particle_code, particle_name
from calogan.errors import ConfigError
from calogan.fastsim.generator import GeneratorBackend, TorchBackend
from calogan.io import ShowerWriter, iter_showers

__all__ = ["conditions_from_file", "generate", "generate_to_file", "parse_values", "sample_conditions"]

DEFAULT_BATCH = 10000


def parse_values(text: str, name: str = "--energy"):
    """A sampling rule from text: ``A:B`` uniform, ``A:B:log`` log-uniform, ``v1,v2,...``
    discrete values drawn with equal probability, ``v`` one value. ``name`` says in errors
    where the text came from (a parameter or a command-line flag).

    Returns a function ``(rng, n) -> (n,) float64``.
    """
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
                raise ValueError
            lo, hi = float(parts[0]), float(parts[1])
            if not lo <= hi:
                raise ConfigError(f"{name} {text!r}: the lower end must not exceed the upper end")
            if len(parts) == 3:
                if lo <= 0:
                    raise ConfigError(f"{name} {text!r}: a log-uniform range needs positive ends")
                return lambda rng, n: np.exp(rng.uniform(np.log(lo), np.log(hi), n))
            return lambda rng, n: rng.uniform(lo, hi, n)
        values = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise ConfigError(f"{name} must be A:B (uniform), A:B:log (log-uniform), v1,v2,... or a number; got {text!r}") from None
    return lambda rng, n: rng.choice(values, n)


def sample_conditions(
    spec,
    n: int,
    *,
    particle: str | int | None = None,
    energy: str = "1:100",
    extra: dict[str, str] | None = None,
    seed: int = 0,
    chunk_size: int = DEFAULT_BATCH,
) -> Iterator[Conditions]:
    """Random conditions for ``n`` showers of a model with ConditionSpec ``spec``, in chunks.

    ``energy`` and the texts of ``extra`` (keyed x0, y0, theta, phi) are ``parse_values``
    rules; a condition the model uses but ``extra`` does not name is drawn uniformly over
    its training range. ``particle`` defaults to the model's only particle. The values
    depend on ``seed`` and ``n``, not on ``chunk_size``.
    """
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    extra = dict(extra or {})
    unknown = sorted(set(extra) - set(spec.keys[1:]))
    if unknown:
        raise ConfigError(f"the model is not conditioned on {unknown}; its conditions: {', '.join(spec.keys)}")
    pdg = _particle(spec, particle)
    e_rule = parse_values(energy, "energy")
    rules = {}
    for key, (lo, hi) in zip(spec.keys[1:], spec.ranges[1:]):
        rules[key] = parse_values(extra[key], f"extra {key}") if key in extra else parse_values(f"{lo}:{hi}")
    # One stream per condition, each drawn in order: the values do not depend on chunk_size.
    rng = np.random.default_rng([seed, 0])
    rngs = {key: np.random.default_rng([seed, spec.keys.index(key)]) for key in rules}
    warned = False
    for start in range(0, n, chunk_size):
        m = min(chunk_size, n - start)
        e = e_rule(rng, m)
        if (e <= 0).any():
            raise ConfigError(f"energy {energy!r} gives non-positive energies")
        conds = {k: rule(rngs[k], m) for k, rule in rules.items()}
        warned = warned or _warn_outside(spec, e, conds)
        yield Conditions(e, np.full(m, pdg, np.int32), conds)


def conditions_from_file(path: str | Path, spec, *, chunk_size: int = DEFAULT_BATCH) -> Iterator[Conditions]:
    """The conditions of every shower of a reference file, in its order, streamed in chunks.

    Showers without a particle label take the model's only particle.
    """
    warned = False
    for chunk in iter_showers(path, chunk_size):
        missing = [k for k in spec.keys[1:] if k not in chunk.conditions]
        if missing:
            raise ConfigError(f"{path}: the model is conditioned on {missing} but the file has no such key")
        pdg = chunk.pdg
        if (pdg == 0).any():
            pdg = np.where(pdg == 0, _particle(spec, None), pdg)
        if len(spec.particles) > 1:
            _particle_check(spec, np.unique(pdg), f"{path}: ")
        conds = {k: chunk.conditions[k] for k in spec.keys[1:]}
        warned = warned or _warn_outside(spec, chunk.e_inc, conds)
        yield Conditions(chunk.e_inc, pdg, conds)


def generate(
    model,
    conditions: Conditions | Iterable[Conditions],
    *,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    progress=None,
) -> Iterator[ShowerData]:
    """Showers (physical cells, MeV) for ``conditions``, one ShowerData per batch, in order.

    ``model`` is a GANModel (run by torch where it is, as it is: call ``.eval()`` first;
    ``load_checkpoint`` does) or a ``calogan.fastsim.GeneratorBackend`` (torch with autocast
    or compile, onnxruntime). ``conditions`` is one Conditions or an iterable of them
    (streamed: memory stays that of one batch). Shower i (counted over the whole run) gets
    the latent noise ``latent_noise(seed, i, ...)``, so the same seed gives the same noise
    for any batch size and backend, and the same showers up to float rounding.
    ``progress`` is an optional tqdm-like bar, advanced by each batch's size.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    backend = model if isinstance(model, GeneratorBackend) else TorchBackend(model)
    keys = backend.conditions.keys[1:]
    done = 0
    for chunk in [conditions] if isinstance(conditions, Conditions) else conditions:
        for start in range(0, len(chunk), batch_size):
            part = chunk.select(slice(start, start + batch_size))
            cond = backend.conditions.tensor(part).numpy()  # (B, n_cond) physical
            cells = backend.generate(cond, seed, done)  # (B, n_cells) MeV
            done += len(part)
            if progress is not None:
                progress.update(len(part))
            yield ShowerData(backend.geometry, cells, part.e_inc, part.pdg, {k: part.conditions[k] for k in keys})


def generate_to_file(
    path: str | Path,
    model,
    conditions: Conditions | Iterable[Conditions],
    *,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    attrs: dict | None = None,
    force: bool = False,
    progress=None,
) -> int:
    """Generate into a CaloGAN-format HDF5 file (atomic, chunked); returns the shower count.

    ``model`` and ``progress`` as for ``generate``. The file carries the model's conditions
    as keys, the particle (attribute, or per shower for a multi-particle model) and ``attrs``.
    """
    spec = model.conditions
    many = len(spec.particles) > 1
    attrs = dict(attrs or {})
    if not many and spec.particles and spec.particles[0] != 0:
        attrs.setdefault("particle", particle_name(spec.particles[0]))
    with ShowerWriter(path, model.geometry, conditions=spec.keys[1:], per_shower_particle=many, attrs=attrs, force=force) as w:
        for data in generate(model, conditions, seed=seed, batch_size=batch_size, progress=progress):
            w.write(data)
        return w.n


def _particle(spec, particle) -> int:
    """The PDG code to generate: ``particle`` checked against the model's, or its only one."""
    known = [p for p in spec.particles if p != 0]
    if particle is None:
        if len(known) == 1:
            return known[0]
        if not known:
            return 0
        raise ConfigError(f"particle: the model knows several particles ({', '.join(particle_name(p) for p in known)}); name one")
    try:
        code = particle_code(particle)
    except ValueError as err:
        raise ConfigError(f"particle: {err}") from None
    _particle_check(spec, [code], "")
    return code


def _particle_check(spec, codes, where: str) -> None:
    known = [p for p in spec.particles if p != 0]
    bad = [c for c in codes if known and c not in known]
    if bad:
        raise ConfigError(
            f"{where}the model was trained on {', '.join(particle_name(p) for p in known)}, not {', '.join(particle_name(int(c)) for c in bad)}"
        )


def _warn_outside(spec, e_inc: np.ndarray, conds: dict[str, np.ndarray]) -> bool:
    """Warn (once per run: the callers stop asking after True) about conditions outside the training ranges."""
    for key, (lo, hi) in zip(spec.keys, spec.ranges):
        v = e_inc if key == "e_inc" else conds[key]
        span = hi - lo
        if v.size and (v.min() < lo - 1e-6 * span or v.max() > hi + 1e-6 * span):
            warnings.warn(f"{key} outside the training range [{lo:g}, {hi:g}]: the model extrapolates", stacklevel=3)
            return True
    return False
