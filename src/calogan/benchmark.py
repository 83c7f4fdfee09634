"""Speed of every generation backend at several batch sizes, against Geant4's CPU time: a table and JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from calogan import __version__
from calogan.checkpoint import load_checkpoint
from calogan.errors import ConfigError
from calogan.export import check_conditions, export_onnx, read_metadata
from calogan.fastsim import OnnxBackend, ParametrizedBackend, TorchBackend, latent_noise
from calogan.io import ShowerFileError, read_extra
from calogan.runtime import default_threads, resolve_device, resolve_threads, write_text

__all__ = [
    "BACKENDS",
    "HEADER",
    "NOMINAL_CEILING_GFLOPS",
    "BenchmarkConfig",
    "format_row",
    "format_table",
    "generator_flops",
    "matmul_ceiling",
    "run_benchmark",
    "time_calls",
    "write_json",
]

BACKENDS = ("torch", "torch-compiled", "onnxruntime", "parametrized")
# The fp32 matmul throughput the project quotes for its 2-core build machine; the benchmark
# measures its own machine's as well and reports both.
NOMINAL_CEILING_GFLOPS = 130.0


@dataclass(frozen=True)
class BenchmarkConfig:
    """What ``run_benchmark`` times and how.

    Every (device, backend, batch size) row makes ``warmup`` untimed calls (compilation
    happens there), then timed calls until ``min_time`` seconds and ``min_repeats`` calls
    have passed; the row reports the median call. A row whose estimated cost (from the
    previous batch size) exceeds ``max_row_seconds`` is skipped and says so. ``devices``
    defaults to the CPU plus CUDA when torch sees it; ``threads`` (torch and onnxruntime)
    to the cores this process may use. ``ceiling_size`` is the matrix size of the fp32
    matmul that measures the machine's ceiling.
    """

    batch_sizes: tuple[int, ...] = (1, 16, 128, 1024, 8192)
    backends: tuple[str, ...] = BACKENDS
    devices: tuple[str, ...] | None = None
    threads: int | None = None
    warmup: int = 2
    min_time: float = 1.0
    min_repeats: int = 5
    max_row_seconds: float = 120.0
    ceiling_size: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be positive integers, got {list(self.batch_sizes)}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise ConfigError(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.warmup < 1 or self.min_repeats < 1 or self.min_time < 0 or self.max_row_seconds <= 0:
            raise ConfigError("warmup and min_repeats must be >= 1, min_time >= 0 and max_row_seconds > 0")


def time_calls(fn, *, warmup: int, min_time: float, min_repeats: int, max_repeats: int = 10_000) -> dict:
    """Run ``fn`` ``warmup`` times, then until ``min_time`` s and ``min_repeats`` calls; seconds per call.

    Returns ``{"median", "min", "first", "repeats"}`` (``first``: the first warm-up call, where
    compilation and caches are paid).
    """
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "first": first, "repeats": len(times)}


def matmul_ceiling(threads: int, size: int = 2048, device: str = "cpu") -> float:
    """Measured fp32 matmul throughput (GFLOP/s) of a ``size`` x ``size`` product on ``device``."""
    torch.set_num_threads(threads)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)

    def mm():
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize(device)

    t = time_calls(mm, warmup=2, min_time=0.5, min_repeats=5)
    return 2.0 * size**3 / t["median"] / 1e9


def generator_flops(model, batch: int = 64) -> float:
    """Matmul and convolution FLOPs (2 per multiply-add) of one shower through the generator.

    Counted by torch's FlopCounterMode on a forward pass of ``batch`` showers; elementwise
    operations (activations, the inverse transform) are not counted.
    """
    cond = torch.from_numpy(check_conditions(model.conditions, batch)).to(model.device)
    z = torch.from_numpy(latent_noise(0, 0, batch, model.config.latent_dim)).to(model.device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(cond, z)
    return counter.get_total_flops() / batch


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run_benchmark(
    model_path: str | Path,
    *,
    onnx_path: str | Path | None = None,
    reference: str | Path | None = None,
    config: BenchmarkConfig = BenchmarkConfig(),
    log=None,
) -> dict:
    """Time every backend of ``config`` on a checkpoint; returns the result as a JSON-ready dict.

    The timed call turns conditions (B, n_cond) in host memory into cells (B, n_cells)
    float32 MeV in host memory: noise drawn (``latent_noise``), generator, inverse transform,
    copies to and from the device. Conditions are spread over the model's training ranges.
    ``onnx_path`` defaults to an export made on the spot (with its parity check). The
    parametrized simulator runs at the model's particle, energy range and convention.
    ``reference``: a Geant4 file with ``g4_cpu_seconds`` (one core per shower); speed-ups
    are its mean over our time per shower. ``log`` is called with each finished row.
    """
    previous = torch.get_num_threads()
    try:
        return _benchmark(model_path, onnx_path, reference, config, log)
    finally:
        torch.set_num_threads(previous)  # the caller's setting, whatever the run did


def _benchmark(model_path, onnx_path, reference, config: BenchmarkConfig, log) -> dict:
    import onnxruntime as ort  # an optional dependency (pip install 'calogan[onnx]')

    threads = resolve_threads(config.threads, default=default_threads())
    devices = config.devices or (("cpu", "cuda") if torch.cuda.is_available() else ("cpu",))
    devices = tuple(resolve_device(d) for d in devices)
    torch.set_num_threads(threads)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    ckpt = load_checkpoint(model_path)
    model, spec = ckpt.model, ckpt.model.conditions
    convention = ckpt.data_attrs.get("convention")
    result: dict = {
        "calogan_version": __version__,
        "machine": {
            **_machine(),
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "threads": threads,
            "devices": list(devices),
            "cuda_available": torch.cuda.is_available(),
        },
        "model": {
            "path": str(model_path),
            "family": ckpt.family,
            "step": ckpt.step,
            "geometry": model.geometry.name,
            "n_cells": model.geometry.n_cells,
            "latent_dim": int(model.config.latent_dim),
            "generator_parameters": int(sum(p.numel() for p in model.generator_parameters())),
            "flops_per_shower": generator_flops(model),
            "convention": convention,
        },
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "timed": "conditions in host memory -> noise, generator, inverse transform -> cells float32 MeV in host memory; median call",
    }
    if reference is not None:
        try:
            g4 = read_extra(reference, "g4_cpu_seconds").astype(np.float64).reshape(-1)
        except ShowerFileError as err:
            raise ConfigError(
                f"{err} (the speed reference must be a Geant4 file with the CPU seconds of each shower, g4_cpu_seconds)"
            ) from None
        if not g4.size or not np.all(np.isfinite(g4)) or np.any(g4 <= 0):
            raise ConfigError(f"{reference}: g4_cpu_seconds must hold positive, finite times")
        result["reference"] = {
            "path": str(reference),
            "n": int(g4.size),
            "g4_seconds_per_shower": float(g4.mean()),
            "note": "Geant4 on one core",
        }
    result["ceiling"] = {"nominal_gflops": NOMINAL_CEILING_GFLOPS, "measured_gflops": {"cpu": matmul_ceiling(threads, config.ceiling_size)}}
    for d in devices:
        if d != "cpu":
            result["ceiling"]["measured_gflops"][d] = matmul_ceiling(threads, config.ceiling_size, d)

    with tempfile.TemporaryDirectory(prefix="calogan-bench-") as tmp:
        if "onnxruntime" in config.backends:
            if onnx_path is None:
                onnx_path = Path(tmp) / "model.onnx"
                report = export_onnx(model, onnx_path, attrs={"step": ckpt.step, "source": str(model_path)})
                result["onnx"] = {"path": "(exported for this run)", "parity": report.parity.to_dict()}
            else:
                meta = read_metadata(onnx_path)
                if meta.geometry != model.geometry or meta.conditions != spec or meta.latent_dim != model.config.latent_dim:
                    raise ConfigError(f"{onnx_path} is not an export of {model_path}: geometry, conditions or latent size differ")
                result["onnx"] = {"path": str(onnx_path), "parity": meta.attrs.get("parity")}
        rows = []
        for device in devices:
            for name in config.backends:
                if name == "parametrized" and device != "cpu":
                    continue  # numpy: CPU only
                rows += _rows(name, device, threads, config, model, spec, onnx_path, convention, result, log)
    result["rows"] = rows
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["machine"]["load_average_start"] = list(load_start) if load_start else None
    return result


def _rows(name, device, threads, config, model, spec, onnx_path, convention, result, log) -> list[dict]:
    rows: list[dict] = []
    base = {"backend": name, "device": device, "threads": threads}
    try:
        if name == "torch":
            backend = TorchBackend(model, device=device)
        elif name == "torch-compiled":
            backend = TorchBackend(model, device=device, compile=True)
        elif name == "onnxruntime":
            backend = OnnxBackend(onnx_path, threads=threads, device=device)
        else:
            particles = [p for p in spec.particles if p != 0][:1] or ["e+"]
            backend = ParametrizedBackend(model.geometry, mode=convention or "total", energy=spec.ranges[0], particles=particles)
            base["backend"] = f"parametrized-{backend.convention}"
    except ConfigError as err:
        return [{**base, "batch_size": b, "status": f"unavailable: {err}"} for b in config.batch_sizes]
    per_shower = None
    g4 = result.get("reference", {}).get("g4_seconds_per_shower")
    flops = result["model"]["flops_per_shower"]
    ceiling = result["ceiling"]["measured_gflops"].get(device)
    for b in config.batch_sizes:
        row = {**base, "batch_size": b}
        estimate = None if per_shower is None else per_shower * b * (config.warmup + config.min_repeats)
        if estimate is not None and estimate > config.max_row_seconds:
            row["status"] = (
                f"skipped: about {estimate:.0f} s at {1000 * per_shower:.3g} ms per shower (max_row_seconds {config.max_row_seconds:g})"
            )
            rows.append(row)
            if log:
                log(row)
            continue
        cond = check_conditions(spec, b, config.seed)
        if name.startswith("parametrized"):
            e = cond[:, 0].astype(np.float64)
            particle = backend.particles[0]

            def fn(e=e, particle=particle):
                backend.simulate(particle, e, seed=config.seed)

        else:

            def fn(cond=cond):
                backend.generate(cond, config.seed)

        try:
            t = time_calls(fn, warmup=config.warmup, min_time=config.min_time, min_repeats=config.min_repeats)
        except Exception as err:  # a backend failing at one size (e.g. compile, out of memory) must not end the run
            row["status"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            rows.append(row)
            if log:
                log(row)
            continue
        per_shower = t["median"] / b
        row.update(
            status="ok",
            median_s=t["median"],
            first_call_s=t["first"],
            repeats=t["repeats"],
            ms_per_shower=1000 * per_shower,
            showers_per_s=1.0 / per_shower,
        )
        if g4:
            row["speedup_vs_geant4"] = g4 / per_shower
        if not name.startswith("parametrized"):
            row["gflops"] = flops / per_shower / 1e9
            if ceiling:
                row["ceiling_fraction"] = row["gflops"] / ceiling
            if device == "cpu":
                row["nominal_ceiling_fraction"] = row["gflops"] / NOMINAL_CEILING_GFLOPS
        rows.append(row)
        if log:
            log(row)
    return rows


def format_row(row: dict) -> str:
    """One line of the table."""
    head = f"{row['backend']:<20} {row['device']:<7} {row['threads']:>7} {row['batch_size']:>7}"
    if row.get("status") != "ok":
        return f"{head}   {row.get('status')}"
    speed = f"{row['speedup_vs_geant4']:>11,.0f}" if "speedup_vs_geant4" in row else f"{'-':>11}"
    gflops = f"{row['gflops']:>9.2f}" if "gflops" in row else f"{'-':>9}"
    frac = f"{100 * row['ceiling_fraction']:>9.1f}%" if "ceiling_fraction" in row else f"{'-':>10}"
    nominal = f"{100 * row['nominal_ceiling_fraction']:>9.1f}%" if "nominal_ceiling_fraction" in row else f"{'-':>10}"
    return f"{head} {row['ms_per_shower']:>11.4g} {row['showers_per_s']:>12,.0f} {speed} {gflops} {frac} {nominal}"


HEADER = (
    f"{'backend':<20} {'device':<7} {'threads':>7} {'batch':>7} {'ms/shower':>11} {'showers/s':>12} {'x Geant4':>11} "
    f"{'GFLOP/s':>9} {'% ceiling':>10} {'% nominal':>10}"
)


def format_table(result: dict) -> str:
    """The CaloGAN-style table with the context needed to read it."""
    m, c = result["model"], result["ceiling"]
    lines = [
        f"model: {m['family']} (step {m['step']}) {m['path']}; {m['generator_parameters']:,} generator parameters; "
        f"{m['flops_per_shower'] / 1e6:.3f} MFLOP per shower (matmul/conv)",
        f"machine: {result['machine']['cpu']}, {result['machine']['threads']} threads; fp32 matmul ceiling measured "
        + ", ".join(f"{d}: {g:.1f} GFLOP/s" for d, g in c["measured_gflops"].items())
        + f" (nominal {c['nominal_gflops']:g})",
    ]
    if "reference" in result:
        r = result["reference"]
        lines.append(
            f"Geant4: {1000 * r['g4_seconds_per_shower']:.1f} ms per shower on one core (mean g4_cpu_seconds of {r['n']} showers in {r['path']})"
        )
    if "onnx" in result and result["onnx"].get("parity"):
        p = result["onnx"]["parity"]
        lines.append(f"onnx: {result['onnx']['path']}; parity with torch: max abs {p['max_abs_mev']:.3g} MeV, max rel {p['max_rel']:.3g}")
    lines += ["", HEADER, "-" * len(HEADER)]
    lines += [format_row(r) for r in result["rows"]]
    if not any(str(d).startswith("cuda") for d in result["machine"]["devices"]):
        why = "not requested (--devices)" if result["machine"].get("cuda_available") else "torch sees no CUDA device on this machine"
        lines.append(f"GPU (cuda): not measured, {why}")
    lines.append(
        f"timed: {result['timed']}; % ceiling against the measured fp32 matmul ceiling of the device, "
        f"% nominal against the nominal {c['nominal_gflops']:g} GFLOP/s of the CPU"
    )
    return "\n".join(lines)


def write_json(result: dict, path: str | Path, *, force: bool = False) -> Path:
    """Write the result atomically; an existing file is refused unless ``force``."""
    return write_text(path, json.dumps(result, indent=2) + "\n", force=force, error=ConfigError)
