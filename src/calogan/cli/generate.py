"""``calogan generate``: showers from a trained checkpoint into a CaloGAN-format file, in chunks."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate showers from a trained model",
        description="Generate showers from a checkpoint into a CaloGAN-format HDF5 file, streamed in chunks. "
        "Either sample conditions (--particle, --energy, -n) or take every shower's conditions from a reference file "
        "(--energy-from), in its order.",
    )
    p.add_argument("--model", required=True, help="checkpoint (e.g. runs/wgan_eplus/best.pt) or exported model.onnx (calogan export)")
    p.add_argument("--particle", help="particle to generate (default: the model's only particle)")
    p.add_argument(
        "--energy", default=None, help="incident energy in GeV: A:B uniform, A:B:log, v1,v2,... or v (default: the training range)"
    )
    p.add_argument("-n", type=int, default=None, help="number of showers")
    p.add_argument("--energy-from", metavar="REF.h5", help="generate at exactly the conditions of the showers of REF.h5, in order")
    p.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="KEY=RULE",
        help="rule for another condition of the model (x0, y0 mm; theta, phi rad), e.g. x0=-50:50 (default: its training range)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=int, default=10000, help="showers per generator call (default 10000)")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        help="torch runs a checkpoint, onnxruntime an exported .onnx file (default: onnxruntime for .onnx, else torch)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto (CUDA when present) (default cpu)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of torch or onnxruntime (default: $CALOGAN_THREADS, else the cores this process may use)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="torch backend: run the generator under bf16/fp16 autocast, meant for GPUs (default fp32)",
    )
    p.add_argument("--compile", action="store_true", help="torch backend: run the generator through torch.compile (pays at large n)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", required=True, help="output HDF5 file")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import itertools
    import time

    import torch
    from tqdm import tqdm

    from calogan.cli import flag_names
    from calogan.errors import ConfigError
    from calogan.fastsim import load_backend
    from calogan.generate import conditions_from_file, generate_to_file, sample_conditions
    from calogan.io import inspect
    from calogan.runtime import default_threads, resolve_threads

    if args.energy_from:
        if args.n is not None or args.energy is not None or args.condition:
            raise ConfigError("--energy-from takes the conditions from the file: drop -n, --energy and --condition")
    elif args.n is None:
        raise ConfigError("pass -n N (with --energy) or --energy-from REF.h5")
    extra = {}
    for item in args.condition:
        key, sep, rule = item.partition("=")
        if not sep:
            raise ConfigError(f"--condition expects KEY=RULE, got {item!r}")
        extra[key.strip()] = rule
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    threads = resolve_threads(args.threads, default=default_threads(), name="--threads")
    torch.set_num_threads(threads)
    model = load_backend(
        args.model, backend=args.backend, device=args.device, precision=args.precision, compile=args.compile, threads=threads
    )
    # the library names its parameters; say the flags they came from
    with flag_names(n="-n", energy="--energy", extra="--condition", particle="--particle"):
        spec = model.conditions
        if args.energy_from:
            conditions = conditions_from_file(args.energy_from, spec, chunk_size=args.batch_size)
        else:
            energy = args.energy or f"{spec.ranges[0][0]:g}:{spec.ranges[0][1]:g}"
            conditions = sample_conditions(
                spec, args.n, particle=args.particle, energy=energy, extra=extra, seed=args.seed, chunk_size=args.batch_size
            )
        attrs = {k: v for k, v in model.attrs.items() if k in ("convention",)}
        attrs.update({"generator": f"calogan {model.family}", "model": str(args.model), "seed": args.seed, "backend": model.name})
        if model.attrs.get("step") is not None:
            attrs["model_step"] = model.attrs["step"]
        total = inspect(args.energy_from).n if args.energy_from else args.n
        # The first chunk is drawn before the bar opens, so that bad options fail on a clean line.
        conditions = iter(conditions)
        conditions = itertools.chain([next(conditions)], conditions)
        t0 = time.perf_counter()
        # disable=None: a bar only on a terminal, never in logs or pipes
        with tqdm(total=total, unit=" showers", disable=True if args.no_progress else None, dynamic_ncols=True, leave=False) as bar:
            n = generate_to_file(
                args.output, model, conditions, seed=args.seed, batch_size=args.batch_size, attrs=attrs, force=args.force, progress=bar
            )
    dt = time.perf_counter() - t0
    where = f"{model.name} on {args.device}, {threads} threads" + (f", {args.precision}" if args.precision != "fp32" else "")
    print(f"wrote {n} showers to {args.output} in {dt:.1f} s ({1000 * dt / n:.4f} ms per shower, writing included; {where})")
    return 0
