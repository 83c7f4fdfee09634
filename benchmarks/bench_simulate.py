"""Benchmark of the parametrized simulator: showers/s on one core, and memory while writing 10^6 showers.

    python benchmarks/bench_simulate.py                # full run: rates, then 10^6 showers written
    python benchmarks/bench_simulate.py --write 100000 # a shorter memory run

Prints a table and writes JSON (default runs/bench_simulate.json). Threads are pinned to one
before numpy is imported (OMP/MKL/OPENBLAS_NUM_THREADS=1), so the rates are one core's.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from calogan import __version__  # noqa: E402
from calogan.io import ShowerWriter, read_extra  # noqa: E402
from calogan.runtime import write_text  # noqa: E402
from calogan.simulate import BLOCK, GENERATOR, Distribution, iter_simulate, simulate  # noqa: E402

G4_EPLUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "geant4" / "g4_eplus_total.h5"
TARGET_RATE = 5000.0  # showers/s, 50 GeV e+, calogan geometry, one core


def _rss_mib() -> float:
    """Resident memory of this process now, MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def rate(particle: str, energy: float, mode: str, geometry: str, n: int, repeats: int) -> dict:
    """Showers/s for n showers of one energy, simulated in one call: the median of ``repeats``
    calls (and the best, which a machine whose speed drifts shows too)."""
    e = np.full(n, energy)
    simulate(geometry, particle, e[:BLOCK], seed=0, mode=mode)  # warm up imports and caches
    times, cpu = [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        simulate(geometry, particle, e, seed=r + 1, mode=mode)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    median, best = float(np.median(times)), min(times)
    return {
        "particle": particle,
        "energy_gev": energy,
        "mode": mode,
        "geometry": geometry,
        "batch": n,
        "showers_per_s": n / median,
        "ms_per_shower": 1000.0 * median / n,
        "best_showers_per_s": n / best,
        "times_s": times,
        # CPU seconds of this process: the rate a busy machine would give on a free core
        "cpu_showers_per_s": n / float(np.median(cpu)),
        "cpu_times_s": cpu,
    }


def memory_run(n: int, chunk_size: int, path: Path) -> dict:
    """Stream n showers (e+, 1-100 GeV, total) to ``path`` as ``calogan simulate`` does, noting RSS."""
    stream = iter_simulate("calogan", "e+", n, Distribution("uniform", (1.0, 100.0)), seed=0, chunk_size=chunk_size)
    trace = [(0, _rss_mib())]
    t0 = time.perf_counter()
    written = 0
    with ShowerWriter(path, stream_geometry(), attrs={"particle": "e+", "convention": "total", "generator": GENERATOR}, force=True) as w:
        for chunk in stream:
            w.write(chunk)
            written += len(chunk)
            trace.append((written, _rss_mib()))
    elapsed = time.perf_counter() - t0
    rss = np.array([r for _, r in trace[1:]])
    tenth = max(1, len(rss) // 10)
    return {
        "showers": written,
        "chunk_size": chunk_size,
        "seconds": elapsed,
        "showers_per_s": written / elapsed,
        "file_mib": path.stat().st_size / 2**20,
        "rss_mib_after_first_10pct": float(rss[:tenth].max()),
        "rss_mib_last_10pct": float(rss[-tenth:].max()),
        "rss_mib_max_during_write": float(rss.max()),
        "peak_rss_mib_process": _peak_rss_mib(),
        "trace": [[int(k), round(float(r), 1)] for k, r in trace[:: max(1, len(trace) // 50)]],
    }


def stream_geometry():
    from calogan.geometry import preset

    return preset("calogan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=5120, help="showers per timed call (default 5120)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median counts (default 5)")
    parser.add_argument("--write", type=int, default=1_000_000, help="showers written in the memory run (default 10^6; 0 skips it)")
    parser.add_argument("--chunk-size", type=int, default=10_240, help="showers per chunk in the memory run (default 10240)")
    parser.add_argument("--output", default="runs/bench_simulate.json", help="JSON results (default runs/bench_simulate.json)")
    args = parser.parse_args()

    cases = [
        ("e+", 50.0, "total", "calogan"),
        ("e+", 50.0, "active", "calogan"),
        ("e+", 10.0, "total", "calogan"),
        ("e+", 100.0, "total", "calogan"),
        ("gamma", 50.0, "total", "calogan"),
        ("pi+", 50.0, "total", "calogan"),
        ("e+", 50.0, "total", "atlas-barrel"),
        ("e+", 50.0, "total", "voxel-25"),
    ]
    load_before = os.getloadavg()[0]
    results = [rate(*c, n=args.batch, repeats=args.repeats) for c in cases]
    load_after = os.getloadavg()[0]
    g4 = None
    if G4_EPLUS.exists():
        cpu = read_extra(G4_EPLUS, "g4_cpu_seconds").reshape(-1)
        g4 = {"file": G4_EPLUS.name, "mean_cpu_s_per_shower_1_100_gev": float(cpu.mean())}
    print(
        f"calogan {__version__} parametrized simulator, one thread, batch {args.batch} showers ({platform.processor() or platform.machine()})"
    )
    print(f"load average (1 min) {load_before:.2f} before and {load_after:.2f} after the rates, {os.cpu_count()} CPUs")
    print(f"medians of {args.repeats} calls; 'best' is the fastest call")
    print(f"{'particle':<9}{'E [GeV]':>8}  {'mode':<7}{'geometry':<14}{'showers/s':>11}{'best':>8}{'ms/shower':>11}{'CPU showers/s':>15}")
    for r in results:
        print(
            f"{r['particle']:<9}{r['energy_gev']:>8g}  {r['mode']:<7}{r['geometry']:<14}{r['showers_per_s']:>11.0f}{r['best_showers_per_s']:>8.0f}"
            f"{r['ms_per_shower']:>11.3f}{r['cpu_showers_per_s']:>15.0f}"
        )
    head = results[0]
    verdict = "meets" if head["showers_per_s"] >= TARGET_RATE else "MISSES"
    print(f"target: >= {TARGET_RATE:.0f} showers/s for 50 GeV e+ (calogan, total): {head['showers_per_s']:.0f} {verdict} it")
    if g4:
        print(f"Geant4 (same kind of core): {g4['mean_cpu_s_per_shower_1_100_gev']:.2f} s per e+ shower averaged over 1-100 GeV")
    memory = None
    if args.write > 0:
        with tempfile.TemporaryDirectory(dir=Path(args.output).parent if Path(args.output).parent.is_dir() else None) as tmp:
            memory = memory_run(args.write, args.chunk_size, Path(tmp) / "bench.h5")
        print(
            f"memory: wrote {memory['showers']} showers ({memory['file_mib']:.0f} MiB) in {memory['seconds']:.0f} s"
            f" ({memory['showers_per_s']:.0f} showers/s incl. compression); RSS {memory['rss_mib_after_first_10pct']:.0f} MiB"
            f" over the first 10 %, {memory['rss_mib_last_10pct']:.0f} MiB over the last 10 %, max {memory['rss_mib_max_during_write']:.0f} MiB"
        )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "calogan_version": __version__,
        "threads": 1,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "target_showers_per_s": TARGET_RATE,
        "load_average_1min": [load_before, load_after],
        "rates": results,
        "geant4": g4,
        "memory": memory,
    }
    write_text(out, json.dumps(payload, indent=2) + "\n", force=True)  # a benchmark's JSON is rewritten by each run
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
