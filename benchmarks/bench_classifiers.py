"""Compare classifier designs (feature set x model) on the known distortions: which low-level test detects most?

From the reference file, three disjoint sets of n showers: A (the reference side), B (the
floor: B against A) and C, which is distorted by every distortion of
``calogan.distortions.default_suite``; each design's seed-averaged AUC (``classifier_test``,
five runs rotating over the folds) is measured for the floor and every distorted copy.
Designs: the ``low`` features (log-scaled cells, layer energies, E_tot, hit counts) with
gradient-boosted trees and with a regularised MLP; the CaloChallenge ``cls-low`` input
(``low_calochallenge``) and ``cls-low-normed`` input (``low_normed``) with the CaloChallenge
MLP; the observables (``high``) with trees and with the MLP.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_classifiers.py [--reference F.h5] [--n 1000] [--designs a,b]

Prints a table AUC mean ± spread of the runs per design and distortion, with seconds per
design, and writes JSON (default runs/bench_classifiers.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "geant4" / "g4_eplus_active.h5"


def designs() -> dict:
    from calogan.metrics import ClassifierConfig, default_classifier

    mlp_small = ClassifierConfig(
        model="mlp", hidden=256, n_layers=2, lr=1e-3, weight_decay=1e-2, dropout=0.2, batch_size=128, max_epochs=60, patience=8
    )
    return {
        "low + trees": ("low", default_classifier("low")),
        "low + MLP": ("low", mlp_small),
        "CaloChallenge cls-low (MLP)": ("low_calochallenge", default_classifier("low_calochallenge")),
        "CaloChallenge cls-low-normed (MLP)": ("low_normed", default_classifier("low_normed")),
        "high + trees": ("high", default_classifier("high")),
        "high + MLP": ("high", replace(mlp_small, hidden=128)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=DEFAULT)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--designs", default=None, help="comma-separated design names (default: all)")
    parser.add_argument("--json", type=Path, default=ROOT / "runs" / "bench_classifiers.json")
    args = parser.parse_args(argv)
    if not args.reference.exists():
        print(f"bench_classifiers: {args.reference} not found; pass --reference", file=sys.stderr)
        return 2

    from calogan import metrics as m
    from calogan.distortions import default_suite
    from calogan.io import read_showers

    data = read_showers(args.reference)
    order = np.random.default_rng(0).permutation(len(data))
    a, b, c = (data.select(np.sort(order[k * args.n : (k + 1) * args.n])) for k in range(3))
    rng = np.random.default_rng(1)
    suite = default_suite(data)
    cands = [("floor", b)] + [(d.name, d.apply(c, rng)) for d in suite]
    chosen = designs()
    if args.designs:
        chosen = {k: v for k, v in chosen.items() if k in args.designs.split(",")}
    results = {}
    names = [n for n, _ in cands]
    print(f"| design ({args.n} vs {args.n}, 5 runs) | " + " | ".join(names) + " | seconds |")
    print("|---|" + "---|" * (len(names) + 1))
    for design, (level, config) in chosen.items():
        t0 = time.perf_counter()
        row = {}
        for name, cand in cands:
            r = m.classifier_test(a, cand, level=level, config=config, seed=0)
            row[name] = {"auc": r.auc, "spread": r.auc_std, "uncertainty": r.auc_uncertainty}
        seconds = time.perf_counter() - t0
        results[design] = {"level": level, "model": config.model, "aucs": row, "seconds": round(seconds, 1)}
        print(
            f"| {design} | " + " | ".join(f"{v['auc']:.3f} ± {v['spread']:.3f}" for v in row.values()) + f" | {seconds:.0f} |", flush=True
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(f".{args.json.name}.tmp")
    tmp.write_text(json.dumps({"reference": str(args.reference), "n": args.n, "results": results}, indent=1) + "\n")
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
