"""``calogan tune``: one worker of a hyper-parameter search (Optuna) that any number of workers join through a storage URL."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search hyper-parameters: one worker of an Optuna study shared through a database",
        description="Run TRIALS trainings of an Optuna study: each draws the options of the search space (SPACE.yaml) on top of "
        "the config, trains in OUTPUT/trial-NNNN and is scored at every validation by the mean separation power of the "
        "high-level shower observables per energy bin (or --objective auc: the low-level classifier AUC; lower is better); "
        "hopeless trials are pruned. Start any number of "
        "workers, on any machines, with the same --storage and --study. Writes OUTPUT/best.yaml (extends the config), "
        "which calogan train takes. Needs the distributed extra (optuna).",
    )
    p.add_argument("--config", required=True, help="base training config YAML (every trial starts from it)")
    p.add_argument("--space", required=True, help="search space YAML: option: {low: A, high: B[, log: true]} or option: [choices]")
    p.add_argument("--trials", type=int, required=True, help="trials this worker runs")
    p.add_argument("--storage", required=True, help="study database URL: sqlite:///study.db (one machine), postgresql://... (a cluster)")
    p.add_argument("--study", default="calogan", help="study name in the storage (default calogan)")
    p.add_argument("--data", help="training shower file (overrides the config's 'data')")
    p.add_argument("-o", "--output", required=True, help="folder of the trials' runs and best.yaml (shared by the workers)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config option for every trial (YAML value), repeatable: --set max_steps=2000",
    )
    p.add_argument(
        "--objective",
        choices=("separation", "auc"),
        default="separation",
        help="validation score: mean separation power of the high-level observables per energy bin (default), "
        "or the low-level classifier AUC (fast setting: seconds per validation, needs thousands of validation showers)",
    )
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median", help="how hopeless trials stop (default median)")
    p.add_argument("--device", help="auto (CUDA when present), cpu or cuda[:N] (default: the config's, auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the config's, else $CALOGAN_THREADS, else torch's own choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calogan.errors import ConfigError
    from calogan.training import TrainConfig, apply_overrides

    try:
        from calogan.distributed.tune import read_space, run_worker
    except ImportError as err:
        raise ConfigError(f"calogan tune needs Optuna ({err}): pip install 'calogan[distributed]'") from None

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data={args.data}")
    machine = ["progress=false"]
    if args.device:
        machine.append(f"device={args.device}")
    if args.threads is not None:
        machine.append(f"threads={args.threads}")
    base = apply_overrides(TrainConfig.from_yaml(args.config), overrides + machine)
    space = read_space(args.space, base)

    def said(number: int, state: str, value) -> None:
        print(f"trial {number}: {state.lower()}" + (f", score {value:.4g}" if value is not None else ""), flush=True)

    result = run_worker(
        base,
        space,
        args.output,
        storage=args.storage,
        study_name=args.study,
        trials=args.trials,
        pruner=args.pruner,
        base_path=args.config,
        overrides=overrides,
        objective=args.objective,
        on_trial=said,
    )
    if result.best_number is None:
        print(f"study {result.study!r}: no trial has completed yet")
        return 0
    print(f"study {result.study!r}: best trial {result.best_number}, score {result.best_value:.4g}, {result.best_params}")
    print(f"best config: {result.best_config} (calogan train --config {result.best_config} -o runs/best)")
    return 0
