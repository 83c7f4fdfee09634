"""``calogan interpolate``: traverse one condition of a trained model with the noise held fixed."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate",
        help="draw a traversal of one condition (energy, x0, y0, theta, phi) at fixed noise",
        description="Sweep one condition of a trained model over a range with the same latent noise at every point and draw "
        "the mean shower of each point per layer (figs. 3-5 of the conditional CaloGAN paper), with the centroid, width or "
        "total energy against the condition; prints those numbers too.",
    )
    p.add_argument("--model", required=True, help="checkpoint, e.g. runs/cond_calogan/best.pt")
    p.add_argument("--vary", required=True, help="condition to traverse: e_inc (GeV), x0, y0 (mm), theta, phi (rad)")
    p.add_argument(
        "--range",
        required=True,
        metavar="A:B",
        help="first and last value, in the condition's unit (GeV, mm, rad); write --range=-50:50 when A is negative",
    )
    p.add_argument("--steps", type=int, default=10, help="number of points, ends included (default 10)")
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="value of another condition (default: E = 50 GeV, x0 = y0 = 0, theta and phi at the low end of their range)",
    )
    p.add_argument("--particle", help="particle, for a model over several (e.g. e+, gamma)")
    p.add_argument("--n-average", type=int, default=10, help="showers averaged per point (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed noise (default 0)")
    diff = p.add_mutually_exclusive_group()
    diff.add_argument("--difference", dest="difference", action="store_true", default=None, help="draw differences to the middle point")
    diff.add_argument("--no-difference", dest="difference", action="store_false", help="draw the mean images themselves")
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="FILE",
        help="shower file carrying the varied condition (e.g. the Geant4 test split and showers generated at its conditions): "
        "also print its shower-by-shower trends of the same observables (repeatable)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the traversal's numbers as JSON")
    p.add_argument("-o", "--output", required=True, help="figure file (.png or .pdf); the default draws differences for theta only")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=run)


def _parse_range(text: str) -> tuple[float, float]:
    from calogan.errors import ConfigError

    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"--range must be A:B, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from calogan.cli import flag_names
    from calogan.data import particle_code
    from calogan.errors import ConfigError
    from calogan.runtime import check_output, write_text

    a, b = _parse_range(args.range)
    if args.steps < 2:
        raise ConfigError(f"--steps must be >= 2, got {args.steps}")
    fixed = {}
    for item in args.fix:
        key, sep, text = item.partition("=")
        try:
            if not sep:
                raise ValueError
            fixed[key.strip()] = float(text)
        except ValueError:
            raise ConfigError(f"--fix expects KEY=NUMBER, got {item!r}") from None
    if args.vary in fixed:
        raise ConfigError(f"--fix {args.vary}: that is the condition being varied")
    from calogan.interpolate import TREND_OBSERVABLES

    if args.compare and args.vary not in TREND_OBSERVABLES:
        raise ConfigError(f"--compare: no trend is defined against {args.vary} (only {', '.join(TREND_OBSERVABLES)})")
    for path in args.compare:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--compare {path}: no such file")
    outputs = [Path(args.output)] + ([Path(args.json)] if args.json else [])
    for path in outputs:
        check_output(path, force=args.force, inputs=[args.model, *args.compare])
        if path.suffix.lower() not in (".png", ".pdf", ".svg") and path == outputs[0]:
            raise ConfigError(f"-o {path}: the figure must be .png, .pdf or .svg")
    try:
        particle = particle_code(args.particle) if args.particle else None
    except ValueError as err:
        raise ConfigError(f"--particle: {err}") from None

    from calogan.checkpoint import load_checkpoint
    from calogan.interpolate import data_trends, draw_traversal, traversal_trends, traverse

    ckpt = load_checkpoint(args.model)
    with flag_names(key="--vary", fixed="--fix", particle="--particle", n_average="--n-average"):
        t = traverse(
            ckpt.model, args.vary, np.linspace(a, b, args.steps), fixed=fixed, particle=particle, n_average=args.n_average, seed=args.seed
        )
    difference = args.vary == "theta" if args.difference is None else args.difference
    draw_traversal(t, ckpt.model.geometry, outputs[0], difference=difference, force=args.force)

    geometry = ckpt.model.geometry
    print(
        f"traversal of {args.vary} ({args.n_average} showers per point, same noise; fixed: "
        + ", ".join(f"{k}={v:.4g}" for k, v in t.conditions.items())
        + ")"
    )
    print("centroids cx, cy and widths wx, wy per layer in mm")
    print(
        f"{args.vary:>10} {'E_tot GeV':>10}"
        + "".join(f" {layer.name + ' cx':>12} {'cy':>8} {'wx':>8} {'wy':>8}" for layer in geometry.layers)
    )
    o = t.observables
    for i, v in enumerate(t.values):
        cols = "".join(
            f" {o['centroid_x'][i, li]:12.2f} {o['centroid_y'][i, li]:8.2f} {o['width_x'][i, li]:8.2f} {o['width_y'][i, li]:8.2f}"
            for li in range(geometry.n_layers)
        )
        print(f"{v:10.4g} {o['e_tot'][i] / 1000:10.3f}{cols}")

    def trend_rows(source: str, trends: dict) -> None:
        for name, (slope, r) in trends.items():
            slope, r = np.atleast_1d(slope), np.atleast_1d(r)
            cols = "".join(f" {s:12.4g} {c:6.3f}" for s, c in zip(slope, r))
            print(f"{source:>28} {name:>11}{cols}")

    unit = {"e_inc": "MeV/GeV", "theta": "mm/rad"}.get(args.vary, "mm/mm")
    names = ["E_tot"] if args.vary == "e_inc" else [layer.name for layer in geometry.layers]
    if args.vary in TREND_OBSERVABLES:
        print(f"trend against {args.vary}: least-squares slope ({unit}) and correlation r")
        print(f"{'source':>28} {'observable':>11}" + "".join(f" {n + ' slope':>12} {'r':>6}" for n in names))
        trend_rows("traversal (means)", traversal_trends(t))
    if args.compare:
        from calogan.io import read_showers

        for path in args.compare:
            trend_rows(f"{Path(path).name} (showers)", data_trends(read_showers(path), args.vary))
    if args.json:
        write_text(outputs[1], json.dumps({"model": str(args.model), "step": ckpt.step, **t.to_dict()}, indent=1), force=args.force)
    print(f"wrote {outputs[0]}" + (f" and {outputs[1]}" if args.json else ""))
    return 0
