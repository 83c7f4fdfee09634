"""``calogan export --model CKPT -o model.onnx``: one self-contained ONNX file, checked against torch."""

from __future__ import annotations

import argparse
import math

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained generator to one self-contained ONNX file",
        description="Export a checkpoint's generator, with its preprocessing inverse, to one ONNX file (no external-data side "
        "file) with a dynamic batch axis. Inputs: 'conditions' (B, n_cond) float32 in physical units (e_inc GeV, then x0, y0 mm, "
        "theta, phi rad, then the particle one-hot, as the model was trained) and 'noise' (B, latent_dim) float32 N(0, 1); "
        "output: 'cells' (B, n_cells) float32 MeV. The geometry, conditions, family and calogan version are in the model's "
        "metadata_props. Before the file is written, onnxruntime and torch run the same inputs; above tolerance the export "
        "fails and writes nothing.",
    )
    p.add_argument("--model", required=True, help="checkpoint, e.g. runs/wgan_eplus/best.pt")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--rtol", type=float, default=1e-4, help="parity tolerance relative to each cell (default 1e-4)")
    p.add_argument("--atol", type=float, default=None, help="parity tolerance in MeV (default: 1e-5 of the largest cell)")
    p.add_argument("--check-showers", type=int, default=256, help="showers in the parity check (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the parity check's conditions and noise (default 0)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's exporter's)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from calogan.checkpoint import load_checkpoint
    from calogan.errors import ConfigError
    from calogan.export import condition_columns, export_onnx
    from calogan.runtime import check_output

    if not args.output.endswith(".onnx"):
        raise ConfigError(f"-o {args.output}: the output must end in .onnx (calogan generate picks its backend by the suffix)")
    if not 0 <= args.rtol < math.inf or (args.atol is not None and not 0 <= args.atol < math.inf):
        raise ConfigError(f"--rtol and --atol must be finite numbers >= 0, got {args.rtol} and {args.atol}")
    check_output(args.output, force=args.force, inputs=[args.model], error=ConfigError)  # before the model is read
    ckpt = load_checkpoint(args.model)
    attrs = {k: v for k, v in ckpt.data_attrs.items() if k in ("convention", "particle") and isinstance(v, str)}
    attrs.update(step=ckpt.step, source=str(args.model))
    report = export_onnx(
        ckpt.model,
        args.output,
        attrs=attrs,
        force=args.force,
        rtol=args.rtol,
        atol=args.atol,
        n_check=args.check_showers,
        seed=args.seed,
        opset=args.opset,
        inputs=[args.model],
    )
    spec, model = ckpt.model.conditions, ckpt.model
    print(
        f"exported the {ckpt.family} generator (step {ckpt.step}) to {report.path}: {report.size_bytes / 1e6:.2f} MB, one file, {report.seconds:.1f} s"
    )
    print(
        f"  inputs : conditions (B, {spec.n_cond}) float32 [{', '.join(condition_columns(spec))}]; noise (B, {model.config.latent_dim}) float32 N(0, 1)"
    )
    print(f"  output : cells (B, {model.geometry.n_cells}) float32 MeV, geometry {model.geometry.name!r}")
    print(f"  parity : onnxruntime vs torch, {report.parity.describe()}: ok")
    return 0
