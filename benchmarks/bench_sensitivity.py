"""Known-distortion test of ``calogan evaluate``: every headline metric on distorted copies of a reference, against its floor.

From one reference file, n showers are distorted (energy scale x1.02 and x1.05, sampling
fluctuations x1.2, lateral width x1.1, depth shifts, cells below 1 MeV zeroed, 10 % of hit
cells dropped, a layer mirrored for off-axis showers) and evaluated against 2n other
showers of the file; the undistorted n ("self-copy") must sit at the floors. The same as
``calogan evaluate --sensitivity REF.h5 -o DIR`` (``calogan.sensitivity``), plus
``--stability K``: the seed-averaged low-level AUC of one pair of samples (the x1.05 copy
and the floor pair) recomputed with K seeds, to quote its run-to-run spread.

    nice -n 10 .venv/bin/python benchmarks/bench_sensitivity.py [--reference F.h5] [--n 1000] [--stability 5]

Prints the Markdown table and writes it with the settings as JSON (default
runs/bench_sensitivity.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "geant4" / "g4_eplus_active.h5"


def stability(reference, n: int, seeds: int) -> dict:
    """Mean and spread over ``seeds`` seeds of the five-run low-level AUC of the x1.05 copy and of the floor pair, 1000 vs 1000."""
    from calogan import metrics as m
    from calogan.distortions import scale_energy

    order = np.random.default_rng(0).permutation(len(reference))
    a = reference.select(np.sort(order[:n]))
    b = reference.select(np.sort(order[n : 2 * n]))
    c = scale_energy(reference.select(np.sort(order[2 * n : 3 * n])), 1.05)
    out = {}
    for name, cand in (("floor (B vs A)", b), ("scale x1.05", c)):
        values = [m.classifier_test(a, cand, level="low", seed=s).auc for s in range(seeds)]
        out[name] = {"aucs": values, "mean": float(np.mean(values)), "spread": float(np.std(values, ddof=1))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT, help="reference shower file (default: the shared Geant4 e+ active file)")
    parser.add_argument("--n", type=int, default=1000, help="showers per sample (default 1000; needs 3n in the file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier-runs", type=int, default=None, help="runs per classifier AUC (default: the evaluation's, 5)")
    parser.add_argument("--stability", type=int, default=0, metavar="K", help="also measure the low-level AUC's spread over K seeds")
    parser.add_argument("--json", type=Path, default=ROOT / "runs" / "bench_sensitivity.json")
    args = parser.parse_args(argv)
    if not args.reference.exists():
        print(f"bench_sensitivity: {args.reference} not found (the shared Geant4 data); pass --reference", file=sys.stderr)
        return 2

    from calogan.evaluation import CLASSIFIER_LEVELS, EvaluationConfig, to_json_value
    from calogan.io import read_showers
    from calogan.metrics import default_classifier
    from calogan.sensitivity import format_table, sensitivity

    classifier = None
    if args.classifier_runs:
        classifier = {lvl: replace(default_classifier(lvl), n_runs=args.classifier_runs) for lvl in CLASSIFIER_LEVELS}
    config = EvaluationConfig(seed=args.seed, classifier=classifier)
    reference = read_showers(args.reference)
    t0, load = time.perf_counter(), os.getloadavg()
    result = sensitivity(
        reference, n=args.n, config=config, seed=args.seed, progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True)
    )
    seconds = time.perf_counter() - t0
    table = format_table(result.rows, result.n_per_class)
    print(f"calogan evaluate --sensitivity {args.reference.name}: {result.n_per_class} vs {result.n_per_class} showers, seed {args.seed}")
    print(table)
    for d in result.distortions:
        print(f"- {d.name}: {d.description}")
    print(f"{seconds:.0f} s on {os.cpu_count()} CPUs (load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after)")
    out = {
        "reference": str(args.reference),
        "n_per_class": result.n_per_class,
        "seed": args.seed,
        "rows": to_json_value(result.rows),
        "table": table,
        "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_before": load},
    }
    if args.stability:
        st = stability(reference, args.n, args.stability)
        out["stability"] = st
        print(f"low-level AUC over {args.stability} seeds (each the mean of 5 runs), {args.n} vs {args.n}:")
        for name, v in st.items():
            print(f"  {name}: mean {v['mean']:.4f}, spread (std) {v['spread']:.4f}; " + ", ".join(f"{a:.4f}" for a in v["aucs"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(f".{args.json.name}.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
