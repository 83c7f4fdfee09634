"""ONNX export of a generator: one self-contained file with its metadata, checked against torch."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from calogan import __version__
from calogan.data import particle_name
from calogan.fastsim.noise import latent_noise
from calogan.fastsim.onnx_format import FORMAT, FORMAT_VERSION, INPUTS, METADATA_PREFIX, OUTPUT, ExportError, OnnxMetadata, read_metadata
from calogan.models.base import ConditionSpec
from calogan.runtime import check_output, write_bytes

# FORMAT ... read_metadata describe the file for its readers too and live in calogan.fastsim.onnx_format.
__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "INPUTS",
    "OUTPUT",
    "ExportError",
    "ExportReport",
    "OnnxMetadata",
    "Parity",
    "ShowerGraph",
    "check_conditions",
    "condition_columns",
    "export_onnx",
    "parity",
    "read_metadata",
]

# ONNX files are protocol buffers, which cannot exceed 2 GiB without an external-data side file.
_PROTOBUF_LIMIT = 2**31 - 1
_UNITS = {"e_inc": "GeV", "x0": "mm", "y0": "mm", "theta": "rad", "phi": "rad"}


class ShowerGraph(nn.Module):
    """What the ONNX file computes: a generator followed by its transform's inverse.

    ``forward(conditions, noise)``: physical conditions (B, n_cond) float32 as in
    ``ConditionSpec`` (e_inc GeV first, then x0, y0 mm, theta, phi rad, then the particle
    one-hot) and standard-normal noise (B, latent_dim) -> cells (B, n_cells) float32 MeV.
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.model.sample_cells(conditions, noise)  # (B, n_cells) MeV


def condition_columns(spec: ConditionSpec) -> list[str]:
    """Human-readable names of the columns of the condition input, with units.

    >>> condition_columns(ConditionSpec(("e_inc", "x0"), ((1, 100), (-50, 50)), (-11, 22)))
    ['e_inc [GeV]', 'x0 [mm]', 'particle is e+ (one-hot)', 'particle is gamma (one-hot)']
    """
    cols = [f"{k} [{_UNITS[k]}]" for k in spec.keys]
    if len(spec.particles) > 1:
        cols += [f"particle is {particle_name(p)} (one-hot)" for p in spec.particles]
    return cols


def check_conditions(spec: ConditionSpec, n: int, seed: int = 0) -> np.ndarray:
    """(n, n_cond) float32 conditions spread over the training ranges, to compare backends on.

    Energies are log-uniform over the energy range (every decade gets its share), other keys
    uniform over theirs, particles uniform over the model's particles.
    """
    rng = np.random.default_rng(seed)
    cols = []
    for key, (lo, hi) in zip(spec.keys, spec.ranges):
        if key == "e_inc":
            cols.append(np.exp(rng.uniform(np.log(lo), np.log(hi), n)))
        else:
            cols.append(rng.uniform(lo, hi, n))
    if len(spec.particles) > 1:
        cols += list(np.eye(len(spec.particles))[rng.integers(len(spec.particles), size=n)].T)
    return np.stack(cols, axis=1).astype(np.float32)


@dataclass(frozen=True)
class Parity:
    """Outcome of comparing onnxruntime with torch on the same inputs.

    ``max_abs`` (MeV) is the largest |onnx - torch| over all cells; ``max_rel`` the largest
    |onnx - torch| / |torch| over cells holding at least 0.1 % of the largest cell's energy
    (smaller cells are judged by ``atol`` alone). The check passes when every cell has
    |onnx - torch| <= atol + rtol |torch|.
    """

    n: int
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    ok: bool
    worst: tuple[int, int]

    def describe(self) -> str:
        return (
            f"max abs diff {self.max_abs:.3g} MeV, max rel diff {self.max_rel:.3g} on {self.n} showers "
            f"(tolerance |diff| <= {self.atol:.3g} MeV + {self.rtol:g} |torch|)"
        )

    def to_dict(self) -> dict:
        return {"n": self.n, "max_abs_mev": self.max_abs, "max_rel": self.max_rel, "rtol": self.rtol, "atol_mev": self.atol, "ok": self.ok}


def parity(reference: np.ndarray, candidate: np.ndarray, *, rtol: float = 1e-4, atol: float | None = None) -> Parity:
    """Compare candidate cells (N, n_cells) MeV with reference cells (torch) of the same inputs.

    ``atol`` defaults to 1e-5 of the largest reference cell: float32 rounding in a network
    scales with the values flowing through it, not with the smallest cell.
    """
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        raise ExportError(f"parity check: shapes differ, torch {reference.shape} and onnxruntime {candidate.shape}")
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    if atol is None:
        atol = 1e-5 * scale if scale > 0 else 1e-6
    diff = np.abs(candidate - reference)
    diff = np.where(np.isfinite(candidate), diff, np.inf)  # a NaN must fail, not compare false
    big = np.abs(reference) >= 1e-3 * scale
    rel = np.where(big, diff / np.where(big, np.abs(reference), 1.0), 0.0)
    excess = diff - (atol + rtol * np.abs(reference))
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.size else (0, 0)
    return Parity(
        n=int(reference.shape[0]),
        max_abs=float(diff.max()) if diff.size else 0.0,
        max_rel=float(rel.max()) if rel.size else 0.0,
        rtol=float(rtol),
        atol=float(atol),
        ok=bool((excess <= 0).all()),
        worst=(int(worst[0]), int(worst[1])),
    )


@dataclass(frozen=True)
class ExportReport:
    """What ``export_onnx`` wrote: the file, its size, the parity check and the export time."""

    path: Path
    size_bytes: int
    parity: Parity
    seconds: float
    metadata: dict = field(default_factory=dict)


def _quiet_exporter():
    """Silence torch's exporter chatter (progress lines, optional-package and deprecation notes)."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    stack.callback(logger.setLevel, level)
    devnull = stack.enter_context(open(os.devnull, "w"))
    stack.enter_context(contextlib.redirect_stdout(devnull))
    return stack


def _torch_cells(graph: ShowerGraph, cond: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The torch reference of the parity check: (N, n_cells) float32 MeV."""
    with torch.inference_mode():
        return graph(torch.from_numpy(cond), torch.from_numpy(noise)).numpy()


def export_onnx(
    model,
    path: str | Path,
    *,
    attrs: dict | None = None,
    force: bool = False,
    rtol: float = 1e-4,
    atol: float | None = None,
    n_check: int = 256,
    seed: int = 0,
    opset: int | None = None,
) -> ExportReport:
    """Export ``model`` (a GANModel) to one self-contained ONNX file at ``path``.

    The graph maps ``conditions`` (B, n_cond) float32 in physical units (see
    ``condition_columns``) and ``noise`` (B, latent_dim) float32 N(0, 1) to ``cells``
    (B, n_cells) float32 MeV, with B dynamic. Metadata: geometry JSON, ConditionSpec, family,
    latent size, calogan version, the parity figures and ``attrs`` (convention, particle, ...).

    Before anything is written, onnxruntime runs the graph on ``n_check`` showers (spread
    over the training ranges, noise from ``latent_noise(seed, ...)``) and on a batch of one;
    both are compared with torch (``parity``). Above tolerance ``ExportError`` is raised and
    no file appears; otherwise the file is written atomically (``calogan.runtime``).
    """
    import onnx  # optional dependencies (pip install 'calogan[onnx]')
    import onnxruntime as ort

    t0 = time.perf_counter()
    path = check_output(path, force=force, error=ExportError)
    if n_check < 2:
        raise ExportError(f"the parity check needs at least 2 showers, got {n_check}")
    # Export a CPU copy in eval mode: batch norm uses its running statistics, dropout is off.
    model = copy.deepcopy(model).cpu().eval()
    spec, latent_dim = model.conditions, int(model.config.latent_dim)
    graph = ShowerGraph(model).eval()
    example = (torch.from_numpy(check_conditions(spec, 4, seed)), torch.from_numpy(latent_noise(seed, 0, 4, latent_dim)))
    batch = torch.export.Dim("batch")
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                graph,
                example,
                dynamo=True,
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_shapes=({0: batch}, {0: batch}),
                external_data=False,
                opset_version=opset,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; the user needs the family and the reason
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"torch cannot export the {model.family!r} generator to ONNX: {first}") from err
    proto = program.model_proto
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(
            f"the exported graph keeps {len(external)} weights in external data (e.g. {external[0]}); calogan writes one file"
        )

    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "version": __version__,
        "family": model.family,
        "geometry": model.geometry.to_json(),
        "conditions": json.dumps(spec.to_dict()),
        "condition_columns": json.dumps(condition_columns(spec)),
        "latent_dim": str(latent_dim),
        "inputs": (
            f"conditions (B, {spec.n_cond}) float32: {', '.join(condition_columns(spec))}; "
            f"noise (B, {latent_dim}) float32: independent standard-normal values (calogan draws them with calogan.fastsim.latent_noise)"
        ),
        "outputs": f"cells (B, {model.geometry.n_cells}) float32: cell energies in MeV, flat in the geometry's layer order, row-major per layer",
    }
    for key, value in (attrs or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    _set_metadata(proto, meta)
    proto.doc_string = (
        f"calogan {__version__} {model.family} generator for geometry {model.geometry.name!r}: {meta['inputs']} -> {meta['outputs']}"
    )

    # The parity check runs on the serialised bytes: exactly what will be written.
    data = _serialise(proto)
    cond = check_conditions(spec, n_check, seed)
    noise = latent_noise(seed, 0, n_check, latent_dim)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    reference = _torch_cells(graph, cond, noise)
    got = session.run([OUTPUT], {"conditions": cond, "noise": noise})[0]
    one = session.run([OUTPUT], {"conditions": cond[:1], "noise": noise[:1]})[0]  # a different batch size: the axis is dynamic
    check = parity(np.concatenate([reference, reference[:1]]), np.concatenate([got, one]), rtol=rtol, atol=atol)
    check = Parity(n_check, check.max_abs, check.max_rel, check.rtol, check.atol, check.ok, check.worst)
    if not check.ok:
        i, j = check.worst
        raise ExportError(
            f"parity check failed, no file written: onnxruntime and torch differ by up to {check.max_abs:.3g} MeV "
            f"(worst: shower {i % n_check}, cell {j}), above the tolerance |diff| <= {check.atol:.3g} MeV + {check.rtol:g} |torch|"
        )
    _set_metadata(proto, {"parity": json.dumps(check.to_dict())})
    data = _serialise(proto)
    write_bytes(path, data, force=force, error=ExportError)
    return ExportReport(path, len(data), check, time.perf_counter() - t0, meta)


def _set_metadata(proto, values: dict[str, str]) -> None:
    """Set ``calogan.KEY`` entries of the model's metadata_props, replacing existing ones."""
    keys = {METADATA_PREFIX + k for k in values}
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in keys]
    del proto.metadata_props[:]
    for k, v in kept + [(METADATA_PREFIX + k, v) for k, v in values.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def _serialise(proto) -> bytes:
    size = proto.ByteSize()
    if size > _PROTOBUF_LIMIT:
        raise ExportError(f"the generator is {size / 2**30:.1f} GiB, above the 2 GiB a single-file ONNX model can hold")
    return proto.SerializeToString()
