"""The one training loop for every model family, configured by a frozen TrainConfig."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from calogan.augment import AUGMENTS, Mirror, check_mirror_symmetry, mirror_axes, mirror_images
from calogan.checkpoint import load_checkpoint, save_checkpoint
from calogan.config import config_from_dict, read_config
from calogan.data import Conditions, ShowerData
from calogan.distributed.ddp import World, rank_seed, sync_batch_norm
from calogan.errors import CaloganError, ConfigError
from calogan.generate import generate
from calogan.io import inspect, read_showers
from calogan.metrics import energy_bin_edges, energy_chi2, low_level_auc, response_resolution
from calogan.models import build_model, family_class
from calogan.models.base import ConditionSpec
from calogan.runtime import check_output_folder, resolve_threads, write_text
from calogan.transforms import ShowerTransform, TransformConfig

__all__ = ["GeneratorEMA", "TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "apply_overrides", "train"]

_OPTIMIZERS = ("adam", "rmsprop")
_SAMPLING = ("batch", "big_batch", "dataset")
_PRECISIONS = ("fp32", "bf16")
# The files of a run's folder.
RUN_FILES = ("config.yaml", "log.jsonl", "last.pt", "best.pt")
# What picks best.pt: chi2/ndf of E_tot per energy bin, or the fast low-level classifier AUC.
_SELECTIONS = ("chi2", "auc")
# The classifier test reports on a fifth of each class: five showers at least.
_MIN_AUC_VALIDATION = 25
# Options a resumed run may change without breaking the continuation (how long, how loud).
_RESUMABLE = {"max_steps", "max_minutes", "progress", "log_every"}


class TrainingDiverged(CaloganError):
    """A loss became NaN or inf; the message names the step and the last good checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; stored as YAML beside its checkpoints.

    Data: ``data`` (a shower file, or a list of files of one geometry, particle and convention,
    joined), optional ``geometry`` (else the file's), ``conditions`` the
    model is conditioned on (``e_inc`` first, then x0, y0, theta, phi), ``exclude_energy``
    bands [lo, hi] GeV removed before anything else (the interpolation test), and the
    validation set: ``val_data`` or a random ``val_fraction`` of ``data``. ``augment``
    (``mirror_x``, ``mirror_y``) trains on mirror images of the showers too, each drawn with
    probability 1/2 per shower and batch (``calogan.augment``): free data where the detector
    and beam are symmetric, which is checked on the training showers; the impact point and
    direction conditions are mirrored with them.

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
    per incident-energy bin (``val_bins`` bins) and, with ``selection: auc``, by the fast
    low-level classifier AUC against the validation showers (``calogan.metrics.low_level_auc``,
    a few seconds): the step with the best ``selection`` score is kept as ``best.pt``. E_tot
    alone is blind to shapes and noisy on a few hundred showers; the classifier sees the cells,
    so ``auc`` is the choice for fidelity (keep the validation showers out of the final test
    set as well as out of training). With ``selection_max_response`` a step whose mean
    response on the validation showers (generated over reference, averaged over the energy
    bins) is off by more than that fraction is never kept: a classifier can miss a drifting
    energy scale where the showers fluctuate much (a pion WGAN-GP's validation AUC fell from
    0.96 to 0.88 while its response fell to 0.66 of Geant4's). Every
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
    data: str | tuple[str, ...] | None = None
    geometry: str | None = None
    val_data: str | tuple[str, ...] | None = None
    val_fraction: float = 0.1
    exclude_energy: tuple[tuple[float, float], ...] = ()
    augment: tuple[str, ...] = ()
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
    selection: str = "chi2"
    selection_max_response: float | None = None
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
        if self.selection not in _SELECTIONS:
            bad("selection", f"must be one of {', '.join(_SELECTIONS)}, got {self.selection!r}")
        if self.selection_max_response is not None and not self.selection_max_response > 0:
            bad("selection_max_response", f"must be > 0 (or null: off), got {self.selection_max_response}")
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
        for name in self.augment:
            if name not in AUGMENTS:
                bad("augment", f"each entry must be one of {', '.join(AUGMENTS)}, got {name!r}")
        if len(set(self.augment)) != len(self.augment):
            bad("augment", f"lists an entry twice: {list(self.augment)}")
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


def apply_overrides(config: TrainConfig, overrides: list[str], *, where: str = "--set") -> TrainConfig:
    """``config`` with ``key=value`` overrides (``--set``): values are YAML (``lr_g=2e-4``,
    ``betas=[0.5,0.9]``); ``model.KEY`` and ``transform.KEY`` set nested options. Errors
    start with ``where`` (where the overrides came from)."""
    values = config.to_dict()
    names = [f.name for f in fields(TrainConfig)]
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{where} expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{where} {key}: cannot parse value {text!r}") from None
        head, _, rest = key.partition(".")
        if head not in names:
            raise ConfigError(f"{where}: unknown option {head!r}; options: {', '.join(names)}")
        if rest:
            if head not in ("model", "transform"):
                raise ConfigError(f"{where}: option {head!r} has no sub-options (only model.KEY and transform.KEY do)")
            values[head] = {**values[head], rest: value}
        else:
            values[head] = value
    return TrainConfig.from_dict(values, where=where)


@dataclass(frozen=True)
class TrainResult:
    """How a run ended: its last step, why it stopped, its best validation step."""

    out_dir: Path
    step: int
    stopped: str  # "max_steps" or "max_minutes"
    elapsed_s: float
    best_step: int | None
    selection: str  # what chose the best step: "chi2" or "auc"
    best_value: float | None
    last: Path
    best: Path
    showers_per_s: float  # of the whole run (every rank's showers)
    rank: int = 0
    world_size: int = 1

    @property
    def best_chi2(self) -> float | None:
        """The best validation chi2/ndf of E_tot when chi2 chose the best step."""
        return self.best_value if self.selection == "chi2" else None


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
    created: list[Path] = field(default_factory=list)  # folders this run made (outermost first), removed if it fails early
    world: World = field(default_factory=World)

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
    best: dict = field(default_factory=lambda: {"value": None, "step": None})

    @classmethod
    def create(cls, config: TrainConfig, model, sampler: _Sampler, device: torch.device) -> TrainState:
        """A state at step 0 around ``model`` (moved to ``device``, in train mode)."""
        model.to(device).train()
        opt_g = _optimizer(config, model.generator_parameters(), config.lr_g)
        opt_d = _optimizer(config, model.discriminator_parameters(), config.lr_d) if model.adversarial else None
        ema = GeneratorEMA(model, model.generator_parameters(), config.ema_decay) if config.ema_decay is not None else None
        return cls(model, opt_g, opt_d, sampler, ema)

    def training_state(self, run: _Run) -> dict:
        """What ``--resume`` needs; with several ranks a collective: every rank's RNG state and a
        digest of its weights are gathered, and ranks whose weights differ stop the run."""
        cuda = run.device.type == "cuda"
        rng = {"torch_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state(run.device) if cuda else None}
        ranks = run.world.gather({**rng, "weights": _weights_digest(self.model)})
        digests = [r.pop("weights") for r in ranks]
        if len(set(digests)) > 1:
            raise TrainingDiverged(
                f"step {self.step}: the {len(digests)} ranks hold different weights (digests {', '.join(digests)}); "
                f"the last good checkpoint is {_describe_last(run.last)}"
            )
        return {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "sampler": self.sampler.state_dict(),
            **ranks[0],
            "rank_rng": ranks[1:],  # ranks 1.. of a data-parallel run
            "world_size": run.world.size,
            "weights_digest": digests[0],  # every rank's, checked equal
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
        # The data order is global (the same on every rank), so it continues exactly with any
        # number of ranks; each rank's noise stream continues where that rank left it, and a
        # rank the stored run did not have starts a stream of its own.
        rank = run.world.rank
        stored = [{"torch_rng": t["torch_rng"], "cuda_rng": t.get("cuda_rng")}, *t.get("rank_rng", [])]
        if rank < len(stored):
            torch.set_rng_state(stored[rank]["torch_rng"])
            if run.device.type == "cuda" and stored[rank].get("cuda_rng") is not None:
                torch.cuda.set_rng_state(stored[rank]["cuda_rng"], run.device)
        else:
            torch.manual_seed(rank_seed(run.config.seed, rank, step))
        if self.ema is not None:
            if t.get("ema") is None:
                raise ConfigError(f"--resume: {run.last} holds no EMA weights")
            self.ema.load_state_dict(t["ema"])
        best = dict(t["best"])
        if "value" not in best:  # runs saved before the selection option scored by chi2 only
            best = {"value": best.get("chi2"), "step": best.get("step")}
        self.step, self.elapsed, self.best = step, float(t["elapsed"]), best

    def generator_weights(self):
        """A context in which the model carries the weights generation uses (the EMA's when on)."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def save(self, path: Path, run: _Run, *, training: bool, metrics: dict | None = None) -> None:
        """Write a checkpoint of the model as it is now; never one with non-finite weights."""
        # A finite loss does not prove finite weights: the update after it may have overflowed.
        # Never let a non-finite model replace the last good checkpoint. (Every rank holds the
        # same weights, so every rank reaches the same verdict.)
        if not all(torch.isfinite(v).all() for v in self.model.state_dict().values() if v.is_floating_point()):
            raise TrainingDiverged(
                f"step {self.step}: non-finite model weights; training stopped, {path} was not overwritten "
                f"(last good checkpoint: {_describe_last(run.last)}); lower the learning rates or resume from it"
            )
        training_state = self.training_state(run) if training else None  # a collective: on every rank
        if not run.world.is_main:
            return
        save_checkpoint(
            path,
            self.model,
            step=self.step,
            train_config=run.config.to_dict(),
            metrics=metrics,
            data_attrs=run.data_attrs,
            training=training_state,
        )


class _Monitor:
    """What a run shows and records: the progress bar, running means of the losses, log.jsonl."""

    _SHOWN = ("d_loss", "g_loss", "w", "w_phys", "res_ratio", "rec", "kl")

    def __init__(self, run: _Run, step: int) -> None:
        c = run.config
        self.run = run
        self.main = run.world.is_main  # only rank 0 shows and records
        self.bar = tqdm(
            total=c.max_steps,
            initial=step,
            disable=not (c.progress and self.main),
            unit="step",
            dynamic_ncols=True,
            desc=f"train {c.family}",
        )
        self.postfix: dict[str, str] = {}  # losses, throughput, time left and the validation, as the bar shows them
        self.running: dict[str, float] = {}
        self.n_running, self.t_log, self.showers = 0, time.perf_counter(), 0
        self.throughput = 0.0

    def write(self, record: dict) -> None:
        if not self.main:
            return
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
        key = self.run.config.selection
        self.postfix[f"val_{key}"] = f"{metrics[key]:.3g}"
        if state.best["value"] is not None:
            self.postfix["best"] = f"{state.best['value']:.3g}@{state.best['step']}"
        self.bar.set_postfix(self.postfix, refresh=False)


def _weights_digest(model: torch.nn.Module) -> str:
    """SHA-1 of the model's parameters and buffers, in state-dict order (equal weights, equal digest)."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _fingerprint(data: ShowerData) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(data.e_inc).tobytes())
    h.update(np.float64(data.cells.sum(dtype=np.float64)).tobytes())
    return f"{len(data)}:{h.hexdigest()[:16]}"


def _files(files: str | tuple[str, ...]) -> str:
    return files if isinstance(files, str) else " + ".join(files)


def _read_joined(files: str | tuple[str, ...], geometry, what: str) -> tuple[ShowerData, dict]:
    """The showers of one file or of several joined, and the first file's attributes; the files
    must agree on geometry, conditions, particle and convention."""
    files = (files,) if isinstance(files, str) else tuple(files)
    parts, attrs = [], []
    for f in files:
        parts.append(read_showers(f, geometry=geometry if geometry is not None else (parts[0].geometry if parts else None)))
        attrs.append({k: v for k, v in inspect(f, parts[-1].geometry).attrs.items() if isinstance(v, (str, int, float))})
        for key in ("particle", "convention"):
            if attrs[-1].get(key) != attrs[0].get(key):
                raise ConfigError(
                    f"option {what}: {f} holds {key} {attrs[-1].get(key)!r}, {files[0]} {attrs[0].get(key)!r}; they cannot be joined"
                )
        if set(parts[-1].conditions) != set(parts[0].conditions):
            raise ConfigError(f"option {what}: {f} has conditions {sorted(parts[-1].conditions)}, {files[0]} {sorted(parts[0].conditions)}")
    return (parts[0] if len(parts) == 1 else ShowerData.concatenate(parts)), attrs[0]


def _load_data(config: TrainConfig) -> tuple[ShowerData, ShowerData | None, dict]:
    if not config.data:
        raise ConfigError("no training data: set 'data' in the config (calogan train: --data FILE)")
    data, attrs = _read_joined(config.data, config.geometry, "data")
    if config.exclude_energy:
        keep = np.ones(len(data), bool)
        for lo, hi in config.exclude_energy:
            keep &= ~((data.e_inc >= lo) & (data.e_inc <= hi))
        if not keep.any():
            raise ConfigError(
                f"option exclude_energy {list(map(list, config.exclude_energy))} removes every shower of {_files(config.data)}"
            )
        data = data.select(keep)
    _check_trainable(data, config.data)
    if config.val_data:
        val, _ = _read_joined(config.val_data, data.geometry, "val_data")
        return data, val, attrs
    if config.val_fraction == 0:
        return data, None, attrs
    n_val = len(data) - int(np.round((1 - config.val_fraction) * len(data)))
    if n_val < _MIN_VALIDATION or len(data) - n_val < 1:
        raise ConfigError(
            f"{config.data}: val_fraction {config.val_fraction:g} of its {len(data)} showers leaves {n_val} for validation; "
            f"at least {_MIN_VALIDATION} are needed (more showers, a larger val_fraction, val_data FILE or val_fraction 0)"
        )
    train, val = data.split((1 - config.val_fraction, config.val_fraction), seed=config.seed)
    return train, val, attrs


# Validation showers below this are too few to score E_tot in energy bins.
_MIN_VALIDATION = 2


def _check_trainable(data: ShowerData, path) -> None:
    """Refuse training data a model cannot learn anything from: all cells zero, one incident energy only."""
    if not (data.cells > 0).any():
        raise ConfigError(f"{path}: every cell of its {len(data)} showers is zero: there is nothing to learn")
    if len(data) < 2:
        raise ConfigError(f"{path}: holds {len(data)} shower; training needs many")


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
    if config.selection == "auc":
        result = low_level_auc(val, gen, fast=True, seed=config.seed)
        out.update(auc=float(result.auc), auc_err=float(result.auc_uncertainty))
    for key in ("response", "resolution"):
        ratio = cand[key] / ref[key]  # NaN in bins of fewer than 10 showers
        if np.isfinite(ratio).any():
            out[f"{key}_ratio"] = float(ratio[np.isfinite(ratio)].mean())
    return out


def _validate_and_keep(state: TrainState, run: _Run, val: ShowerData | None, monitor: _Monitor, hook=None) -> dict | None:
    """Score the generator on the validation showers (rank 0); a new best score writes ``best.pt``."""
    if val is None or not run.world.is_main:
        return None
    with state.generator_weights():
        metrics = {**_validate(state.model, val, run.config), "step": state.step}
        monitor.validation(state, metrics)
        value = metrics.get(run.config.selection, math.nan)
        # A classifier that separates every step perfectly (AUC 1) cannot choose among them:
        # ties on the AUC go to the better E_tot chi2.
        tie = metrics.get("chi2", math.nan) if run.config.selection == "auc" else 0.0
        tie = tie if math.isfinite(tie) else math.inf
        best = (state.best["value"], state.best.get("tie", math.inf))
        limit = run.config.selection_max_response
        eligible = limit is None or abs(metrics.get("response_ratio", math.nan) - 1.0) <= limit  # NaN: not eligible
        if eligible and math.isfinite(value) and (best[0] is None or (value, tie) < best):
            state.best.update(value=value, tie=tie, step=state.step)
            state.save(run.best, run, training=False, metrics=metrics)
        if hook is not None:
            state.model.eval()
            try:
                with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
                    hook(state.step, metrics, state.model, val)
            finally:
                state.model.train()
    return metrics


@dataclass(frozen=True)
class _Batches:
    """The training set in model space on the device, and how a step draws from it.

    Draws are global (``batch_size`` showers, the same on every rank); each rank then takes
    its shard (``World.shard``), so the data order does not depend on the number of ranks.
    """

    x: torch.Tensor  # (N, n_cells) transformed cells
    c: torch.Tensor  # (N, n_cond) physical conditions
    config: TrainConfig
    transform: ShowerTransform
    world: World = field(default_factory=World)
    mirror: Mirror | None = None

    def real(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model-space showers (B, n_cells) and physical conditions (B, n_cond) of indices ``b``:
        mirrored (``augment``) and dequantised (``ShowerTransform.dequantise``) afresh each time."""
        x, c = self.x[b], self.c[b]
        if self.mirror is not None:
            x, c = self.mirror(x, c)
        return self.transform.dequantise(x), c

    def discriminator_batch(self, idx: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows (``real``) of the ``k``-th global batch of the big batch ``idx``."""
        bs = self.config.batch_size
        return self.real(torch.from_numpy(idx[k * bs : (k + 1) * bs][self.world.shard(bs)]).to(self.x.device))

    def generator_batch(
        self, sampler: _Sampler, idx: np.ndarray, last: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (real, conditions) of one generator update: the conditions it generates
        at (``condition_sampling``) and the real showers they belong to."""
        c = self.config
        if c.condition_sampling == "big_batch":
            pick = sampler.rng.choice(idx, c.batch_size, replace=False)
        elif c.condition_sampling == "dataset":
            pick = sampler.rng.choice(len(self.c), c.batch_size, replace=False)
        else:
            return last
        return self.real(torch.from_numpy(pick[self.world.shard(c.batch_size)]).to(self.c.device))


def _showers_per_step(config: TrainConfig, adversarial: bool) -> int:
    """Training showers one step draws: a big batch for the critic updates, or one batch per
    generator update of a family without a discriminator."""
    return (config.d_steps if adversarial else config.g_steps) * config.batch_size


def _train_step(state: TrainState, batches: _Batches, autocast) -> tuple[dict[str, float], list[float]]:
    """One step: ``d_steps`` critic updates on consecutive batches of a big batch, then
    ``g_steps`` generator updates; without a discriminator only the generator updates, each on
    its own batch of real showers. Returns the logged values and every update's loss.

    With several ranks each computes its shard of every batch, and the gradients of the
    updated parameter group are averaged over the ranks before the optimiser steps; the
    logged values and losses are the ranks' means."""
    config, model, world = batches.config, state.model, batches.world
    idx = state.sampler.take(_showers_per_step(config, model.adversarial))
    d_params, g_params = list(model.discriminator_parameters()), list(model.generator_parameters())
    losses, logs_d = [], {}
    real = cond = None
    for k in range(config.d_steps if model.adversarial else 0):
        real, cond = batches.discriminator_batch(idx, k)
        with autocast():
            loss_d, logs_d = model.discriminator_loss(real, cond)
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        world.average_gradients(d_params)
        state.opt_d.step()
        losses.append(loss_d.detach())
    for p in d_params:  # the critic is a constant during generator updates
        p.requires_grad_(False)
    for k in range(config.g_steps):
        if model.adversarial:
            real, cond = batches.generator_batch(state.sampler, idx, (real, cond))
        else:  # a likelihood-trained family (the VAE) learns from batch k of real showers
            real, cond = batches.discriminator_batch(idx, k)
        with autocast():
            loss_g, logs_g = model.generator_loss(cond, real)
        state.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        world.average_gradients(g_params)
        state.opt_g.step()
        losses.append(loss_g.detach())
    for p in d_params:
        p.requires_grad_(True)
    world.average_batch_norm(model)
    if state.ema is not None:
        state.ema.update()
    logs = {**logs_d, **logs_g, "g_loss": loss_g.detach()}
    if model.adversarial:
        logs["d_loss"] = loss_d.detach()
    # One device-to-host transfer per step (each is a CUDA sync): the logged values, then
    # every update's loss for the NaN guard.
    both = world.mean(torch.stack([v.float() for v in logs.values()] + [v.float() for v in losses])).cpu().tolist()
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
    changed = sorted(k for k in stored if not _same_option(k, stored[k], now[k]) and k not in _RESUMABLE)
    if changed:
        raise ConfigError(
            f"--resume: option {changed[0]} differs from the run in {out} ({stored[changed[0]]!r} there, "
            f"{now[changed[0]]!r} now); only {', '.join(sorted(_RESUMABLE))} may change"
        )
    return ckpt


def _same_option(key: str, stored, now) -> bool:
    """Whether a resumed run's option equals the stored one; data files compare as the files
    they name (a relative and an absolute path to one file are the same data)."""
    if key in ("data", "val_data") and stored and now:
        files = lambda v: [Path(f).resolve() for f in ((v,) if isinstance(v, str) else v)]  # noqa: E731
        return files(stored) == files(now)
    return stored == now


def _new_model(config: TrainConfig, train_data: ShowerData):
    # With augmentation the model learns the mirror images too: its normalisations are fitted
    # on them, which also makes every per-cell constant mirror symmetric (see calogan.augment).
    fit_data = mirror_images(train_data, mirror_axes(config.augment)) if config.augment else train_data
    transform = ShowerTransform.fit(config_from_dict(TransformConfig, config.transform, "transform"), fit_data.cells, fit_data.e_inc)
    spec = ConditionSpec.from_data(fit_data, tuple(config.conditions))
    model = build_model(config.family, train_data.geometry, spec, transform, config.model)
    model.prepare(fit_data)
    return model


def _autocast(config: TrainConfig, device: torch.device):
    """A factory of the context the losses are computed in: bf16 autocast or nothing."""
    if config.precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _start(
    config: TrainConfig, out: Path, world: World, device: torch.device, *, resume: bool, force: bool
) -> tuple[_Run, TrainState, _Batches, ShowerData | None]:
    """Check the output folder, set up the machine, read the data and build (or restore) the state."""
    ckpt = _resume_checkpoint(config, out) if resume else None
    if not resume:
        if (out / "last.pt").exists() and not force:
            raise ConfigError(f"{out}: holds a run already; pass --resume to continue it or --force to start again")
        inputs = [p for files in (config.data, config.val_data) if files for p in ((files,) if isinstance(files, str) else files)]
        check_output_folder(out, inputs=inputs, error=ConfigError)  # the folder itself appears once the data are read
    world.per_rank(config.batch_size)  # the global batch must split evenly over the ranks
    threads = resolve_threads(config.threads, default=None)
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32

    train_data, val, data_attrs = _load_data(config)
    if config.selection == "auc" and (val is None or len(val) < _MIN_AUC_VALIDATION):
        raise ConfigError(
            f"option selection auc: the classifier needs at least {_MIN_AUC_VALIDATION} validation showers, "
            f"got {0 if val is None else len(val)} (set val_data or a larger val_fraction, or selection: chi2)"
        )
    for axis in mirror_axes(config.augment):
        check_mirror_symmetry(train_data.cells, train_data.geometry, axis, tuple(config.conditions), where=_files(config.data))
    run = _Run(config, out, device, data_attrs, _fingerprint(train_data), world=world)
    adversarial = family_class(config.family).adversarial
    n_big = _showers_per_step(config, adversarial)
    if n_big > len(train_data):
        steps = "d_steps" if adversarial else "g_steps"
        raise ConfigError(f"{steps} * batch_size = {n_big} exceeds the {len(train_data)} training showers")

    torch.manual_seed(config.seed)  # the models draw noise and penalty points from torch's RNG
    sampler = _Sampler(len(train_data), config.seed)
    if ckpt is None:
        model = _new_model(config, train_data)
        # Rank 0 keeps the stream of a one-process run; the other ranks draw noise of their own.
        if world.rank:
            torch.manual_seed(rank_seed(config.seed, world.rank))
    else:
        if ckpt.training.get("data_fingerprint") != run.fingerprint:
            raise ConfigError(f"--resume: the training data differ from those of the run in {out} ({_files(config.data)})")
        model = ckpt.model
    model = sync_batch_norm(model.to(device), world, device)
    world.broadcast_module(model)  # every rank starts from rank 0's weights, as DDP does
    state = TrainState.create(config, model, sampler, device)
    if ckpt is not None:
        state.load_training_state(ckpt.training, ckpt.step, run)
        _truncate_log(run.log, ckpt.step)
    # Model-space training set on the device once: (N, n_cells) and physical conditions (N, n_cond).
    x_all = torch.from_numpy(state.model.transform.forward(train_data.cells, train_data.e_inc)).to(device)
    mirror = Mirror(train_data.geometry, mirror_axes(config.augment), tuple(config.conditions), device) if config.augment else None
    batches = _Batches(x_all, state.model.conditions.tensor(train_data).to(device), config, state.model.transform, world, mirror)
    if ckpt is None and world.is_main:
        # Everything is checked: the run's folder appears now. A previous run in it (--force)
        # is removed first, so that no file of it is taken for one of this run's.
        run = replace(run, created=_make_folder(out))
        for name in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
        try:
            write_text(out / "config.yaml", config.to_yaml(), force=True, error=ConfigError)
            run.log.write_text("")
        except BaseException:
            _remove_run(run)
            raise
    return run, state, batches, val


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    on_validation: Callable[[int, dict, Any, ShowerData], None] | None = None,
) -> TrainResult:
    """Train ``config.family`` on ``config.data``; checkpoints and logs go to ``out_dir``.

    ``out_dir`` receives ``config.yaml``, ``last.pt`` (every ``checkpoint_every`` steps and
    at the end, with optimiser, RNG and data-order state), ``best.pt`` (the best validation
    step) and ``log.jsonl``. ``resume=True`` continues from ``last.pt`` exactly as the
    uninterrupted run would have (same device, thread count and number of ranks); only
    ``max_steps``, ``max_minutes``, ``progress`` and ``log_every`` may differ from the stored
    config. A NaN or inf loss stops training with ``TrainingDiverged``; ``last.pt`` is then
    the last good state.

    Started by ``torchrun`` the run is data-parallel (``calogan.distributed.ddp``):
    ``batch_size`` is the global batch, split evenly over the ranks; rank 0 validates and
    writes. A resume with another number of ranks continues the data order exactly (the
    sampler is global) and draws new noise on the ranks the stored run did not have.

    ``on_validation(step, metrics, model, val)`` is called after each validation (rank 0),
    with the model in eval mode carrying the weights generation uses; an exception it raises
    ends the run (how ``calogan tune`` prunes a trial).
    """
    try:
        world, device = World.from_env(config.device)
    except ConfigError as err:
        raise ConfigError(f"option {err}") from None
    try:
        return _train(config, Path(out_dir), world, torch.device(device), resume=resume, force=force, on_validation=on_validation)
    finally:
        world.close()


def _train(config: TrainConfig, out: Path, world: World, device: torch.device, *, resume, force, on_validation) -> TrainResult:
    run, state, batches, val = _start(config, out, world, device, resume=resume, force=force)
    try:
        return _loop(run, state, batches, val, world, on_validation)
    except BaseException:
        # Failed (or stopped) before its first checkpoint and before any validated generator
        # (best.pt; calogan tune's pruned trials keep theirs): the run leaves nothing behind.
        if not resume and not run.last.exists() and not run.best.exists() and world.is_main:
            _remove_run(run)
        raise


def _loop(run: _Run, state: TrainState, batches: _Batches, val: ShowerData | None, world: World, on_validation) -> TrainResult:
    config = run.config
    model, forward = state.model, state.model.forward
    if config.compile:
        model.forward = torch.compile(forward)
    autocast = _autocast(config, run.device)
    n_big = _showers_per_step(config, model.adversarial)

    monitor = _Monitor(run, state.step)
    t_start, stopped, last_val_step = time.perf_counter() - state.elapsed, "max_steps", -1
    try:
        while state.step < config.max_steps:
            # rank 0's clock decides for every rank: they must leave the loop together
            if config.max_minutes is not None and world.broadcast_flag(state.elapsed >= 60 * config.max_minutes, run.device):
                stopped = "max_minutes"
                break
            logs, losses = _train_step(state, batches, autocast)
            state.step += 1
            _check_finite(state, run, logs, losses)
            state.elapsed = time.perf_counter() - t_start
            monitor.losses(state, logs, n_big)
            if state.step % config.val_every == 0:
                metrics, last_val_step = _validate_and_keep(state, run, val, monitor, on_validation), state.step
                if metrics is not None:
                    monitor.show_validation(state, metrics)
            if state.step % config.checkpoint_every == 0:
                state.save(run.last, run, training=True)
            monitor.bar.update(1)
    finally:
        monitor.bar.close()
    if last_val_step != state.step:
        _validate_and_keep(state, run, val, monitor, on_validation)
    state.elapsed = time.perf_counter() - t_start
    state.save(run.last, run, training=True)
    if val is None and world.is_main:
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
        selection=config.selection,
        best_value=state.best["value"],
        last=run.last,
        best=run.best,
        showers_per_s=monitor.throughput,
        rank=world.rank,
        world_size=world.size,
    )


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log records after ``step``: a run stopped after its last checkpoint logged steps
    that the resumed run does again (a torn last line, from a kill, goes too)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_text(path, "".join(line + "\n" for line in kept), force=True, error=ConfigError)


def _make_folder(out: Path) -> list[Path]:
    """Create the run's folder and its missing parents; returns those created, outermost first."""
    missing = []
    folder = out
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    out.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def _remove_run(run: _Run) -> None:
    """Remove what a run that wrote no checkpoint left: its files, and the folders it created if empty."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (run.out / name).unlink()
    for folder in reversed(run.created):
        with contextlib.suppress(OSError):  # not empty: someone else's files are in it
            folder.rmdir()


def _describe_last(path: Path) -> str:
    if not path.exists():
        return "none was written yet"
    return f"{path} (step {int(torch.load(path, map_location='cpu', weights_only=True)['step'])})"
