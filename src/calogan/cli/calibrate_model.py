"""``calogan calibrate-model --model CKPT --train A.h5 --validation V.h5 -o OUT.pt``: fit a trained generator's marginal calibration."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate-model",
        help="fit a trained generator's marginal calibration (cell fluctuations, per-cell quantile maps, response map)",
        description="Fit, on the training showers only, the calibration that calogan.marginals applies after a generator: "
        "independent cell fluctuations, a quantile map per cell and incident energy (hit probability and hit spectrum), and "
        "a map of E_tot / E_inc (response and resolution). One calibration is fitted per --noise level; the one whose "
        "showers the fast low-level classifier separates least from the --validation showers is written to -o, with the "
        "generator, as a generator-only checkpoint that generate, export, benchmark and evaluate take as they are. When "
        "no level beats the uncalibrated generator, nothing is written and the exit status is 1.",
    )
    p.add_argument("--model", required=True, help="trained checkpoint, e.g. runs/wgan_eplus/best.pt")
    p.add_argument("--train", nargs="+", required=True, help="the showers the model trained on (the calibration's data)")
    p.add_argument("--validation", required=True, help="showers for choosing the noise level (never the showers you report on)")
    p.add_argument("-o", "--output", required=True, help="the calibrated checkpoint (.pt)")
    p.add_argument(
        "--noise", default="0.2,0.4,0.6,0.8,1", help="cell-fluctuation levels to try, in model-space units (default 0.2,0.4,0.6,0.8,1)"
    )
    p.add_argument(
        "--augment",
        default=None,
        help="mirror images of the training showers to add, e.g. mirror_x,mirror_y (default: the model's training config's)",
    )
    p.add_argument("--energies", type=int, default=16, help="incident-energy points of the maps (default 16)")
    p.add_argument("--knots", type=int, default=128, help="knots of each map (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fit's and the check's showers (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from calogan.augment import AUGMENTS, mirror_axes, mirror_images
    from calogan.checkpoint import load_checkpoint, save_checkpoint
    from calogan.data import Conditions, ShowerData
    from calogan.errors import ConfigError
    from calogan.generate import generate
    from calogan.io import read_showers
    from calogan.marginals import choose_calibration
    from calogan.metrics import low_level_auc
    from calogan.runtime import check_output

    try:
        noises = [float(v) for v in args.noise.split(",")]
    except ValueError:
        raise ConfigError(f"--noise {args.noise}: not a comma-separated list of numbers") from None
    if not noises or any(not 0 <= n < float("inf") for n in noises):
        raise ConfigError(f"--noise {args.noise}: levels must be >= 0")
    if args.energies < 2 or args.knots < 2:
        raise ConfigError(f"--energies and --knots must be >= 2, got {args.energies} and {args.knots}")
    check_output(args.output, force=args.force, inputs=[args.model, *args.train, args.validation], error=ConfigError)
    ckpt = load_checkpoint(args.model)
    augment = args.augment.split(",") if args.augment is not None else list(ckpt.train_config.get("augment") or [])
    bad = [a for a in augment if a not in AUGMENTS]
    if bad:
        raise ConfigError(f"--augment: unknown {', '.join(bad)} ({', '.join(AUGMENTS)})")
    train = ShowerData.concatenate([read_showers(f) for f in args.train])
    train = mirror_images(train, mirror_axes(augment))
    validation = read_showers(args.validation)
    print(
        f"calibrating {args.model} on {len(train)} training showers (mirrors: {','.join(augment) or 'none'}), {len(validation)} validation showers"
    )
    keys = ckpt.model.conditions.keys[1:]
    cond = Conditions(validation.e_inc, validation.pdg, {k: validation.conditions[k] for k in keys})

    def score(model) -> float:  # the fast low-level classifier AUC of the model's showers against the validation showers
        cells = np.concatenate([d.cells for d in generate(model, cond, seed=args.seed + 1)])
        shown = ShowerData(validation.geometry, cells, validation.e_inc, validation.pdg, validation.conditions)
        return low_level_auc(validation, shown, fast=True, seed=args.seed).auc

    print("fast low-level classifier AUC against the validation showers:")
    calib, rows = choose_calibration(ckpt.model, train, noises, score, seed=args.seed, n_energy=args.energies, n_knots=args.knots)
    if calib is None:
        print(f"no calibration beats the uncalibrated generator on {args.validation}; nothing written")
        return 1
    ckpt.model.calibration = calib
    if keys:
        print(
            f"note: the maps are marginal over {', '.join(keys)}; the classifier does not see every trend with them "
            "(check them with calogan evaluate, condition trends, before using the calibrated model)"
        )
    metrics = dict(ckpt.metrics)
    metrics["calibration"] = {
        "noise": float(calib.noise),
        "validation": args.validation,
        "fast_auc": {("none" if n is None else f"{n:g}"): a for n, a in rows},
        "energies": args.energies,
        "knots": args.knots,
    }
    save_checkpoint(
        args.output,
        ckpt.model,
        step=ckpt.step,
        train_config=ckpt.train_config,
        metrics=metrics,
        data_attrs=ckpt.data_attrs,
        generator_only=True,
    )
    print(
        f"wrote {args.output}: noise {float(calib.noise):g}, fast low-level AUC {min(a for _, a in rows):.3f} (uncalibrated {rows[0][1]:.3f})"
    )
    return 0
