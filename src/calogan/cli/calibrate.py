"""``calogan calibrate REF.h5 -o params.json``: fit the parametrized simulator to reference showers."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="fit the parametrized simulator to reference showers and print the comparison table",
        description=(
            "Fit the built-in simulator's parameters to a CaloGAN-format file of reference showers (e.g. Geant4) and print, "
            "per energy bin, reference against simulator: mean response, resolution, layer fractions, shower depth, "
            "layer-1 widths, hit cells per layer and empty layers, with the targets and pass/fail; then the cell-energy "
            "spectrum of every layer and the classifier AUC (the one 'calogan evaluate' trains) of simulator against "
            "reference. With --check, only print them for existing parameters."
        ),
    )
    p.add_argument("reference", help="reference showers (CaloGAN or CaloChallenge HDF5)")
    p.add_argument("-o", "--output", help="where to write the fitted parameters (.json); required unless --check")
    p.add_argument("--pair", help="the same showers in the other convention (Geant4 _total with _active): also fits the active share")
    p.add_argument("--particle", help="particle of the reference (default: the file's 'particle' attribute)")
    p.add_argument(
        "--convention", choices=("total", "active"), help="the reference's convention (default: the file's 'convention' attribute)"
    )
    p.add_argument("--geometry", help="geometry of the reference (default: the file's own)")
    p.add_argument("--start", help="parameters .json to start from and to keep where the reference says nothing (default: shipped)")
    p.add_argument(
        "--em-params",
        help="pions only: take the EM part's parameters (pi0 showers) from this e+ parameter file (default: the shipped e+ ones)",
    )
    p.add_argument(
        "--stages", help="comma-separated fit stages (EM: longitudinal,radial,cells,response,sampling; pions: mip,shower,sampling)"
    )
    p.add_argument("--check", action="store_true", help="fit nothing: compare the --start (or shipped) parameters with the reference")
    p.add_argument("--limit", type=int, default=20_000, help="use the first LIMIT showers (default 20000)")
    p.add_argument("--bin-width", type=float, default=10.0, help="energy bin width of the table in GeV (default 10)")
    p.add_argument("--oversample", type=int, default=2, help="simulated showers per reference shower (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the fit and the comparison (default 0)")
    p.add_argument("--no-classifier", action="store_true", help="skip the classifier test (the slowest part of the check)")
    p.add_argument(
        "--classifier-runs",
        type=int,
        default=None,
        metavar="K",
        help="independent runs averaged into each classifier AUC (default: as calogan evaluate, 5)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(func=run)


def _read(path: str, geometry, limit: int):
    from calogan.io import inspect, read_showers

    info = inspect(path, geometry)
    data = read_showers(path, geometry=info.geometry, stop=limit)
    return info, data


def _attr(info, key: str, given: str | None, option: str) -> str:
    from calogan.errors import ConfigError

    stored = info.attrs.get(key) if key != "particle" else info.particle
    if given is not None:
        if stored is not None and str(stored) != given and key == "convention":
            raise ConfigError(f"{info.path}: the file says convention {stored!r}, {option} says {given!r}")
        return given
    if stored is None:
        raise ConfigError(f"{info.path}: the file does not say its {key}; pass {option}")
    return str(stored)


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this fit, from the parsed options."""
    import shlex
    from pathlib import Path

    words = ["calogan", "calibrate", Path(args.reference).name, "-o", Path(args.output).name]
    for option in ("pair", "particle", "convention", "geometry", "start", "em_params", "stages"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option.replace('_', '-')}", Path(value).name if option in ("pair", "start", "em_params") else str(value)]
    for option, default in (("limit", 20_000), ("bin_width", 10.0), ("oversample", 2), ("seed", 0)):
        value = getattr(args, option)
        if value != default:
            words += [f"--{option.replace('_', '-')}", str(value)]
    if args.check:
        words.append("--check")
    if args.no_classifier:
        words.append("--no-classifier")
    elif args.classifier_runs is not None:
        words += ["--classifier-runs", str(args.classifier_runs)]
    return " ".join(shlex.quote(w) for w in words)


def _sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _classifier(ref, sim, seed: int, runs: int | None) -> dict:
    """Print and return the low- and high-level classifier AUCs of ``sim`` against ``ref``
    with their floor, as ``calogan evaluate`` measures them (``calogan.metrics``)."""
    from dataclasses import replace

    from calogan import metrics

    out = {}
    for level in ("low", "high"):
        config = metrics.default_classifier(level)
        config = config if runs is None else replace(config, n_runs=runs)
        result, floor = metrics.classifier_with_floor(ref, sim, level=level, config=config, seed=seed)
        print(
            f"classifier AUC ({level}-level, {result.n_test} test showers): {result.auc:.3f} +- {result.auc_uncertainty:.3f}"
            f" (floor, reference against itself: {floor.auc:.3f} +- {floor.auc_uncertainty:.3f})"
        )
        out[f"auc_{level}"] = round(result.auc, 4)
        out[f"floor_{level}"] = round(floor.auc, 4)
    return out


def run(args: argparse.Namespace) -> int:
    import math
    import time
    from dataclasses import replace
    from pathlib import Path

    import numpy as np

    from calogan import __version__
    from calogan.data import particle_code, particle_name
    from calogan.errors import ConfigError
    from calogan.runtime import check_output
    from calogan.simulate import default_params, load_params, save_params, simulate
    from calogan.simulate.calibrate import calibrate, compare, format_spectrum, format_table, spectrum_rows, summary

    if args.classifier_runs is not None and args.classifier_runs < 1:
        raise ConfigError(f"--classifier-runs must be >= 1, got {args.classifier_runs}")

    if args.output is None and not args.check:
        raise ConfigError("-o/--output is required (or pass --check to compare without fitting)")
    if args.output is not None:  # refuse a bad output now, not after the fit
        inputs = [p for p in (args.reference, args.pair, args.start, args.em_params) if p]
        check_output(args.output, force=args.force, inputs=inputs, error=ConfigError)
    if not 0 < args.bin_width < math.inf:
        raise ConfigError(f"--bin-width must be a finite number of GeV > 0, got {args.bin_width}")
    if args.limit < 20:
        raise ConfigError(f"--limit must be >= 20, got {args.limit}")
    if args.oversample < 1:
        raise ConfigError(f"--oversample must be >= 1, got {args.oversample}")
    info, ref = _read(args.reference, args.geometry, args.limit)
    try:
        particle = particle_name(particle_code(_attr(info, "particle", args.particle, "--particle")))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    convention = _attr(info, "convention", args.convention, "--convention")
    if convention not in ("total", "active"):
        raise ConfigError(f"{info.path}: convention {convention!r} is neither 'total' nor 'active'; pass --convention")
    pair = None
    if args.pair:
        pinfo, pair = _read(args.pair, info.geometry, args.limit)
        other = "active" if convention == "total" else "total"
        stored = pinfo.attrs.get("convention")
        if stored is not None and stored != other:
            raise ConfigError(f"{pinfo.path}: --pair must hold the {other} convention, the file says {stored!r}")
    start = load_params(args.start) if args.start else default_params(particle)
    if args.em_params:
        if not start.is_hadron:
            raise ConfigError(f"--em-params is for pions; {particle} showers are fitted whole")
        start = replace(start, em=load_params(args.em_params).em)
    elif start.is_hadron and not args.check:
        start = replace(start, em=default_params("e+").em)
    if args.check:
        params = start
    else:
        stages = tuple(s.strip() for s in args.stages.split(",")) if args.stages else None
        t0 = time.perf_counter()
        params, fitted = calibrate(
            ref,
            particle=particle,
            convention=convention,
            start=start,
            pair=pair,
            seed=args.seed,
            oversample=args.oversample,
            bin_width=args.bin_width,
            stages=stages,
        )
        print(f"fitted {', '.join(fitted) or 'nothing'} in {time.perf_counter() - t0:.0f} s")
    tables = {}
    for conv, data in ((convention, ref), *(() if pair is None else ((("active" if convention == "total" else "total"), pair),))):
        k = args.oversample
        sim = simulate(
            data.geometry,
            particle,
            np.tile(data.e_inc, k),
            seed=args.seed + 1,
            mode=conv,
            params=params,
            **{key: np.tile(v, k) for key, v in data.conditions.items()},
        )
        rows = compare(data, sim, args.bin_width)
        print(f"\n{particle}, {conv} convention: {Path(args.reference if conv == convention else args.pair).name} against the simulator")
        print(format_table(rows, labels=("reference", "param")))
        print(f"\ncell-energy spectra, {conv} convention (hit cells per shower; quantiles of the hit-cell energies)")
        print(format_spectrum(spectrum_rows(data, sim, args.bin_width)))
        tables[conv] = summary(rows)
        if not args.no_classifier:
            tables[conv]["classifier"] = _classifier(data, sim.select(slice(0, len(data))), args.seed, args.classifier_runs)
    if args.output is not None:
        files = [args.reference] + ([args.pair] if args.pair else [])
        provenance = {
            "command": _command(args),
            "reference": [{"file": Path(f).name, "sha256": _sha256(f), "showers": len(ref)} for f in files],
            "particle": particle,
            "seed": args.seed,
            "oversample": args.oversample,
            "calogan_version": __version__,
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "fitted": [] if args.check else fitted,
            "started_from": str(args.start) if args.start else f"shipped {particle} parameters",
            **({"em_part_from": str(args.em_params) if args.em_params else "shipped e+ parameters"} if start.is_hadron else {}),
        }
        params = replace(params, provenance=provenance, validation={"bin_width_gev": args.bin_width, **tables})
        save_params(params, args.output, force=args.force)
        print(f"\nwrote {args.output}")
    return 0
