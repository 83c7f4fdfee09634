"""Benchmark of data-parallel training: showers/s of one process against torchrun with several.

    python benchmarks/bench_distributed.py --data train.h5 --config configs/wgan_eplus.yaml
    python benchmarks/bench_distributed.py --data train.h5 --config configs/calogan_eplus_total_small.yaml --steps 40

Each variant (processes x threads per process, default 1x1, 1x2 and 2x1) trains the config for
``--steps`` steps with the same global batch; the variants run interleaved, ``--repeats``
times, so that a shared machine's load falls on all of them alike. A run's rate is the median
of its logged showers/s after the first log interval (start-up and first steps left out); the
table gives the median over repeats with the spread, and the load average seen. Writes JSON
(default runs/bench_distributed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from calogan import __version__
from calogan.runtime import write_text
from calogan.training import TrainConfig


def run_once(config: str, data: str, procs: int, threads: int, steps: int, overrides: list[str]) -> dict:
    """One training run; its showers/s (median of the logged intervals after the first) and wall time."""
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        out = Path(tmp) / "run"
        log_every = max(1, steps // 8)
        args = ["train", "--config", config, "--data", data, "-o", str(out), "--threads", str(threads), "--quiet", "--device", "cpu"]
        args += ["--set", f"max_steps={steps}", "--set", "val_fraction=0", "--set", f"log_every={log_every}"]
        args += ["--set", f"checkpoint_every={steps}", "--set", "max_minutes=null"]
        for o in overrides:
            args += ["--set", o]
        launcher = [sys.executable, "-m", "calogan"]
        if procs > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m", "calogan"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run([*launcher, *args], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"{' '.join(launcher + args)} failed:\n{proc.stderr[-3000:]}")
        rates = [r["showers_per_s"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "showers_per_s" in r]
        return {"showers_per_s": statistics.median(rates[1:] or rates), "wall_s": round(wall, 1), "load_avg_1min": round(load, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="training shower file")
    p.add_argument("--config", default="configs/wgan_eplus.yaml")
    p.add_argument("--steps", type=int, default=200, help="training steps per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--variants", default="1x1,1x2,2x1", help="PROCESSESxTHREADS, comma-separated")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    p.add_argument("-o", "--output", default="runs/bench_distributed.json")
    args = p.parse_args()

    config = TrainConfig.from_yaml(args.config)
    variants = [tuple(int(x) for x in v.split("x")) for v in args.variants.split(",")]
    runs: dict[str, list[dict]] = {f"{p_}x{t}": [] for p_, t in variants}
    for r in range(args.repeats):
        for procs, threads in variants:
            res = run_once(args.config, args.data, procs, threads, args.steps, args.overrides)
            runs[f"{procs}x{threads}"].append(res)
            print(
                f"repeat {r + 1}: {procs} process(es) x {threads} thread(s): {res['showers_per_s']:.0f} showers/s, load {res['load_avg_1min']}",
                flush=True,
            )

    batch = config.batch_size
    for o in args.overrides:
        if o.startswith("batch_size="):
            batch = int(o.split("=", 1)[1])
    print(f"\n{args.config}, global batch {batch}, d_steps {config.d_steps}, {args.steps} steps per run, CPU, {os.cpu_count()} cores")
    print("| processes x threads | showers/s (median) | min - max | wall s (median) | load avg seen |")
    print("|---|---:|---:|---:|---|")
    rows = []
    for key, results in runs.items():
        rates = [x["showers_per_s"] for x in results]
        row = {
            "variant": key,
            "showers_per_s_median": round(statistics.median(rates), 1),
            "showers_per_s_min": round(min(rates), 1),
            "showers_per_s_max": round(max(rates), 1),
            "wall_s_median": statistics.median(x["wall_s"] for x in results),
            "load_avg": [x["load_avg_1min"] for x in results],
            "runs": results,
        }
        rows.append(row)
        print(
            f"| {key} | {row['showers_per_s_median']:.0f} | {row['showers_per_s_min']:.0f} - {row['showers_per_s_max']:.0f} | "
            f"{row['wall_s_median']:.0f} | {', '.join(f'{v:.1f}' for v in row['load_avg'])} |"
        )
    payload = {
        "config": args.config,
        "data": args.data,
        "global_batch": batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "overrides": args.overrides,
        "results": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__, "calogan": __version__},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.output, json.dumps(payload, indent=1) + "\n", force=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
