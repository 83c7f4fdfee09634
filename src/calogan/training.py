"""The one training loop for every model family, configured by a frozen TrainConfig."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.config import config_from_dict, read_config
from calogan.data import Conditions, ShowerData
from calogan.errors import CaloganError, ConfigError
from calogan.generate import generate
from calogan.io import inspect, read_showers
from calogan.metrics import energy_bin_edges, energy_chi2, response_resolution
from calogan.models import build_model, family_class
from calogan.models.base import ConditionSpec
from calogan.runtime import resolve_device, resolve_threads, write_text
from calogan.transforms import ShowerTransform, TransformConfig

__all__ = ["GeneratorEMA", "TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "apply_overrides", "train"]

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
    batch_size`` showers, then ``g_steps`` generator updates. A family without a
    discriminator (the VAE, ``GANModel.adversarial`` false) makes no discriminator updates
    and has no discriminator optimiser (``lr_d`` and ``d_steps`` unused): its step is
    ``g_steps`` updates on consecutive batches of ``g_steps * batch_size`` showers. The generator's conditions
    (``condition_sampling``, the choices of the ATLAS GAN, arXiv:2109.02551): ``batch``
    reuses the last discriminator batch's, ``big_batch`` draws ``batch_size`` of the big
    batch's, ``dataset`` draws from the whole training set. ``ema_decay`` (off by default) keeps an exponential moving average of the
    generator's weights, updated after every step (``GeneratorEMA``); validation, ``best.pt``
    and so everything generated from it use the averaged weights, ``last.pt`` holds both.

    Length: ``max_steps`` and the wall-clock budget ``max_minutes`` (whichever ends first;
    validation and checkpoints count). Every ``val_every`` steps the generator is run at the
    validation showers' conditions (``val_copies`` times each) and scored by chi2/ndf of E_tot
    per incident-energy bin (``val_bins`` bins); the best step is kept as ``best.pt``. Every
    ``checkpoint_every`` steps ``last.pt`` is written with everything a bit-for-bit resume
    needs.

    Machine: ``device`` ``auto`` (CUDA if present, else CPU), ``cpu`` or ``cuda[:i]``;
    ``precision`` ``bf16`` (autocast: for CUDA; it runs on a CPU too, which is how the tests
    cover that path, but is rarely faster there) or ``fp32``; ``tf32`` on CUDA; ``compile``
    runs the generator through ``torch.compile``; ``threads`` sets torch's CPU threads (when
    unset: ``$CALOGAN_THREADS``, else torch's default). ``device`` and ``threads`` belong to the
    machine, not to a recipe: the shipped configs leave them out and ``calogan train`` takes
    them as ``--device`` and ``--threads``.
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
    ema_decay: float | None = None
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
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            bad("ema_decay", f"must be in [0, 1) (or null: off), got {self.ema_decay}")
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
        """The config of a YAML file, its ``extends:`` chain resolved (``calogan.config.read_config``)."""
        return cls.from_dict(read_config(path, "config"), where=str(path))

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

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "perm": torch.from_numpy(self.perm.astype(np.int64)),
            "pos": self.pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.perm = state["perm"].numpy().astype(np.int64)
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])


class GeneratorEMA:
    """Exponential moving average of the generator's parameters.

    After every training step ``ema <- decay * ema + (1 - decay) * w`` for each generator
    parameter ``w``; buffers (batch-norm statistics) are not averaged. ``applied()`` puts the
    averaged weights into the model for as long as a ``with`` block runs and restores the live
    ones exactly afterwards.

    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> _ = torch.nn.init.zeros_(net.weight)
    >>> ema = GeneratorEMA(net, net.parameters(), decay=0.5)  # the average starts at the weights: 0
    >>> _ = torch.nn.init.ones_(net.weight)  # an update moves the weight to 1
    >>> ema.update()  # 0.5 * 0 + 0.5 * 1
    >>> with ema.applied():
    ...     net.weight.item()
    0.5
    >>> net.weight.item()
    1.0
    """

    def __init__(self, model: torch.nn.Module, parameters, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {decay}")
        wanted = {id(p) for p in parameters}
        self.decay = float(decay)
        self.params = {name: p for name, p in model.named_parameters() if id(p) in wanted}
        self.shadow = {name: p.detach().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def applied(self):
        live = {name: p.detach().clone() for name, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(live[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu().clone() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise ConfigError(f"--resume: the stored EMA weights do not match the generator ({sorted(set(state) ^ set(self.shadow))[:3]})")
        for name, t in state.items():
            self.shadow[name].copy_(t)


@dataclass(frozen=True)
class _Run:
    """What stays fixed while a run trains: its config, folder, device and training data's identity."""

    config: TrainConfig
    out: Path
    device: torch.device
    data_attrs: dict
    fingerprint: str

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    @property
    def best(self) -> Path:
        return self.out / "best.pt"

    @property
    def log(self) -> Path:
        return self.out / "log.jsonl"


@dataclass
class TrainState:
    """Everything a run changes as it trains: model, optimisers, data order, EMA, step, clock, best.

    ``save`` writes the model (with ``training=True`` also ``training_state()``, what
    ``--resume`` needs: optimisers, sampler, torch RNG, EMA, elapsed time, best validation);
    ``load_training_state`` restores it. Adding state to a run (a learning-rate schedule, ...)
    is adding a field here and its line in those two methods; the loop does not change.
    """

    model: Any
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None  # None: a family without a discriminator
    sampler: _Sampler
    ema: GeneratorEMA | None = None
    step: int = 0
    elapsed: float = 0.0
    best: dict = field(default_factory=lambda: {"chi2": None, "step": None})

    @classmethod
    def create(cls, config: TrainConfig, model, sampler: _Sampler, device: torch.device) -> TrainState:
        """A state at step 0 around ``model`` (moved to ``device``, in train mode)."""
        model.to(device).train()
        opt_g = _optimizer(config, model.generator_parameters(), config.lr_g)
        opt_d = _optimizer(config, model.discriminator_parameters(), config.lr_d) if model.adversarial else None
        ema = GeneratorEMA(model, model.generator_parameters(), config.ema_decay) if config.ema_decay is not None else None
        return cls(model, opt_g, opt_d, sampler, ema)

    def training_state(self, run: _Run) -> dict:
        cuda = run.device.type == "cuda"
        return {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "sampler": self.sampler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(run.device) if cuda else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "elapsed": self.elapsed,
            "best": dict(self.best),
            "data_fingerprint": run.fingerprint,
        }

    def load_training_state(self, t: dict, step: int, run: _Run) -> None:
        self.opt_g.load_state_dict(t["opt_g"])
        if self.opt_d is not None:
            self.opt_d.load_state_dict(t["opt_d"])
        self.sampler.load_state_dict(t["sampler"])
        torch.set_rng_state(t["torch_rng"])
        if run.device.type == "cuda" and t.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(t["cuda_rng"], run.device)
        if self.ema is not None:
            if t.get("ema") is None:
                raise ConfigError(f"--resume: {run.last} holds no EMA weights")
            self.ema.load_state_dict(t["ema"])
        self.step, self.elapsed, self.best = step, float(t["elapsed"]), dict(t["best"])

    def generator_weights(self):
        """A context in which the model carries the weights generation uses (the EMA's when on)."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def save(self, path: Path, run: _Run, *, training: bool, metrics: dict | None = None) -> None:
        """Write a checkpoint of the model as it is now; never one with non-finite weights."""
        # A finite loss does not prove finite weights: the update after it may have overflowed.
        # Never let a non-finite model replace the last good checkpoint.
        if not all(torch.isfinite(v).all() for v in self.model.state_dict().values() if v.is_floating_point()):
            raise TrainingDiverged(
                f"step {self.step}: non-finite model weights; training stopped, {path} was not overwritten "
                f"(last good checkpoint: {_describe_last(run.last)}); lower the learning rates or resume from it"
            )
        save_checkpoint(
            path,
            self.model,
            step=self.step,
            train_config=run.config.to_dict(),
            metrics=metrics,
            data_attrs=run.data_attrs,
            training=self.training_state(run) if training else None,
        )


class _Monitor:
    """What a run shows and records: the progress bar, running means of the losses, log.jsonl."""

    _SHOWN = ("d_loss", "g_loss", "w", "w_phys", "res_ratio", "rec", "kl")

    def __init__(self, run: _Run, step: int) -> None:
        c = run.config
        self.run = run
        self.bar = tqdm(total=c.max_steps, initial=step, disable=not c.progress, unit="step", dynamic_ncols=True, desc=f"train {c.family}")
        self.postfix: dict[str, str] = {}  # losses, throughput, time left and the validation, as the bar shows them
        self.running: dict[str, float] = {}
        self.n_running, self.t_log, self.showers = 0, time.perf_counter(), 0
        self.throughput = 0.0

    def write(self, record: dict) -> None:
        with open(self.run.log, "a") as f:
            f.write(json.dumps(record) + "\n")

    def losses(self, state: TrainState, logs: dict[str, float], showers: int) -> None:
        """Add one step's losses; every ``log_every`` steps write their means and show them."""
        c = self.run.config
        for k, v in logs.items():
            self.running[k] = self.running.get(k, 0.0) + v
        self.n_running += 1
        self.showers += showers
        if state.step % c.log_every and state.step != c.max_steps:
            return
        now = time.perf_counter()
        self.throughput = self.showers / max(now - self.t_log, 1e-9)
        mean = {k: v / self.n_running for k, v in self.running.items()}
        record = {"step": state.step, "elapsed_s": round(state.elapsed, 2), "showers_per_s": round(self.throughput, 1)}
        self.write({**record, **{k: round(v, 6) for k, v in mean.items()}})
        self.postfix.update({k: f"{v:.3g}" for k, v in mean.items() if k in self._SHOWN})
        self.postfix["shw/s"] = f"{self.throughput:.0f}"
        if c.max_minutes is not None:  # the bar's ETA counts max_steps; say when the clock stops the run
            self.postfix["left"] = f"{max(60 * c.max_minutes - state.elapsed, 0) / 60:.1f}min"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.running, self.n_running, self.t_log, self.showers = {}, 0, now, 0

    def validation(self, state: TrainState, metrics: dict) -> None:
        self.write({"step": state.step, "elapsed_s": round(state.elapsed, 2), "val": metrics})

    def show_validation(self, state: TrainState, metrics: dict) -> None:
        self.postfix["val_chi2"] = f"{metrics['chi2']:.3g}"
        if state.best["chi2"] is not None:
            self.postfix["best"] = f"{state.best['chi2']:.3g}@{state.best['step']}"
        self.bar.set_postfix(self.postfix, refresh=False)


def _fingerprint(data: ShowerData) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(data.e_inc).tobytes())
    h.update(np.float64(data.cells.sum(dtype=np.float64)).tobytes())
    return f"{len(data)}:{h.hexdigest()[:16]}"


def _load_data(config: TrainConfig) -> tuple[ShowerData, ShowerData | None, dict]:
    if not config.data:
        raise ConfigError("no training data: set 'data' in the config (calogan train: --data FILE)")
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
    # the ATLAS GAN's finding: momentum can work against you in adversarial training -> RMSProp
    return torch.optim.RMSprop(params, lr=lr, alpha=config.rmsprop_alpha)


def _validate(model, val: ShowerData, config: TrainConfig) -> dict[str, float]:
    """chi2/ndf of E_tot per incident-energy bin between validation and generated showers."""
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


def _validate_and_keep(state: TrainState, run: _Run, val: ShowerData | None, monitor: _Monitor) -> dict | None:
    """Score the generator on the validation showers; a new best score writes ``best.pt``."""
    if val is None:
        return None
    with state.generator_weights():
        metrics = {**_validate(state.model, val, run.config), "step": state.step}
        monitor.validation(state, metrics)
        if math.isfinite(metrics["chi2"]) and (state.best["chi2"] is None or metrics["chi2"] < state.best["chi2"]):
            state.best.update(chi2=metrics["chi2"], step=state.step)
            state.save(run.best, run, training=False, metrics=metrics)
    return metrics


@dataclass(frozen=True)
class _Batches:
    """The training set in model space on the device, and how a step draws from it."""

    x: torch.Tensor  # (N, n_cells) transformed cells
    c: torch.Tensor  # (N, n_cond) physical conditions
    config: TrainConfig

    def generator_conditions(self, sampler: _Sampler, idx: np.ndarray, last: torch.Tensor) -> torch.Tensor:
        """(batch_size, n_cond) conditions of one generator update (``condition_sampling``)."""
        c = self.config
        if c.condition_sampling == "big_batch":
            return self.c[torch.from_numpy(sampler.rng.choice(idx, c.batch_size, replace=False)).to(self.c.device)]
        if c.condition_sampling == "dataset":
            return self.c[torch.from_numpy(sampler.rng.choice(len(self.c), c.batch_size, replace=False)).to(self.c.device)]
        return last


def _showers_per_step(config: TrainConfig, adversarial: bool) -> int:
    """Training showers one step draws: a big batch for the critic updates, or one batch per
    generator update of a family without a discriminator."""
    return (config.d_steps if adversarial else config.g_steps) * config.batch_size


def _train_step(state: TrainState, batches: _Batches, autocast) -> tuple[dict[str, float], list[float]]:
    """One step: ``d_steps`` critic updates on consecutive batches of a big batch, then
    ``g_steps`` generator updates; without a discriminator only the generator updates, each on
    its own batch of real showers. Returns the logged values and every update's loss."""
    config, model, bs = batches.config, state.model, batches.config.batch_size
    idx = state.sampler.take(_showers_per_step(config, model.adversarial))
    losses, logs_d = [], {}
    for k in range(config.d_steps if model.adversarial else 0):
        b = torch.from_numpy(idx[k * bs : (k + 1) * bs]).to(batches.x.device)
        cond = batches.c[b]
        with autocast():
            loss_d, logs_d = model.discriminator_loss(batches.x[b], cond)
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        state.opt_d.step()
        losses.append(loss_d.detach())
    d_params = model.discriminator_parameters()
    for p in d_params:  # the critic is a constant during generator updates
        p.requires_grad_(False)
    for k in range(config.g_steps):
        if model.adversarial:
            cond = batches.generator_conditions(state.sampler, idx, cond)
            with autocast():
                loss_g, logs_g = model.generator_loss(cond)
        else:  # a likelihood-trained family (the VAE) learns from batch k of real showers
            b = torch.from_numpy(idx[k * bs : (k + 1) * bs]).to(batches.x.device)
            with autocast():
                loss_g, logs_g = model.generator_loss(batches.c[b], batches.x[b])
        state.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        state.opt_g.step()
        losses.append(loss_g.detach())
    for p in d_params:
        p.requires_grad_(True)
    if state.ema is not None:
        state.ema.update()
    logs = {**logs_d, **logs_g, "g_loss": loss_g.detach()}
    if model.adversarial:
        logs["d_loss"] = loss_d.detach()
    # One device-to-host transfer per step (each is a CUDA sync): the logged values, then
    # every update's loss for the NaN guard.
    both = torch.stack([v.float() for v in logs.values()] + [v.float() for v in losses]).cpu().tolist()
    return dict(zip(logs, both[: len(logs)])), both[len(logs) :]


def _check_finite(state: TrainState, run: _Run, logs: dict[str, float], losses: list[float]) -> None:
    if all(math.isfinite(v) for v in losses):
        return
    bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
    raise TrainingDiverged(
        f"step {state.step}: non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items()) or 'a discriminator update'}); "
        f"training stopped, the last good checkpoint is {_describe_last(run.last)}; lower the learning rates or resume from it"
    )


def _resume_checkpoint(config: TrainConfig, out: Path):
    """The checkpoint ``--resume`` continues from, checked against ``config``."""
    last = out / "last.pt"
    if not last.exists():
        raise ConfigError(f"--resume: {last} does not exist (nothing to resume)")
    ckpt = load_checkpoint(last)
    if ckpt.training is None:
        raise ConfigError(f"--resume: {last} holds no training state")
    stored = TrainConfig.from_dict(ckpt.train_config, where=str(last)).to_dict()
    now = config.to_dict()
    changed = sorted(k for k in stored if stored[k] != now[k] and k not in _RESUMABLE)
    if changed:
        raise ConfigError(
            f"--resume: option {changed[0]} differs from the run in {out} ({stored[changed[0]]!r} there, "
            f"{now[changed[0]]!r} now); only {', '.join(sorted(_RESUMABLE))} may change"
        )
    return ckpt


def _new_model(config: TrainConfig, train_data: ShowerData):
    transform = ShowerTransform.fit(config_from_dict(TransformConfig, config.transform, "transform"), train_data.cells, train_data.e_inc)
    spec = ConditionSpec.from_data(train_data, tuple(config.conditions))
    model = build_model(config.family, train_data.geometry, spec, transform, config.model)
    model.prepare(train_data)
    return model


def _autocast(config: TrainConfig, device: torch.device):
    """A factory of the context the losses are computed in: bf16 autocast or nothing."""
    if config.precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _start(config: TrainConfig, out: Path, *, resume: bool, force: bool) -> tuple[_Run, TrainState, _Batches, ShowerData | None]:
    """Check the output folder, set up the machine, read the data and build (or restore) the state."""
    ckpt = _resume_checkpoint(config, out) if resume else None
    if not resume:
        if (out / "last.pt").exists() and not force:
            raise ConfigError(f"{out}: holds a run already; pass --resume to continue it or --force to start again")
        out.mkdir(parents=True, exist_ok=True)

    try:
        device = torch.device(resolve_device(config.device))
    except ConfigError as err:
        raise ConfigError(f"option {err}") from None
    threads = resolve_threads(config.threads, default=None)
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32

    train_data, val, data_attrs = _load_data(config)
    run = _Run(config, out, device, data_attrs, _fingerprint(train_data))
    adversarial = family_class(config.family).adversarial
    n_big = _showers_per_step(config, adversarial)
    if n_big > len(train_data):
        steps = "d_steps" if adversarial else "g_steps"
        raise ConfigError(f"{steps} * batch_size = {n_big} exceeds the {len(train_data)} training showers")

    torch.manual_seed(config.seed)  # the models draw noise and penalty points from torch's RNG
    sampler = _Sampler(len(train_data), config.seed)
    if ckpt is None:
        state = TrainState.create(config, _new_model(config, train_data), sampler, device)
        write_text(out / "config.yaml", config.to_yaml(), force=True, error=ConfigError)
        run.log.write_text("")
    else:
        if ckpt.training.get("data_fingerprint") != run.fingerprint:
            raise ConfigError(f"--resume: the training data differ from those of the run in {out} ({config.data})")
        state = TrainState.create(config, ckpt.model, sampler, device)
        state.load_training_state(ckpt.training, ckpt.step, run)
    # Model-space training set on the device once: (N, n_cells) and physical conditions (N, n_cond).
    x_all = torch.from_numpy(state.model.transform.forward(train_data.cells, train_data.e_inc)).to(device)
    return run, state, _Batches(x_all, state.model.conditions.tensor(train_data).to(device), config), val


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
    run, state, batches, val = _start(config, Path(out_dir), resume=resume, force=force)
    model, forward = state.model, state.model.forward
    if config.compile:
        model.forward = torch.compile(forward)
    autocast = _autocast(config, run.device)
    n_big = _showers_per_step(config, model.adversarial)

    monitor = _Monitor(run, state.step)
    t_start, stopped, last_val_step = time.perf_counter() - state.elapsed, "max_steps", -1
    try:
        while state.step < config.max_steps:
            if config.max_minutes is not None and state.elapsed >= 60 * config.max_minutes:
                stopped = "max_minutes"
                break
            logs, losses = _train_step(state, batches, autocast)
            state.step += 1
            _check_finite(state, run, logs, losses)
            state.elapsed = time.perf_counter() - t_start
            monitor.losses(state, logs, n_big)
            if state.step % config.val_every == 0:
                metrics, last_val_step = _validate_and_keep(state, run, val, monitor), state.step
                if metrics is not None:
                    monitor.show_validation(state, metrics)
            if state.step % config.checkpoint_every == 0:
                state.save(run.last, run, training=True)
            monitor.bar.update(1)
    finally:
        monitor.bar.close()
    if last_val_step != state.step:
        _validate_and_keep(state, run, val, monitor)
    state.elapsed = time.perf_counter() - t_start
    state.save(run.last, run, training=True)
    if val is None:
        with state.generator_weights():
            state.save(run.best, run, training=False)
        state.best.update(step=state.step)
    model.forward = forward
    return TrainResult(
        out_dir=run.out,
        step=state.step,
        stopped=stopped,
        elapsed_s=state.elapsed,
        best_step=state.best["step"],
        best_chi2=state.best["chi2"],
        last=run.last,
        best=run.best,
        showers_per_s=monitor.throughput,
    )


def _describe_last(path: Path) -> str:
    if not path.exists():
        return "none was written yet"
    return f"{path} (step {int(torch.load(path, map_location='cpu', weights_only=True)['step'])})"
