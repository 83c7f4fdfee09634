"""Trained generators behind the fast-simulation interface: torch (a checkpoint) and onnxruntime (an export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from calogan.checkpoint import load_checkpoint
from calogan.data import CONDITION_KEYS, Conditions, particle_code, particle_name
from calogan.errors import ConfigError
from calogan.fastsim.interface import AXIS_TOLERANCE_RAD, CENTRE_TOLERANCE_MM, DEFAULT_TRACK, ShowerSimulator
from calogan.fastsim.noise import latent_noise
from calogan.fastsim.onnx_format import read_metadata
from calogan.geometry import Geometry
from calogan.runtime import default_threads, resolve_device, resolve_threads

__all__ = ["CPU_TILE_ROWS", "PRECISIONS", "GeneratorBackend", "OnnxBackend", "TorchBackend", "load_backend"]

PRECISIONS = ("fp32", "bf16", "fp16")
# Showers per generator call on a CPU. A batch of 8192 showers carries ~16 MB of (B, 504)
# activations through the last layers, beyond the caches. In tiles of 1024, batch 8192 of the
# wgan_eplus generator ran 10-20 % faster per shower with 2 threads on the idle 2-core machine
# (torch 0.0069 -> 0.0057 ms, onnxruntime 0.0061 -> 0.0053 ms), 2x in torch with 1 thread under load.
CPU_TILE_ROWS = 1024


class GeneratorBackend(ShowerSimulator):
    """A trained generator behind the interface: ``cells(conditions, noise)`` plus its description.

    ``conditions`` is the model's ConditionSpec, ``latent_dim`` the noise width, ``attrs``
    what the model says about itself (``convention``, ``particle``, ``family``, ``step``,
    ``source``). It covers its training ranges: the energies and the conditions it is
    trained on within their ranges, and for conditions it is not trained on only the
    default beam (centre of the front face, along z).

    ``tile_rows``: on a CPU, ``generate`` runs a large batch as consecutive tiles of this
    many showers (default ``CPU_TILE_ROWS``; None: one call), so that the activations stay
    in cache; a GPU takes the whole batch at once. The showers do not depend on it beyond
    float rounding: each shower keeps its own noise.
    """

    tile_rows: int | None = None

    def __init__(self, geometry: Geometry, conditions, latent_dim: int, attrs: dict, seed: int = 0) -> None:
        super().__init__(seed)
        self.geometry = geometry
        self.conditions = conditions
        self.latent_dim = int(latent_dim)
        self.attrs = dict(attrs)
        self.convention = self.attrs.get("convention")
        self.family = self.attrs.get("family", "")

    @property
    def particles(self) -> tuple[int, ...]:
        """PDG codes the model knows (empty when its training data named no particle)."""
        known = tuple(p for p in self.conditions.particles if p != 0)
        if not known and self.attrs.get("particle"):
            try:
                known = (particle_code(self.attrs["particle"]),)
            except ValueError:
                known = ()
        return known

    def cells(self, conditions: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """(B, n_cond) float32 physical conditions and (B, latent_dim) noise -> (B, n_cells) float32 MeV."""
        raise NotImplementedError

    def generate(self, conditions: np.ndarray, seed: int, start: int = 0) -> np.ndarray:
        """Cells (B, n_cells) float32 MeV for conditions (B, n_cond), with the noise of showers
        start .. start + B - 1 of ``seed``, in tiles of ``tile_rows`` showers."""
        n, tile = conditions.shape[0], self.tile_rows
        if tile is None or n <= tile:
            return self.cells(conditions, latent_noise(seed, start, n, self.latent_dim))
        out = np.empty((n, self.geometry.n_cells), np.float32)
        for i in range(0, n, tile):
            m = min(tile, n - i)
            out[i : i + m] = self.cells(conditions[i : i + m], latent_noise(seed, start + i, m, self.latent_dim))
        return out

    def condition_matrix(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray]) -> np.ndarray:
        """(B, n_cond) float32 condition input of the model for these showers."""
        keys = self.conditions.keys[1:]
        return self.conditions.tensor(Conditions(e, pdg, {k: tracks[k] for k in keys})).numpy()

    def covers_tracks(self, tracks: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) bool: the impact points and directions the model is trained for."""
        ok = np.ones(len(tracks["x0"]), bool)
        spec = self.conditions
        for key in CONDITION_KEYS:
            v = tracks[key]
            if key in spec.keys:
                lo, hi = spec.ranges[spec.keys.index(key)]
                slack = 1e-6 * max(hi - lo, 1.0)
                ok &= (v >= lo - slack) & (v <= hi + slack)
            elif key == "phi":
                continue  # meaningless along z; theta decides
            else:
                ok &= np.abs(v - DEFAULT_TRACK[key]) <= (AXIS_TOLERANCE_RAD if key == "theta" else CENTRE_TOLERANCE_MM)
        return ok

    def covers(self, pdg, e, tracks) -> np.ndarray:
        lo, hi = self.conditions.ranges[0]
        ok = (e >= lo * (1 - 1e-9)) & (e <= hi * (1 + 1e-9)) & self.covers_tracks(tracks)
        known = self.particles
        return ok & np.isin(pdg, known) if known else np.zeros_like(ok)

    def describe(self) -> str:
        lo, hi = self.conditions.ranges[0]
        names = ", ".join(particle_name(p) for p in self.particles) or "an unnamed particle"
        extra = (
            f", {', '.join(self.conditions.keys[1:])} in their training ranges"
            if len(self.conditions.keys) > 1
            else ", centred beam along z"
        )
        return f"{self.name} ({self.family} model {self.attrs.get('source', '')}: {names}, {lo:g}-{hi:g} GeV{extra})"

    def _produce(self, pdg, e, tracks, seed) -> np.ndarray:
        return self.generate(self.condition_matrix(pdg, e, tracks), seed)


class TorchBackend(GeneratorBackend):
    """A GANModel run by torch: inference mode, optional autocast and ``torch.compile``.

    ``device`` ``cpu`` or ``cuda[:i]`` (the model is moved there); ``precision`` ``fp32``,
    ``bf16`` or ``fp16`` runs the generator under autocast (for GPUs; CPUs without bf16
    hardware run it slower than fp32) and the transform's inverse in fp32; ``compile`` runs
    the generator and inverse through ``torch.compile`` (the first call of each batch size
    compiles). Thread count: ``torch.set_num_threads``, set by the caller.
    """

    name = "torch"

    def __init__(
        self, model, *, device: str | None = None, precision: str = "fp32", compile: bool = False, attrs: dict | None = None, seed: int = 0
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        attrs = {"family": model.family, **(attrs or {})}
        super().__init__(model.geometry, model.conditions, model.config.latent_dim, attrs, seed)
        self.device = torch.device(resolve_device(device) if device is not None else model.device)
        self.model = model.to(self.device)
        self.precision = precision
        self.compiled = bool(compile)
        self._dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self._forward = torch.compile(self._graph) if compile else self._graph
        self.tile_rows = CPU_TILE_ROWS if self.device.type == "cpu" else None
        if compile:
            self.name = "torch-compiled"

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "cpu", precision: str = "fp32", compile: bool = False, seed: int = 0
    ) -> TorchBackend:
        ckpt = load_checkpoint(path, device=resolve_device(device))
        attrs = {k: v for k, v in ckpt.data_attrs.items() if k in ("convention", "particle")}
        attrs.update(family=ckpt.family, step=ckpt.step, source=str(path))
        return cls(ckpt.model, device=device, precision=precision, compile=compile, attrs=attrs, seed=seed)

    def _graph(self, cond, z):
        return self.model.sample_cells(cond, z, autocast=self._dtype)  # (B, n_cells) MeV, in fp32

    def cells(self, conditions: np.ndarray, noise: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            c = torch.from_numpy(np.ascontiguousarray(conditions, dtype=np.float32)).to(self.device)
            z = torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32)).to(self.device)
            return self._forward(c, z).cpu().numpy()


class OnnxBackend(GeneratorBackend):
    """An exported ONNX file (``calogan export``) run by onnxruntime.

    ``threads``: onnxruntime's intra-op threads (default: ``$CALOGAN_THREADS``, else ``default_threads()``);
    ``device`` ``cpu`` or ``cuda[:i]`` (needs onnxruntime's CUDAExecutionProvider).
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, device: str = "cpu", seed: int = 0) -> None:
        import onnxruntime as ort  # an optional dependency (pip install 'calogan[onnx]')

        meta = read_metadata(path)
        attrs = {k: v for k, v in meta.attrs.items() if k in ("convention", "particle", "step", "parity")}
        attrs.update(family=meta.family, source=str(path))
        super().__init__(meta.geometry, meta.conditions, meta.latent_dim, attrs, seed)
        self.path = Path(path)
        self.threads = resolve_threads(threads, default=default_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if device == "cpu":
            providers = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    f"device {device!r}: this onnxruntime has no CUDAExecutionProvider ({', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
                )
            index = int(device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            raise ConfigError(f"device must be cpu or cuda[:N] for onnxruntime, got {device!r}")
        self.device = device
        self.tile_rows = CPU_TILE_ROWS if device == "cpu" else None
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)

    def cells(self, conditions: np.ndarray, noise: np.ndarray) -> np.ndarray:
        feed = {"conditions": np.ascontiguousarray(conditions, dtype=np.float32), "noise": np.ascontiguousarray(noise, dtype=np.float32)}
        return self.session.run(["cells"], feed)[0]


def load_backend(
    path: str | Path,
    *,
    backend: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    threads: int | None = None,
    seed: int = 0,
) -> GeneratorBackend:
    """A generator backend for a model file: ``.onnx`` runs on onnxruntime, anything else is a checkpoint for torch.

    ``backend`` (``torch`` or ``onnxruntime``) may be given to insist on one; it must fit the file.
    """
    path = Path(path)
    is_onnx = path.suffix.lower() == ".onnx"
    backend = backend or ("onnxruntime" if is_onnx else "torch")
    if backend == "torch":
        if is_onnx:
            raise ConfigError(f"backend torch needs a checkpoint (.pt); {path} is an ONNX file: use backend onnxruntime")
        return TorchBackend.from_checkpoint(path, device=device, precision=precision, compile=compile, seed=seed)
    if backend == "onnxruntime":
        if not is_onnx:
            raise ConfigError(f"backend onnxruntime needs an exported .onnx file (calogan export); {path} is not one")
        if precision != "fp32" or compile:
            raise ConfigError("precision and compile are torch options; the onnxruntime backend runs the exported fp32 graph")
        return OnnxBackend(path, threads=threads, device=resolve_device(device) if device == "auto" else device, seed=seed)
    raise ConfigError(f"backend must be torch or onnxruntime, got {backend!r}")
