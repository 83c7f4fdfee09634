"""``calogan simulate -o OUT.h5``: showers from the built-in parametrized simulator, streamed to a file."""

from __future__ import annotations

import argparse
import math

__all__ = ["register", "run"]

_PARTICLES = ("e+", "e-", "gamma", "pi+", "pi-")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="generate showers with the built-in parametrized simulator",
        description=(
            "Generate showers with calogan's parametrized simulator (GFlash-style EM showers, an approximate pion model) "
            "calibrated on Geant4, in chunks so that any number of showers fits in memory. The default, "
            "'calogan simulate -n 5000 -o eplus.h5', gives 5000 e+ of 1-100 GeV in the CaloGAN geometry."
        ),
    )
    p.add_argument("-o", "--output", required=True, help="output HDF5 file")
    p.add_argument("-n", type=int, default=10_000, help="number of showers (default 10000)")
    p.add_argument("--particle", default="e+", help=f"incident particle: {', '.join(_PARTICLES)} (default e+)")
    p.add_argument(
        "--energy",
        default="1:100",
        help="incident energy in GeV: LO:HI uniform, or a list 1,2,4,...,262 shared out equally (default 1:100)",
    )
    p.add_argument(
        "--geometry", default="calogan", help="preset (calogan, atlas-barrel, voxel-25), geometry .json or CaloChallenge binning .xml"
    )
    p.add_argument(
        "--mode",
        choices=("total", "active"),
        default="total",
        help="total: cells hold all deposited energy (the CaloGAN convention, default); active: only the active (LAr) share",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same showers (default 0)")
    p.add_argument(
        "--x0", help="impact point x on the front face in mm: LO:HI, a list or a value (default 0); write --x0=-50:50 when LO < 0"
    )
    p.add_argument("--y0", help="impact point y on the front face in mm (default 0)")
    p.add_argument("--theta", help="polar angle of the direction to the z axis in DEGREES, e.g. 0:20 (default 0); stored in rad")
    p.add_argument("--phi", help="azimuth of the direction from the x axis in DEGREES, e.g. 0:360 (default 0); stored in rad")
    p.add_argument("--format", choices=("calogan", "calochallenge"), default="calogan", help="output format (default calogan)")
    p.add_argument("--params", help="simulator parameters .json from 'calogan calibrate' (default: the ones shipped for the particle)")
    p.add_argument(
        "--layer-depth",
        type=float,
        metavar="MM",
        help="depth of every layer whose geometry gives none (a CaloChallenge binning XML); the layers stay 2 mm Pb / 4 mm LAr",
    )
    p.add_argument("--chunk-size", type=int, default=10_240, help="showers per write (default 10240); does not change the showers")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=run)


def _geometry(spec: str, layer_depth: float | None):
    from dataclasses import replace

    from calogan.errors import ConfigError
    from calogan.geometry import Geometry, load_geometry

    geometry = load_geometry(spec)
    if layer_depth is None:
        return geometry
    if not layer_depth > 0 or not math.isfinite(layer_depth):
        raise ConfigError(f"--layer-depth must be a positive length in mm, got {layer_depth}")
    if all(layer.depth is not None for layer in geometry.layers):
        raise ConfigError(f"--layer-depth: geometry {geometry.name!r} already gives every layer's depth")
    layers = tuple(layer if layer.depth is not None else replace(layer, depth=layer_depth) for layer in geometry.layers)
    return Geometry(geometry.name, layers, geometry.description + f" (assumed layer depth {layer_depth:g} mm)")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from calogan.data import CONDITION_KEYS, particle_code, particle_name
    from calogan.errors import ConfigError
    from calogan.io import ShowerWriter
    from calogan.simulate import GENERATOR, Distribution, default_params, iter_simulate, load_params

    if args.n < 1:
        raise ConfigError(f"-n must be >= 1, got {args.n}")
    if args.chunk_size < 1:
        raise ConfigError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    energy = Distribution.parse(args.energy, "--energy", positive=True)
    deg = math.pi / 180.0
    dists = {
        "x0": args.x0 and Distribution.parse(args.x0, "--x0"),
        "y0": args.y0 and Distribution.parse(args.y0, "--y0"),
        "theta": args.theta and Distribution.parse(args.theta, "--theta", scale=deg),
        "phi": args.phi and Distribution.parse(args.phi, "--phi", scale=deg),
    }
    if dists["theta"] is not None and not all(0 <= v < 90 * deg for v in dists["theta"].values):
        raise ConfigError(f"--theta must lie in [0, 90) degrees, got {args.theta!r}")
    geometry = _geometry(args.geometry, args.layer_depth)
    params = load_params(args.params) if args.params else default_params(args.particle)
    # the stream checks particle, geometry and parameters, and the writer the output path,
    # before any shower is made; the writer's file appears only once complete
    stream = iter_simulate(
        geometry, args.particle, args.n, energy, seed=args.seed, mode=args.mode, params=params, chunk_size=args.chunk_size, **dists
    )
    positional = any(d is not None for d in dists.values())
    attrs = {
        "particle": particle_name(particle_code(args.particle)),
        "convention": args.mode,
        "generator": GENERATOR,
        "seed": args.seed,
        "energy_gev": args.energy,
        "simulator_params": str(Path(args.params).resolve()) if args.params else f"shipped ({params.particle})",
    }
    conditions = CONDITION_KEYS if positional else ()
    t0 = time.perf_counter()
    n = 0
    inputs = [p for p in (args.params, args.geometry) if p and Path(p).is_file()]
    with ShowerWriter(
        args.output, geometry, format=args.format, conditions=conditions, attrs=attrs, force=args.force, inputs=inputs
    ) as writer:
        for chunk in stream:
            writer.write(chunk)
            n += len(chunk)
    dt = time.perf_counter() - t0
    if not args.quiet:
        print(
            f"wrote {n} {attrs['particle']} showers ({args.mode} convention, {args.energy} GeV, geometry {geometry.name}) to {args.output}"
            f" in {dt:.1f} s ({n / max(dt, 1e-9):.0f} showers/s)"
        )
    return 0
