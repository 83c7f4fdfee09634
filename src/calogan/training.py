"""The one training loop for every model family, configured by a frozen TrainConfig."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.data import ShowerData
from calogan.errors import CaloganError, ConfigError
from calogan.models import build_model, config_from_dict, family_class, read_yaml

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "apply_overrides", "train"]

_OPTIMIZERS = ("adam", "rmsprop")
_SAMPLING = ("batch", "big_batch", "dataset")
_PRECISIONS = ("fp32", "bf16")
# Options a resumed run may change without breaking the continuation (how long, how loud).
_RESUMABLE = {"max_steps", "max_minutes", "progress", "log_every"}


class TrainingDiverged(CaloganError):
    """A loss became NaN or inf; the message names the step and the last good checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; stored as YAML beside its checkpoints.

    Data: ``data`` (shower file), optional ``geometry`` (else the file's), ``conditions`` the
    model is conditioned on (``e_inc`` first, then x0, y0, theta, phi), ``exclude_energy``
    bands [lo, hi] GeV removed before anything else (the interpolation test), and the
    validation set: ``val_data`` or a random ``val_fraction`` of ``data``.

    Model: ``family`` (a registry name, see ``calogan.models``) with ``model`` options of its
    config dataclass, and ``transform`` options of ``TransformConfig``.

    Optimisation: ``optimizer`` ``adam`` (``betas``) or ``rmsprop`` (``rmsprop_alpha``), the
    learning rates ``lr_g`` and ``lr_d``, ``batch_size``. One *step* is ``d_steps``
    discriminator updates on consecutive batches of one big batch of ``d_steps *
    batch_size`` showers, then ``g_steps`` generator updates. The generator's conditions
    (``condition_sampling``, seed 001): ``batch`` reuses the last discriminator batch's,
    ``big_batch`` draws ``batch_size`` of the big batch's, ``dataset`` draws from the whole
    training set.

    Length: ``max_steps`` and the wall-clock budget ``max_minutes`` (whichever ends first;
    validation and checkpoints count). Every ``val_every`` steps the generator is run at the
    validation showers' conditions (``val_copies`` times each) and scored by chi2/ndf of E_tot
    per incident-energy bin (``val_bins`` bins); the best step is kept as ``best.pt``. Every
    ``checkpoint_every`` steps ``last.pt`` is written with everything a bit-for-bit resume
    needs.

    Machine: ``device`` ``auto`` (CUDA if present, else CPU), ``cpu`` or ``cuda[:i]``;
    ``precision`` ``bf16`` (autocast: for CUDA; it runs on a CPU too, which is how the tests
    cover that path, but is rarely faster there) or ``fp32``; ``tf32`` on CUDA; ``compile``
    runs the generator through ``torch.compile``; ``threads`` sets torch's CPU threads.
    """

    family: str = "wgan"
    model: dict = field(default_factory=dict)
    transform: dict = field(default_factory=dict)
    conditions: tuple[str, ...] = ("e_inc",)
    data: str | None = None
    geometry: str | None = None
    val_data: str | None = None
    val_fraction: float = 0.1
    exclude_energy: tuple[tuple[float, float], ...] = ()
    seed: int = 0
    batch_size: int = 128
    optimizer: str = "adam"
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    rmsprop_alpha: float = 0.99
    d_steps: int = 5
    g_steps: int = 1
    condition_sampling: str = "batch"
    max_steps: int = 10000
    max_minutes: float | None = None
    val_every: int = 500
    val_copies: int = 1
    val_bins: int = 10
    checkpoint_every: int = 500
    log_every: int = 50
    device: str = "auto"
    precision: str = "fp32"
    tf32: bool = True
    compile: bool = False
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(key, why):
            raise ConfigError(f"option {key}: {why}")

        if self.optimizer not in _OPTIMIZERS:
            bad("optimizer", f"must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}")
        if self.condition_sampling not in _SAMPLING:
            bad("condition_sampling", f"must be one of {', '.join(_SAMPLING)}, got {self.condition_sampling!r}")
        if self.precision not in _PRECISIONS:
            bad("precision", f"must be one of {', '.join(_PRECISIONS)}, got {self.precision!r}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            bad("device", f"must be auto, cpu or cuda[:N], got {self.device!r}")
        for key in (
            "batch_size",
            "d_steps",
            "g_steps",
            "max_steps",
            "val_every",
            "val_copies",
            "val_bins",
            "checkpoint_every",
            "log_every",
        ):
            if getattr(self, key) < 1:
                bad(key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("lr_g", "lr_d"):
            if not getattr(self, key) > 0:
                bad(key, f"must be > 0, got {getattr(self, key)}")
        if not all(0 <= b < 1 for b in self.betas):
            bad("betas", f"must be two numbers in [0, 1), got {list(self.betas)}")
        if not 0 <= self.rmsprop_alpha < 1:
            bad("rmsprop_alpha", f"must be in [0, 1), got {self.rmsprop_alpha}")
        if not 0 <= self.val_fraction < 1:
            bad("val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            bad("max_minutes", f"must be > 0, got {self.max_minutes}")
        if self.threads is not None and self.threads < 1:
            bad("threads", f"must be >= 1, got {self.threads}")
        for lo, hi in self.exclude_energy:
            if not lo < hi:
                bad("exclude_energy", f"each band must be [lo, hi] with lo < hi, got [{lo}, {hi}]")
        if not self.conditions or self.conditions[0] != "e_inc":
            bad("conditions", f"must start with e_inc, got {list(self.conditions)}")
        # Check the nested options now, before any data is read.
        from calogan.transforms import TransformConfig

        config_from_dict(TransformConfig, self.transform, "transform")
        config_from_dict(family_class(self.family).config_class, self.model, "model")

    # -- YAML --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, plain YAML types

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a mapping of options, got {type(values).__name__}")
        try:
            return config_from_dict(cls, values, where="")
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_yaml(path, "config"), where=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """``config`` with ``key=value`` overrides (``--set``): values are YAML (``lr_g=2e-4``,
    ``betas=[0.5,0.9]``); ``model.KEY`` and ``transform.KEY`` set nested options."""
    values = config.to_dict()
    names = [f.name for f in fields(TrainConfig)]
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot parse value {text!r}") from None
        head, _, rest = key.partition(".")
        if head not in names:
            raise ConfigError(f"--set: unknown option {head!r}; options: {', '.join(names)}")
        if rest:
            if head not in ("model", "transform"):
                raise ConfigError(f"--set: option {head!r} has no sub-options (only model.KEY and transform.KEY do)")
            values[head] = {**values[head], rest: value}
        else:
            values[head] = value
    return TrainConfig.from_dict(values, where="--set")


@dataclass(frozen=True)
class TrainResult:
    """How a run ended: its last step, why it stopped, its best validation step."""

    out_dir: Path
    step: int
    stopped: str  # "max_steps" or "max_minutes"
    elapsed_s: float
    best_step: int | None
    best_chi2: float | None
    last: Path
    best: Path
    showers_per_s: float


class _Sampler:
    """Data order: a random permutation per epoch, consumed in big batches; the tail of an
    epoch too short for a big batch is skipped. Its state makes resume exact."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.perm = self.rng.permutation(n)
        self.pos = 0
        self.epoch = 0

    def take(self, k: int) -> np.ndarray:
        if self.pos + k > self.n:
            self.perm, self.pos, self.epoch = self.rng.permutation(self.n), 0, self.epoch + 1
        out = self.perm[self.pos : self.pos + k]
        self.pos += k
        return out

    def state(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "perm": torch.from_numpy(self.perm.astype(np.int64)),
            "pos": self.pos,
            "epoch": self.epoch,
        }

    def load(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.perm = state["perm"].numpy().astype(np.int64)
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"option device: {name!r} requested but CUDA is not available")
    return torch.device(name)


def _fingerprint(data: ShowerData) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(data.e_inc).tobytes())
    h.update(np.float64(data.cells.sum(dtype=np.float64)).tobytes())
    return f"{len(data)}:{h.hexdigest()[:16]}"


def _load_data(config: TrainConfig) -> tuple[ShowerData, ShowerData | None, dict]:
    from calogan.io import inspect, read_showers

    if not config.data:
        raise ConfigError("no training data: set 'data' in the config or pass --data FILE")
    data = read_showers(config.data, geometry=config.geometry)
    attrs = {k: v for k, v in inspect(config.data, data.geometry).attrs.items() if isinstance(v, (str, int, float))}
    if config.exclude_energy:
        keep = np.ones(len(data), bool)
        for lo, hi in config.exclude_energy:
            keep &= ~((data.e_inc >= lo) & (data.e_inc <= hi))
        if not keep.any():
            raise ConfigError(f"option exclude_energy {list(map(list, config.exclude_energy))} removes every shower of {config.data}")
        data = data.select(keep)
    if config.val_data:
        val = read_showers(config.val_data, geometry=data.geometry)
        return data, val, attrs
    if config.val_fraction == 0:
        return data, None, attrs
    train, val = data.split((1 - config.val_fraction, config.val_fraction), seed=config.seed)
    return train, val, attrs


def _optimizer(config: TrainConfig, params, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(config.betas))
    # seed 001: momentum can work against you in adversarial training -> RMSProp
    return torch.optim.RMSprop(params, lr=lr, alpha=config.rmsprop_alpha)


def _validate(model, val: ShowerData, config: TrainConfig) -> dict[str, float]:
    """chi2/ndf of E_tot per incident-energy bin between validation and generated showers."""
    from calogan.generate import Conditions, generate
    from calogan.metrics import energy_bin_edges, energy_chi2, response_resolution

    conds = Conditions.from_data(val)
    if config.val_copies > 1:
        conds = conds.select(np.tile(np.arange(len(val)), config.val_copies))
    # The validation draws its own noise and must not move the training RNG streams. It runs
    # the model as a checkpoint will be used: in eval mode (batch norm on its running
    # statistics, which validation batches must not update; no dropout).
    model.eval()
    try:
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            gen = ShowerData.concatenate(list(generate(model, conds, seed=config.seed + 1, batch_size=4096)))
    finally:
        model.train()
    value, unc = energy_chi2(val, gen, n_bins=config.val_bins)
    if not np.isfinite(gen.cells).all():
        return {"chi2": float(value), "chi2_err": float(unc)}
    # Diagnostics beside the selection metric: generated over reference mean response and
    # resolution, averaged over the energy bins.
    edges = energy_bin_edges(val.e_inc, config.val_bins)
    ref = response_resolution(val.cells.sum(1), val.e_inc, edges, n_boot=2)
    cand = response_resolution(gen.cells.sum(1), gen.e_inc, edges, n_boot=2)
    out = {"chi2": float(value), "chi2_err": float(unc)}
    for key in ("response", "resolution"):
        ratio = cand[key] / ref[key]  # NaN in bins of fewer than 10 showers
        if np.isfinite(ratio).any():
            out[f"{key}_ratio"] = float(ratio[np.isfinite(ratio)].mean())
    return out


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, force: bool = False) -> TrainResult:
    """Train ``config.family`` on ``config.data``; checkpoints and logs go to ``out_dir``.

    ``out_dir`` receives ``config.yaml``, ``last.pt`` (every ``checkpoint_every`` steps and
    at the end, with optimiser, RNG and data-order state), ``best.pt`` (the best validation
    step) and ``log.jsonl``. ``resume=True`` continues from ``last.pt`` exactly as the
    uninterrupted run would have (same device and thread count); only ``max_steps``,
    ``max_minutes``, ``progress`` and ``log_every`` may differ from the stored config.
    A NaN or inf loss stops training with ``TrainingDiverged``; ``last.pt`` is then the last
    good state.
    """
    out = Path(out_dir)
    last_path, best_path, log_path = out / "last.pt", out / "best.pt", out / "log.jsonl"
    ckpt = None
    if resume:
        if not last_path.exists():
            raise ConfigError(f"--resume: {last_path} does not exist (nothing to resume)")
        ckpt = load_checkpoint(last_path)
        if ckpt.training is None:
            raise ConfigError(f"--resume: {last_path} holds no training state")
        stored = TrainConfig.from_dict(ckpt.train_config, where=str(last_path))
        changed = sorted(k for k in stored.to_dict() if stored.to_dict()[k] != config.to_dict()[k] and k not in _RESUMABLE)
        if changed:
            raise ConfigError(
                f"--resume: option {changed[0]} differs from the run in {out} ({stored.to_dict()[changed[0]]!r} there, "
                f"{config.to_dict()[changed[0]]!r} now); only {', '.join(sorted(_RESUMABLE))} may change"
            )
    else:
        if last_path.exists() and not force:
            raise ConfigError(f"{out}: holds a run already; pass --resume to continue it or --force to start again")
        out.mkdir(parents=True, exist_ok=True)

    device = _device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32

    train_data, val, data_attrs = _load_data(config)
    fingerprint = _fingerprint(train_data)
    n_big = config.d_steps * config.batch_size
    if n_big > len(train_data):
        raise ConfigError(f"d_steps * batch_size = {n_big} exceeds the {len(train_data)} training showers")

    torch.manual_seed(config.seed)  # the models draw noise and penalty points from torch's RNG
    sampler = _Sampler(len(train_data), config.seed)
    if ckpt is None:
        from calogan.models.base import ConditionSpec
        from calogan.transforms import ShowerTransform, TransformConfig

        transform = ShowerTransform.fit(
            config_from_dict(TransformConfig, config.transform, "transform"), train_data.cells, train_data.e_inc
        )
        spec = ConditionSpec.from_data(train_data, tuple(config.conditions))
        model = build_model(config.family, train_data.geometry, spec, transform, config.model)
        model.prepare(train_data)
    else:
        model = ckpt.model
        if ckpt.training.get("data_fingerprint") != fingerprint:
            raise ConfigError(f"--resume: the training data differ from those of the run in {out} ({config.data})")
    model.to(device).train()

    opt_g = _optimizer(config, model.generator_parameters(), config.lr_g)
    opt_d = _optimizer(config, model.discriminator_parameters(), config.lr_d)
    step, elapsed, best = 0, 0.0, {"chi2": None, "step": None}
    if ckpt is not None:
        t = ckpt.training
        opt_g.load_state_dict(t["opt_g"])
        opt_d.load_state_dict(t["opt_d"])
        sampler.load(t["sampler"])
        torch.set_rng_state(t["torch_rng"])
        if device.type == "cuda" and t.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(t["cuda_rng"], device)
        step, elapsed, best = ckpt.step, float(t["elapsed"]), dict(t["best"])
    else:
        _write_atomic(out / "config.yaml", config.to_yaml())
        log_path.write_text("")

    # Model-space training set on the device once: (N, n_cells) and physical conditions (N, n_cond).
    x_all = torch.from_numpy(model.transform.forward(train_data.cells, train_data.e_inc)).to(device)
    c_all = model.conditions.tensor(train_data).to(device)
    d_params = model.discriminator_parameters()
    forward = model.forward
    if config.compile:
        model.forward = torch.compile(forward)
    if config.precision == "bf16":
        autocast = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext

    def checkpoint(path, with_training: bool, metrics=None):
        # A finite loss does not prove finite weights: the update after it may have overflowed.
        # Never let a non-finite model replace the last good checkpoint.
        if not all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()):
            bar.close()
            raise TrainingDiverged(
                f"step {step}: non-finite model weights; training stopped, {path} was not overwritten "
                f"(last good checkpoint: {_describe_last(last_path)}); lower the learning rates or resume from it"
            )
        training = None
        if with_training:
            training = {
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "sampler": sampler.state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "elapsed": elapsed,
                "best": best,
                "data_fingerprint": fingerprint,
            }
        save_checkpoint(path, model, step=step, train_config=config.to_dict(), metrics=metrics, data_attrs=data_attrs, training=training)

    def log(record):
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def validate():
        if val is None:
            return None
        metrics = _validate(model, val, config)
        metrics["step"] = step
        log({"step": step, "elapsed_s": round(elapsed, 2), "val": metrics})
        if not math.isfinite(metrics["chi2"]):
            return metrics
        if best["chi2"] is None or metrics["chi2"] < best["chi2"]:
            best.update(chi2=metrics["chi2"], step=step)
            checkpoint(best_path, False, metrics)
        return metrics

    from tqdm.auto import tqdm

    bar = tqdm(
        total=config.max_steps, initial=step, disable=not config.progress, unit="step", dynamic_ncols=True, desc=f"train {config.family}"
    )
    running: dict[str, float] = {}
    postfix: dict[str, str] = {}  # losses, throughput, time left and the validation, as the bar shows them
    n_running, t_log, showers_log = 0, time.perf_counter(), 0
    t_start = time.perf_counter() - elapsed
    stopped = "max_steps"
    last_val_step = -1
    throughput = 0.0
    if step >= config.max_steps:
        stopped = "max_steps"
    while step < config.max_steps:
        if config.max_minutes is not None and elapsed >= 60 * config.max_minutes:
            stopped = "max_minutes"
            break
        idx = sampler.take(n_big)
        logs: dict[str, torch.Tensor] = {}
        losses = []
        for k in range(config.d_steps):
            b = torch.from_numpy(idx[k * config.batch_size : (k + 1) * config.batch_size]).to(device)
            real, cond = x_all[b], c_all[b]
            with autocast():
                loss_d, logs_d = model.discriminator_loss(real, cond)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            losses.append(loss_d.detach())
        logs.update(logs_d)
        for p in d_params:  # the critic is a constant during generator updates
            p.requires_grad_(False)
        for _ in range(config.g_steps):
            if config.condition_sampling == "big_batch":
                cond = c_all[torch.from_numpy(sampler.rng.choice(idx, config.batch_size, replace=False)).to(device)]
            elif config.condition_sampling == "dataset":
                cond = c_all[torch.from_numpy(sampler.rng.choice(len(train_data), config.batch_size, replace=False)).to(device)]
            with autocast():
                loss_g, logs_g = model.generator_loss(cond)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            losses.append(loss_g.detach())
        for p in d_params:
            p.requires_grad_(True)
        logs.update(logs_g)
        logs["d_loss"], logs["g_loss"] = loss_d.detach(), loss_g.detach()
        # One device-to-host transfer per step (each is a CUDA sync): the logged values, then
        # every update's loss for the NaN guard.
        both = torch.stack([v.float() for v in logs.values()] + [v.float() for v in losses]).cpu().tolist()
        values, step_losses = both[: len(logs)], both[len(logs) :]
        step += 1
        if not all(math.isfinite(v) for v in step_losses):
            bar.close()
            bad = {k: v for k, v in zip(logs, values) if not math.isfinite(v)}
            raise TrainingDiverged(
                f"step {step}: non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items()) or 'a discriminator update'}); "
                f"training stopped, the last good checkpoint is {_describe_last(last_path)}; lower the learning rates or resume from it"
            )
        for k, v in zip(logs, values):
            running[k] = running.get(k, 0.0) + v
        n_running += 1
        showers_log += n_big
        elapsed = time.perf_counter() - t_start
        if step % config.log_every == 0 or step == config.max_steps:
            now = time.perf_counter()
            throughput = showers_log / max(now - t_log, 1e-9)
            mean = {k: v / n_running for k, v in running.items()}
            log(
                {
                    "step": step,
                    "elapsed_s": round(elapsed, 2),
                    "showers_per_s": round(throughput, 1),
                    **{k: round(v, 6) for k, v in mean.items()},
                }
            )
            postfix.update({k: f"{v:.3g}" for k, v in mean.items() if k in ("d_loss", "g_loss", "w", "w_phys", "res_ratio")})
            postfix["shw/s"] = f"{throughput:.0f}"
            if config.max_minutes is not None:  # the bar's ETA counts max_steps; say when the clock stops the run
                postfix["left"] = f"{max(60 * config.max_minutes - elapsed, 0) / 60:.1f}min"
            bar.set_postfix(postfix, refresh=False)
            running, n_running, t_log, showers_log = {}, 0, now, 0
        if step % config.val_every == 0:
            metrics = validate()
            last_val_step = step
            if metrics is not None:
                postfix["val_chi2"] = f"{metrics['chi2']:.3g}"
                if best["chi2"] is not None:
                    postfix["best"] = f"{best['chi2']:.3g}@{best['step']}"
                bar.set_postfix(postfix, refresh=False)
        if step % config.checkpoint_every == 0:
            checkpoint(last_path, True)
        bar.update(1)
    bar.close()
    if last_val_step != step:
        validate()
    elapsed = time.perf_counter() - t_start
    checkpoint(last_path, True)
    if val is None:
        checkpoint(best_path, False)
        best.update(step=step)
    model.forward = forward
    return TrainResult(
        out_dir=out,
        step=step,
        stopped=stopped,
        elapsed_s=elapsed,
        best_step=best["step"],
        best_chi2=best["chi2"],
        last=last_path,
        best=best_path,
        showers_per_s=throughput,
    )


def _describe_last(path: Path) -> str:
    if not path.exists():
        return "none was written yet"
    return f"{path} (step {int(torch.load(path, map_location='cpu', weights_only=True)['step'])})"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)
