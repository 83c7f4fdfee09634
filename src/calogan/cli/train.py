"""``calogan train``: train a model family on a shower file, with checkpoints, validation and resume."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a generative model on a shower file",
        description="Train a model family (e.g. the ATLAS conditional WGAN-GP) on a shower file. The output folder "
        "receives config.yaml, last.pt (resumable), best.pt (best validation step) and log.jsonl. "
        "Data-parallel on N processes or GPUs: torchrun --nproc_per_node N -m calogan train ... "
        "(batch_size is then the global batch, split over the ranks; rank 0 writes).",
    )
    p.add_argument(
        "--config",
        help="training config YAML (e.g. configs/wgan_eplus.yaml; 'extends: BASE.yaml' inherits); default: the built-in defaults",
    )
    p.add_argument("--data", nargs="+", metavar="FILE", help="training shower file(s), joined (overrides the config's 'data')")
    p.add_argument("--val-data", nargs="+", metavar="FILE", help="validation shower file(s) (overrides 'val_data' and 'val_fraction')")
    p.add_argument("-o", "--output", required=True, help="output folder, e.g. runs/wgan_eplus")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config option (YAML value), repeatable: --set lr_g=2e-4 --set model.lambda_gp=5",
    )
    p.add_argument("--device", help="auto (CUDA when present), cpu or cuda[:N] (default: the config's, auto)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: the config's, else $CALOGAN_THREADS, else torch's own choice)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its last.pt, bit for bit")
    p.add_argument("--force", action="store_true", help="start again in an OUTPUT that already holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from calogan.errors import ConfigError
    from calogan.training import TrainConfig, apply_overrides, train

    if args.resume and args.force:
        raise ConfigError("--resume and --force exclude each other")
    if args.config:
        config = TrainConfig.from_yaml(args.config)
    elif args.resume and (Path(args.output) / "config.yaml").exists():
        config = TrainConfig.from_yaml(Path(args.output) / "config.yaml")
    else:
        config = TrainConfig()
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data={json.dumps(args.data[0] if len(args.data) == 1 else args.data)}")
    if args.val_data:
        overrides.append(f"val_data={json.dumps(args.val_data[0] if len(args.val_data) == 1 else args.val_data)}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    if args.quiet:
        overrides.append("progress=false")
    config = apply_overrides(config, overrides)
    result = train(config, args.output, resume=args.resume, force=args.force)
    if result.rank:  # under torchrun rank 0 speaks for the run
        return 0
    minutes = result.elapsed_s / 60
    ranks = f" on {result.world_size} ranks" if result.world_size > 1 else ""
    print(
        f"stopped at step {result.step} ({result.stopped.replace('_', ' ')}) after {minutes:.1f} min, "
        f"{result.showers_per_s:.0f} showers/s{ranks}"
    )
    if result.best_value is not None:
        what = "chi2/ndf of E_tot" if result.selection == "chi2" else "low-level classifier AUC"
        print(f"best validation {what} = {result.best_value:.3g} at step {result.best_step}")
    if not result.best.exists():  # selection_max_response found no step whose energy scale was close enough
        print(f"no validation step qualified as best (selection_max_response): no {result.best.name}; {result.last} (last, resumable)")
        return 0
    print(f"checkpoints: {result.best} (best), {result.last} (last, resumable)")
    return 0
