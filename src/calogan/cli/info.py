"""``calogan info FILE``: what a shower file holds, streamed, without loading it whole."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run", "summarize"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarize a shower file", description=__doc__.split("``: ")[1])
    p.add_argument("file", help="CaloGAN or CaloChallenge HDF5 file")
    p.add_argument("--geometry", help="preset name, CaloChallenge binning .xml or geometry .json (default: the file's own)")
    p.add_argument("--limit", type=int, default=None, help="average layer energies over the first LIMIT showers only")
    p.add_argument("--strict", action="store_true", help="refuse negative cells instead of clipping them")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def summarize(path, geometry=None, limit=None, strict=False) -> dict:
    """Summary of a shower file: metadata plus mean energy per layer, streamed in chunks."""
    import numpy as np

    from calogan.io import inspect, iter_showers

    info = inspect(path, geometry)
    g = info.geometry
    sums = np.zeros(g.n_layers)
    e_sum = 0.0
    n = 0
    for chunk in iter_showers(path, geometry=g, strict=strict, stop=limit):
        sums += g.layer_sums(chunk.cells.astype(np.float64)).sum(axis=0)
        e_sum += chunk.e_inc.sum()
        n += len(chunk)
    mean = sums / n
    return {
        "file": str(info.path),
        "format": info.format,
        "geometry": g.name,
        "layers": [
            {"name": layer.name, "shape": list(layer.shape), "cell_size_mm": layer.cell_size, "mean_energy_mev": float(m)}
            for layer, m in zip(g.layers, mean)
        ],
        "n_cells": g.n_cells,
        "n_showers": info.n,
        "n_averaged": n,
        "particle": info.particle,
        "energy_gev": {"min": info.e_range[0], "max": info.e_range[1], "mean": e_sum / n},
        "conditions": ["e_inc", *info.conditions],
        "mean_total_energy_mev": float(mean.sum()),
        "mean_response": float(mean.sum() / (1000.0 * e_sum / n)),
        "attributes": {k: v for k, v in info.attrs.items() if isinstance(v, (str, int, float))},
        "extra_keys": list(info.extra_keys),
    }


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        from calogan.errors import ConfigError

        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    s = summarize(args.file, args.geometry, args.limit, args.strict)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    fmt = {"calogan": "CaloGAN HDF5", "calochallenge": "CaloChallenge HDF5"}[s["format"]]
    e = s["energy_gev"]
    rows = [
        ("file", s["file"]),
        ("format", fmt),
        ("geometry", f"{s['geometry']} ({len(s['layers'])} layers, {s['n_cells']} cells)"),
        ("showers", str(s["n_showers"])),
        ("particle", s["particle"] or "not stated"),
        ("energy", f"{e['min']:.4g} - {e['max']:.4g} GeV (mean {e['mean']:.4g} GeV)"),
        ("conditions", ", ".join(s["conditions"])),
    ]
    if s["attributes"]:
        rows.append(("attributes", ", ".join(f"{k}={v}" for k, v in sorted(s["attributes"].items()) if k != "calogan_version")))
    if s["extra_keys"]:
        rows.append(("extra keys", ", ".join(s["extra_keys"])))
    for key, value in rows:
        print(f"{key:<11} {value}")
    scope = "all showers" if s["n_averaged"] == s["n_showers"] else f"first {s['n_averaged']} showers"
    print(f"\nmean energy per layer ({scope}):")
    print(f"  {'layer':<12} {'cells':>8} {'cell size [mm]':>15} {'<E> [MeV]':>12} {'fraction':>9}")
    total = s["mean_total_energy_mev"]
    for layer in s["layers"]:
        size = "x".join(f"{c:g}" for c in layer["cell_size_mm"]) if layer["cell_size_mm"] else "polar"
        shape = "x".join(str(v) for v in layer["shape"])
        frac = layer["mean_energy_mev"] / total if total > 0 else float("nan")
        print(f"  {layer['name']:<12} {shape:>8} {size:>15} {layer['mean_energy_mev']:>12.1f} {frac:>9.3f}")
    print(f"  {'total':<12} {'':>8} {'':>15} {total:>12.1f} {1.0 if total > 0 else float('nan'):>9.3f}")
    print(f"\nmean response <E_tot>/<E_inc> = {s['mean_response']:.4f}")
    return 0
