"""Hyper-parameter search: an Optuna study of trainings that any number of workers join through one storage URL.

``calogan tune --config C.yaml --space S.yaml --trials N --storage URL -o DIR`` is one
worker: it runs ``N`` trials of the study (``--study``, created by the first worker to come)
and stops. Start as many as the machines allow, on one machine or many, with the same storage
URL: Optuna's database storage hands every trial to exactly one worker (a SQLite file for one
machine, PostgreSQL or MySQL for a cluster, where SQLite's file locking is not to be trusted
over NFS). A trial is one ``calogan.training.train`` run in ``DIR/trial-NNNN`` with the
config ``C.yaml`` and the values the sampler (TPE) draws from the search space ``S.yaml``.

Objective (``validation_score``, lower is better): at each of the run's validations the
generator makes showers at the validation showers' conditions and scores them against those
showers. ``separation`` (the default): the mean separation power of the high-level shower
observables of ``calogan.observables`` (energies, fractions, depth, centroids and widths,
sparsity, E_ratio, hottest cell, hit cells) per incident-energy bin: shapes, not only the
total energy, in well under a second. ``auc``: the low-level classifier AUC of
``calogan.metrics.low_level_auc`` in its fast setting for checkpoint choice (one run of
gradient-boosted trees on the cells, a few seconds; it needs a few thousand validation
showers to resolve differences of a few hundredths). Each validation's score is reported
to the pruner (median or Hyperband), which stops hopeless trials early; a trial's value is
its best score. When the study ends, the worker writes ``DIR/best.yaml``: ``extends:`` the
base config plus the best trial's values, a config ``calogan train`` takes.

A worker that dies leaves its trial RUNNING; its heartbeat stops, and the next worker to ask
for a trial marks it failed and queues its parameters again (``RetryFailedTrialCallback``),
so a trial is lost to no crash.

Search space file: one entry per option, keyed as ``--set`` keys them::

    lr_g: {low: 1.0e-5, high: 1.0e-3, log: true}     # float (log-uniform)
    d_steps: {low: 1, high: 5}                         # int: both ends whole numbers
    model.lambda_gp: {type: float, low: 1, high: 20}
    batch_size: [64, 128, 256]                         # a list: categorical
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calogan import metrics as m
from calogan import observables as obs
from calogan.config import read_yaml
from calogan.data import Conditions, ShowerData
from calogan.errors import ConfigError
from calogan.generate import generate
from calogan.runtime import write_text
from calogan.training import TrainConfig, TrainingDiverged, apply_overrides, train

__all__ = ["OBJECTIVES", "PRUNERS", "Param", "TuneResult", "read_space", "run_worker", "validation_score"]

PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("separation", "auc")
# Options of a trial's config that belong to the worker's machine, not to the recipe best.yaml records.
_MACHINE = ("device", "threads", "progress")


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: the option ``key`` (``lr_g``, ``model.lambda_gp``)
    drawn as a ``float``/``int`` in [low, high] (``log``: log-uniform; ``step``: a grid) or
    among ``choices`` (``categorical``)."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log, step=self.step)


def read_space(path: str | Path, base: TrainConfig) -> list[Param]:
    """The search space of a YAML file, each option checked against ``base`` (a wrong key or
    a value the config refuses is an error naming the file and option now, not mid-study)."""
    raw = read_yaml(path, "search space")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: a search space is a mapping of options to ranges or lists of choices")
    space = []
    for key, entry in raw.items():
        where = f"{path}: option {key}"
        if isinstance(entry, list):
            if not entry:
                raise ConfigError(f"{where}: an empty list of choices")
            p = Param(str(key), "categorical", choices=tuple(entry))
        elif isinstance(entry, dict):
            unknown = sorted(set(entry) - {"type", "low", "high", "log", "step"})
            if unknown:
                raise ConfigError(f"{where}: unknown field {unknown[0]!r} (type, low, high, log, step)")
            if "low" not in entry or "high" not in entry:
                raise ConfigError(f"{where}: needs low and high")
            low, high = entry["low"], entry["high"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
                raise ConfigError(f"{where}: low and high must be numbers with low < high, got {low!r}, {high!r}")
            kind = entry.get("type", "int" if isinstance(low, int) and isinstance(high, int) else "float")
            if kind not in ("int", "float"):
                raise ConfigError(f"{where}: type must be int or float, got {kind!r}")
            if entry.get("log") and low <= 0:
                raise ConfigError(f"{where}: a log range needs low > 0")
            p = Param(str(key), kind, low, high, bool(entry.get("log", False)), entry.get("step"))
        else:
            raise ConfigError(f"{where}: expected {{low: A, high: B}} or a list of choices, got {entry!r}")
        for value in p.choices or (p.low, p.high):
            apply_overrides(base, [_override(key, value)], where=str(path))
        space.append(p)
    return space


def validation_score(
    reference: ShowerData, candidate: ShowerData, *, objective: str = "separation", energy_bins: int = 4, hist_bins: int = 20, seed: int = 0
) -> float:
    """The tuning objective, lower is better: the one function to change for another metric.

    ``separation``: mean separation power of the high-level observables per incident-energy
    bin (0: the same histograms, 1: disjoint), ``energy_bins`` bins with equal numbers of
    reference showers (``metrics.energy_bin_edges``), ``hist_bins`` shared bins per
    histogram; an observable the candidate leaves undefined in a bin where the reference has
    it (a generator that deposits nothing) counts as 1. ``auc``: the low-level classifier AUC
    (``metrics.low_level_auc(..., fast=True)``; 0.5 is indistinguishable).

    >>> from calogan.geometry import preset
    >>> g = preset("calogan")
    >>> rng = np.random.default_rng(0)
    >>> ref = ShowerData(g, rng.exponential(1.0, (400, g.n_cells)).astype(np.float32), rng.uniform(1, 100, 400))
    >>> validation_score(ref, ref)
    0.0
    """
    if objective == "auc":
        return float(m.low_level_auc(reference, candidate, fast=True, seed=seed).auc)
    if objective != "separation":
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    g = reference.geometry
    ref, cand = (obs.high_level(d.cells, g, d.e_inc) for d in (reference, candidate))
    edges = m.energy_bin_edges(reference.e_inc, energy_bins)
    bin_r, bin_c = m.energy_bin_index(reference.e_inc, edges), m.energy_bin_index(candidate.e_inc, edges)
    values = []
    for name in ref:
        for k in range(len(edges) - 1):
            a, b = ref[name][bin_r == k], cand[name][bin_c == k]
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if a.size == 0:
                continue
            if b.size == 0:
                values.append(1.0)
                continue
            values.append(m.separation_power(a, b, bins=m.shared_bins(a, b, hist_bins), n_boot=0).value)
    return float(np.mean(values)) if values else math.nan


@dataclass(frozen=True)
class TuneResult:
    """What a worker did: its trials (number, state, value) and the study's best so far."""

    study: str
    trials: list[tuple[int, str, float | None]]
    best_number: int | None
    best_value: float | None
    best_params: dict
    best_config: Path | None


def _pruner(name: str | Any):
    import optuna

    if not isinstance(name, str):
        return name  # an optuna pruner object (the library's callers)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def _storage(url: str, attempts: int = 8):
    """Optuna's database storage with heartbeats: a dead worker's trial is failed and queued again."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if "://" not in url:
        raise ConfigError(f"storage must be a database URL (sqlite:///study.db, postgresql://..., mysql://...), got {url!r}")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    rng = np.random.default_rng()
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=30,
                    grace_period=120,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            # Workers that start together on a new database race to create its tables; the
            # loser finds them made ("table ... already exists", a duplicate schema version) and tries again.
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + rng.uniform(0, 0.5))
        except (optuna.exceptions.StorageInternalError, ImportError, ValueError, sqlalchemy.exc.ArgumentError) as err:
            raise ConfigError(f"storage {url}: {err}") from None
    raise AssertionError("unreachable")


def _override(key: str, value: Any) -> str:
    """``--set`` text of one value: ``lr_g=0.0002``."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).splitlines()[0]}"


def _nested(values: dict[str, Any]) -> dict:
    """``{"model.x": 1, "lr_g": 2}`` -> ``{"model": {"x": 1}, "lr_g": 2}`` (YAML config shape)."""
    out: dict = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if rest:
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    return out


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    return {k.strip(): yaml.safe_load(v) for k, _, v in (o.partition("=") for o in overrides)}


def write_best_config(path: Path, base_path: str | Path | None, values: dict[str, Any], comment: str) -> Path:
    """``path``: ``extends:`` the base config (relative to ``path``'s folder) plus ``values``."""
    body = {}
    if base_path is not None:
        body["extends"] = os.path.relpath(Path(base_path).resolve(), path.parent.resolve())
    body.update(_nested(values))
    text = "".join(f"# {line}\n" for line in comment.splitlines()) + yaml.safe_dump(body, sort_keys=False)
    return write_text(path, text, force=True)


def run_worker(
    base: TrainConfig,
    space: list[Param],
    out_dir: str | Path,
    *,
    storage: str,
    study_name: str = "calogan",
    trials: int = 10,
    pruner: str | Any = "median",
    base_path: str | Path | None = None,
    overrides: list[str] = (),
    objective: str = "separation",
    on_trial=None,
) -> TuneResult:
    """Run ``trials`` trials of the study ``study_name`` in ``storage`` (created when new);
    trial k trains in ``out_dir/trial-k``. ``base`` is the config every trial starts from
    (``base_path`` its file, for ``best.yaml``'s ``extends:``; ``overrides`` the ``--set``
    values on top of it, recorded in ``best.yaml``). ``objective``: see ``validation_score``.
    ``on_trial(number, state, value)`` is called after each trial of this worker."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    study = optuna.create_study(
        storage=_storage(storage), study_name=study_name, direction="minimize", pruner=_pruner(pruner), load_if_exists=True
    )
    if study.user_attrs.get("objective", objective) != objective:
        raise ConfigError(f"study {study_name!r} is scored by {study.user_attrs['objective']!r}, not {objective!r}: use another --study")
    study.set_user_attr("objective", objective)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mine: list[tuple[int, str, float | None]] = []

    def run_trial(trial) -> float:
        values = {p.key: p.suggest(trial) for p in space}
        config = apply_overrides(base, [_override(k, v) for k, v in values.items()])
        scores: list[float] = []

        def report(step: int, metrics: dict, model, val: ShowerData) -> None:
            gen = ShowerData.concatenate(list(generate(model, Conditions.from_data(val), seed=config.seed + 1, batch_size=4096)))
            score = validation_score(val, gen, objective=objective, seed=config.seed)
            score = score if math.isfinite(score) else 1.0  # a generator of NaN showers separates completely
            scores.append(score)
            trial.report(score, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"step {step}: validation score {score:.4g}")

        if config.val_fraction == 0 and not config.val_data:
            raise ConfigError("a tuning trial needs validation showers: set val_fraction > 0 or val_data")
        train(config, out / f"trial-{trial.number:04d}", on_validation=report)
        return min(scores)

    def record(study, frozen) -> None:
        mine.append((frozen.number, frozen.state.name, frozen.value))
        if on_trial is not None:
            on_trial(frozen.number, frozen.state.name, frozen.value)

    study.optimize(run_trial, n_trials=trials, catch=(TrainingDiverged,), callbacks=[record], gc_after_trial=True)
    try:
        best = study.best_trial
    except ValueError:  # no trial of the study has completed
        return TuneResult(study_name, mine, None, None, {}, None)
    fixed = {k: v for k, v in _parse_overrides(list(overrides)).items() if k.partition(".")[0] not in _MACHINE}
    path = write_best_config(
        out / "best.yaml",
        base_path,
        {**fixed, **best.params},
        f"calogan tune: best trial {best.number} of study {study_name!r}, validation score {best.value:.6g}\n"
        + (
            "(mean separation power of the high-level observables per incident-energy bin; lower is better)\n"
            if objective == "separation"
            else "(low-level classifier AUC, fast setting; 0.5 is indistinguishable)\n"
        )
        + f"train it: calogan train --config {out / 'best.yaml'} -o runs/best",
    )
    return TuneResult(study_name, mine, best.number, best.value, dict(best.params), path)
