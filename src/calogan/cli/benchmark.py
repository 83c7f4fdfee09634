"""``calogan benchmark --model CKPT``: time every generation backend; print the table, write JSON."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="time every generation backend against Geant4 and print the speed table",
        description="Time torch (eager and compiled), onnxruntime and the parametrized simulator at several batch sizes on the "
        "available devices, with warm-up calls and medians. Prints ms per shower, showers per second, the speed-up over the "
        "Geant4 CPU time of a reference file (its g4_cpu_seconds), the generator's FLOPs and the fraction of the machine's "
        "measured fp32 matmul ceiling reached. On a shared machine the figures are noisy: run it alone.",
    )
    p.add_argument("--model", required=True, help="checkpoint, e.g. runs/wgan_eplus/best.pt (speed does not depend on its training)")
    p.add_argument("--onnx", help="its export (calogan export); default: exported on the spot, parity-checked")
    p.add_argument("--reference", help="Geant4 file with g4_cpu_seconds, e.g. g4_eplus_active.h5")
    p.add_argument("--batch-sizes", default="1,16,128,1024,8192", help="comma-separated batch sizes (default 1,16,128,1024,8192)")
    p.add_argument("--backends", default="torch,torch-compiled,onnxruntime,parametrized", help="comma-separated subset of the backends")
    p.add_argument("--devices", default=None, help="comma-separated devices, e.g. cpu,cuda (default: cpu, plus cuda when present)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch and onnxruntime (default: $CALOGAN_THREADS, else the cores this process may use)",
    )
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per row, at least 5 calls (default 1)")
    p.add_argument("--max-row-seconds", type=float, default=120.0, help="skip a row estimated to take longer (default 120)")
    p.add_argument("-o", "--output", help="write the results as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing JSON output")
    p.set_defaults(func=run)


def _list(text: str, option: str, kind=str) -> tuple:
    from calogan.errors import ConfigError

    try:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} is empty")
    return values


def run(args: argparse.Namespace) -> int:
    from calogan.benchmark import HEADER, BenchmarkConfig, format_row, format_table, run_benchmark, write_json
    from calogan.errors import ConfigError
    from calogan.runtime import check_output

    config = BenchmarkConfig(
        batch_sizes=_list(args.batch_sizes, "--batch-sizes", int),
        backends=_list(args.backends, "--backends"),
        devices=_list(args.devices, "--devices") if args.devices else None,
        threads=args.threads,
        min_time=args.min_time,
        max_row_seconds=args.max_row_seconds,
    )
    if args.output:  # refuse a bad output now, not after minutes of timing
        check_output(args.output, force=args.force, inputs=[args.model, *([args.onnx] if args.onnx else [])], error=ConfigError)
    print(HEADER, flush=True)
    result = run_benchmark(
        args.model, onnx_path=args.onnx, reference=args.reference, config=config, log=lambda row: print(format_row(row), flush=True)
    )
    print()
    print(format_table(result))
    if args.output:
        write_json(result, args.output, force=args.force)
        print(f"wrote {args.output}")
    return 0
