"""``calogan split`` and ``calogan select``: disjoint random subsets and energy bands of a file."""

from __future__ import annotations

import argparse

from calogan.errors import ConfigError

__all__ = ["register", "run_select", "run_split"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "split",
        help="split a shower file into disjoint random subsets (e.g. train/test)",
        description="Split a shower file into disjoint random subsets; the same seed gives the same subsets.",
    )
    p.add_argument("file", help="CaloGAN or CaloChallenge HDF5 file")
    p.add_argument("--fractions", default="0.75,0.25", help="comma-separated fractions of the showers, one per output (default 0.75,0.25)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the split (default 0)")
    p.add_argument("-o", "--output", nargs="+", required=True, help="output files, one per fraction")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=run_split)

    p = sub.add_parser(
        "select",
        help="keep the showers whose incident energy is inside (or outside) a band",
        description="Write the showers of a file whose incident energy lies in [LO, HI] GeV (or outside it with --outside).",
    )
    p.add_argument("file", help="CaloGAN or CaloChallenge HDF5 file")
    p.add_argument("--energy", required=True, help="energy band LO:HI in GeV")
    p.add_argument("--outside", action="store_true", help="keep the showers outside the band instead")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run_select)


def _fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--fractions must be comma-separated numbers, got {text!r}") from None
    if not all(0 < v <= 1 for v in values) or not sum(values) <= 1 + 1e-9:
        raise ConfigError(f"--fractions must be positive and sum to at most 1, got {text!r}")
    return values


def run_split(args: argparse.Namespace) -> int:
    from calogan.io import split_file

    fractions = _fractions(args.fractions)
    if len(fractions) != len(args.output):
        raise ConfigError(f"--fractions gives {len(fractions)} fractions but -o names {len(args.output)} outputs")
    counts = split_file(args.file, args.output, fractions, seed=args.seed, force=args.force)
    for out, count in zip(args.output, counts):
        print(f"{out}: {count} showers")
    return 0


def run_select(args: argparse.Namespace) -> int:
    import numpy as np

    from calogan.io import copy_subsets, inspect, read_e_inc

    try:
        lo, hi = (float(v) for v in args.energy.split(":"))
    except ValueError:
        raise ConfigError(f"--energy must be LO:HI in GeV, got {args.energy!r}") from None
    if not 0 <= lo < hi:
        raise ConfigError(f"--energy needs 0 <= LO < HI, got {args.energy!r}")
    info = inspect(args.file)
    e = read_e_inc(args.file)
    inside = (e >= lo) & (e <= hi)
    keep = ~inside if args.outside else inside
    (count,) = copy_subsets(args.file, [args.output], np.where(keep, 0, -1), force=args.force)
    print(f"{args.output}: {count} of {info.n} showers")
    return 0
