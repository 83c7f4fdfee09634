"""Benchmark ``calogan evaluate``: 20k reference against 20k candidate showers, every metric including both classifiers.

By default both samples come from the built-in parametrized simulator, as the commands
``calogan simulate --mode active -n N --seed 1`` (reference) and ``--seed 2`` (candidate)
would make them: e+ of 1-100 GeV, independent showers, so the nearest-neighbour check and
the classifiers see realistic, duplicate-free samples. ``--inputs resample`` instead resamples
the shared Geant4 e+ file with replacement (3850 showers: many duplicates) and scales the
candidate's cells by 1.03. ``--reference`` and ``--candidate`` time existing files (made
beforehand, so that only the evaluation runs in a quiet window). ``calogan evaluate`` then
runs on the files in this process, exactly as from the command line; the stage timings come
from its metrics.json.

    flock /tmp/calogan-bench.lock .venv/bin/python benchmarks/bench_evaluate.py [--n 20000] [--fast]
    .venv/bin/python benchmarks/bench_evaluate.py --reference ref.h5 --candidate cand.h5

Prints a table stage -> seconds (wall and process CPU time) and writes it as JSON (default
runs/bench_evaluate.json). Target: at most 180 s in all on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from calogan.runtime import write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "geant4" / "g4_eplus_active.h5"
TARGET_S = 180.0


def make_inputs(source: Path, n: int, workdir: Path, seed: int) -> tuple[Path, Path]:
    """Reference and candidate files of n showers each, resampled with replacement from ``source``; candidate cells x 1.03."""
    from calogan.io import read_showers, write_showers

    data = read_showers(source)
    rng = np.random.default_rng(seed)
    ref = data.select(rng.integers(0, len(data), n))
    cand = data.select(rng.integers(0, len(data), n))
    cand = replace(cand, cells=cand.cells * 1.03)
    paths = workdir / "reference.h5", workdir / "candidate.h5"
    write_showers(paths[0], ref, attrs={"source": str(source), "resampled": "with replacement"}, force=True)
    write_showers(paths[1], cand, attrs={"source": str(source), "resampled": "with replacement", "distortion": "cells x 1.03"}, force=True)
    return paths


def simulate_inputs(n: int, workdir: Path, seed: int) -> tuple[Path, Path]:
    """Reference and candidate files of n simulated e+ (active convention, 1-100 GeV), seeds ``seed + 1`` and ``seed + 2``."""
    from calogan.cli import main as calogan

    paths = workdir / "reference.h5", workdir / "candidate.h5"
    for path, s in zip(paths, (seed + 1, seed + 2)):
        rc = calogan(
            ["simulate", "--mode", "active", "-n", str(n), "--energy", "1:100", "--seed", str(s), "-o", str(path), "--force", "--quiet"]
        )
        if rc != 0:
            raise SystemExit(f"bench_evaluate: calogan simulate failed with status {rc}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="showers per sample (default 20000)")
    parser.add_argument("--inputs", choices=("simulate", "resample"), default="simulate", help="how to make the samples (default simulate)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Geant4 file to resample (--inputs resample)")
    parser.add_argument("--reference", type=Path, help="existing reference file: time only the evaluation (needs --candidate)")
    parser.add_argument("--candidate", type=Path, help="existing candidate file")
    parser.add_argument("--fast", action="store_true", help="time calogan evaluate --fast (no classifiers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=ROOT / "runs" / "bench_evaluate.json", help="where to write the result")
    parser.add_argument("--keep", type=Path, default=None, help="keep the report in this directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if (args.reference is None) != (args.candidate is None):
        parser.error("--reference and --candidate go together")
    for path in (args.reference, args.candidate):
        if path is not None and not path.exists():
            parser.error(f"{path}: not found")
    if args.reference is None and args.inputs == "resample" and not args.source.exists():
        print(f"bench_evaluate: {args.source} not found (the shared Geant4 data); pass --source", file=sys.stderr)
        return 2

    import torch

    from calogan.cli import main as calogan

    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.reference is not None:
            ref, cand = args.reference, args.candidate
            inputs = f"{ref} against {cand}"
        elif args.inputs == "simulate":
            ref, cand = simulate_inputs(args.n, tmp, args.seed)
            inputs = f"calogan simulate --mode active -n {args.n} --energy 1:100, seeds {args.seed + 1} and {args.seed + 2}"
        else:
            ref, cand = make_inputs(args.source, args.n, tmp, args.seed)
            inputs = f"{args.source.name} resampled with replacement; candidate cells x 1.03"
        t_inputs = time.perf_counter() - t0
        out = args.keep or tmp / "report"
        cmd = ["evaluate", str(ref), str(cand), "--labels", "reference,candidate", "-o", str(out), "--force", "--quiet"]
        if args.fast:
            cmd.append("--fast")
        load_before = os.getloadavg()
        t0, c0 = time.perf_counter(), time.process_time()
        rc = calogan(cmd)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        if rc != 0:
            print(f"bench_evaluate: calogan evaluate failed with status {rc}", file=sys.stderr)
            return rc
        metrics = json.loads((out / "metrics.json").read_text())
    stages = metrics["timings_s"]
    summary = metrics["candidates"][0]["summary"]
    result = {
        "benchmark": "calogan evaluate",
        "n_reference": metrics["reference"]["n_showers"],
        "n_candidate": metrics["candidates"][0]["n_showers"],
        "inputs": inputs,
        "fast": args.fast,
        "stages_s": stages,
        "total_s": round(total, 2),
        "cpu_s": round(cpu, 2),
        "target_s": TARGET_S,
        "meets_target": total <= TARGET_S,
        "input_preparation_s": round(t_inputs, 2),
        "classifier_epochs": {
            level: None
            if summary[f"classifier_{level}"] is None
            else [summary[f"classifier_{level}"]["epochs"], metrics["floor"][f"classifier_{level}"]["epochs"]]
            for level in ("low", "high")
        },
        "machine": {
            "cpus": os.cpu_count(),
            "threads_classifier": metrics["settings"]["classifier"]["low"]["threads"],
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    width = max(len(k) for k in stages) + 2
    n_ref, n_cand = result["n_reference"], result["n_candidate"]
    threads = f"classifier threads {result['machine']['threads_classifier']}, torch threads {torch.get_num_threads()}"
    print(f"calogan evaluate: {n_ref} vs {n_cand} showers{' (--fast)' if args.fast else ''}, {os.cpu_count()} CPUs, {threads}")
    print(f"inputs: {inputs}")
    print(f"{'stage':<{width}} {'seconds':>8}")
    for stage, seconds in stages.items():
        print(f"{stage:<{width}} {seconds:>8.1f}")
    print(f"{'total (command)':<{width}} {total:>8.1f}   target {TARGET_S:.0f} s: {'met' if total <= TARGET_S else 'NOT met'}")
    print(f"{'CPU time (process)':<{width}} {cpu:>8.1f}")
    print(f"load average before / after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} (other work on the machine inflates timings)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.json, json.dumps(result, indent=1) + "\n", force=True)  # a benchmark's JSON is rewritten by each run
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
