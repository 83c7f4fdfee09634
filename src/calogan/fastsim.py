"""The generic fast-simulation interface: (particle, energy, position, direction) -> cells, routed to a backend.

A framework hands over a batch of particles entering the calorimeter and gets their showers
back (seed 004: one interface in front of several fast-simulation options, ML-based or not).
Backends: a checkpoint run by torch (``TorchBackend``), an exported ONNX file run by
onnxruntime (``OnnxBackend``) and the parametrized simulator (``ParametrizedBackend``). A
``Router`` sends each particle to the first backend whose particle and energy range (and
position/direction coverage) fit, with the parametrized simulator as the fallback outside
the models' ranges; ``load_router`` builds one from a small YAML table.

>>> from calogan.fastsim import ParametrizedBackend
>>> sim = ParametrizedBackend("calogan", mode="active", energy=(1.0, 100.0))
>>> sim.simulate("e+", [10.0, 50.0], position=[[0.0, 0.0], [10.0, -5.0]], direction=[[0.0, 0.0], [0.1, 1.0]], seed=1).shape
(2, 504)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calogan.config import config_from_dict, read_config
from calogan.data import CONDITION_KEYS, particle_code, particle_name
from calogan.errors import ConfigError
from calogan.geometry import Geometry, load_geometry
from calogan.runtime import default_threads, resolve_device, resolve_threads

__all__ = [
    "BACKENDS",
    "CPU_TILE_ROWS",
    "PRECISIONS",
    "GeneratorBackend",
    "OnnxBackend",
    "ParametrizedBackend",
    "Route",
    "RouteConfig",
    "Router",
    "RouterConfig",
    "ShowerSimulator",
    "TorchBackend",
    "latent_noise",
    "load_backend",
    "load_router",
    "track_conditions",
]

BACKENDS = ("torch", "onnxruntime", "parametrized")
PRECISIONS = ("fp32", "bf16", "fp16")
# A model that is not conditioned on the impact point or the direction knows only the beam
# it was trained on: the centre of the front face (x0 = y0 = 0), along z (theta = 0).
CENTRE_TOLERANCE_MM = 1e-3
AXIS_TOLERANCE_RAD = 1e-6
_UNIT_TOLERANCE = 1e-4  # |direction| may differ from 1 by this (float32 unit vectors)
_NOISE_DOMAIN = 0x63616C6F67616E  # "calogan": second word of the Philox key, apart from other uses of a seed
_DEFAULTS = {"x0": 0.0, "y0": 0.0, "theta": 0.0, "phi": 0.0}
# Showers per generator call on a CPU. A batch of 8192 showers carries ~16 MB of (B, 504)
# activations through the last layers, beyond the caches. In tiles of 1024, batch 8192 of the
# wgan_eplus generator ran 10-20 % faster per shower with 2 threads on the idle 2-core machine
# (torch 0.0069 -> 0.0057 ms, onnxruntime 0.0061 -> 0.0053 ms), 2x in torch with 1 thread under load.
CPU_TILE_ROWS = 1024


# -- randomness -------------------------------------------------------------------------------


def latent_noise(seed: int, start: int, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 N(0, 1) latent vectors of showers ``start`` .. ``start + n - 1`` of stream ``seed``.

    Counter-based: shower i's vector is a function of (seed, i) only (Philox keyed by the
    seed, positioned at i's counter; Box-Muller on float32 uniforms), so any batching of a
    run, and any backend fed from it, sees the same noise. Uniforms carry 24 bits, so
    |z| <= 5.8 (a 1e-8 tail is cut).

    >>> a = latent_noise(7, 0, 5, 3)
    >>> bool((np.concatenate([latent_noise(7, 0, 2, 3), latent_noise(7, 2, 3, 3)]) == a).all())
    True
    """
    for name, v in (("seed", seed), ("start", start), ("n", n), ("dim", dim)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"latent_noise: {name} must be an integer, got {v!r}")
    if not 0 <= seed < 2**64:
        raise ConfigError(f"seed must be in [0, 2^64), got {seed}")
    if start < 0 or n < 0 or dim < 1:
        raise ConfigError(f"latent_noise needs start >= 0, n >= 0, dim >= 1, got {start}, {n}, {dim}")
    pairs = (dim + 1) // 2
    per = 8 * -(-2 * pairs // 8)  # uniforms per shower: whole Philox blocks (4 x 64 bits = 8 float32)
    counter = int(start) * (per // 8)
    bits = np.random.Philox(
        key=np.array([int(seed), _NOISE_DOMAIN], dtype=np.uint64),
        counter=np.array([counter & (2**64 - 1), counter >> 64, 0, 0], dtype=np.uint64),
    )
    u = np.random.Generator(bits).random((int(n), per), dtype=np.float32)
    radius = np.sqrt(np.float32(-2.0) * np.log1p(-u[:, :pairs]))  # (n, pairs); u < 1 keeps it finite
    angle = np.float32(2.0 * np.pi) * u[:, pairs : 2 * pairs]
    z = np.empty((int(n), 2 * pairs), np.float32)
    np.multiply(radius, np.cos(angle), out=z[:, :pairs])
    np.multiply(radius, np.sin(angle), out=z[:, pairs:])
    return z[:, :dim]


def _derive_seed(seed: int, *words: int) -> int:
    """A seed for a sub-stream (a route, a particle) of ``seed``."""
    return int(np.random.SeedSequence([int(seed), *[int(w) & (2**32 - 1) for w in words]]).generate_state(2, np.uint32).view(np.uint64)[0])


# -- inputs -----------------------------------------------------------------------------------


def _particles_and_energies(particle, energy) -> tuple[np.ndarray, np.ndarray]:
    """(B,) int32 PDG codes and (B,) float64 GeV from the user's particle and energy."""
    e = np.asarray(energy, dtype=np.float64) if not isinstance(energy, np.ndarray) else energy.astype(np.float64)
    if e.ndim != 1 or e.shape[0] == 0:
        raise ConfigError(f"energy must be a 1-D array of B >= 1 incident energies in GeV, got shape {e.shape}")
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        bad = e[~(np.isfinite(e) & (e > 0))][0]
        raise ConfigError(f"energies must be finite and > 0 GeV, got {bad}")
    b = e.shape[0]
    if isinstance(particle, (str, int, np.integer)):
        names = [particle]
    else:
        names = list(np.asarray(particle, dtype=object).reshape(-1)) if np.ndim(particle) == 1 else None
        if names is None or len(names) != b:
            raise ConfigError(f"particle must be one name or PDG code, or B = {b} of them (one per energy), got shape {np.shape(particle)}")
    codes = {}
    for p in set(names):
        try:
            codes[p] = particle_code(p)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    pdg = np.array([codes[p] for p in names], dtype=np.int32)
    return np.broadcast_to(pdg, (b,)).copy(), e


def track_conditions(n: int, position=None, direction=None) -> dict[str, np.ndarray]:
    """Impact point and direction of n particles as the conditions x0, y0 (mm), theta, phi (rad).

    Axes are the geometry's: x along the layers' rows, y along their columns, z the depth,
    origin at the centre of the front face (z = 0).

    - ``position``: None (the centre of the front face), (n, 2) (x, y) mm on the front face,
      or (n, 3) (x, y, z) mm with z <= 0, a point of the straight track before the
      calorimeter, carried along ``direction`` to the front face.
    - ``direction``: None (along +z), (n, 2) (theta, phi) rad with theta in [0, pi/2) from
      the z axis and phi from x towards y, or (n, 3) unit vectors (dx, dy, dz), dz > 0.

    Returns (n,) float64 arrays keyed x0, y0, theta, phi (phi in [0, 2 pi)).

    >>> c = track_conditions(1, [[0.0, 0.0, -10.0]], [[0.6, 0.0, 0.8]])
    >>> round(float(c["x0"][0]), 6), round(float(c["theta"][0]), 6)
    (7.5, 0.643501)
    """

    def matrix(value, name):
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a (B, 2) or (B, 3) array of numbers with B = {n}, got ragged or non-numeric rows") from None
        if a.ndim != 2 or a.shape[0] != n or a.shape[1] not in (2, 3):
            raise ConfigError(f"{name} must have shape (B, 2) or (B, 3) with B = {n} (one row per energy), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ConfigError(f"{name} must be finite")
        return a

    if direction is None:
        theta, phi = np.zeros(n), np.zeros(n)
        d = np.tile([0.0, 0.0, 1.0], (n, 1))
    else:
        a = matrix(direction, "direction")
        if a.shape[1] == 3:
            norm = np.linalg.norm(a, axis=1)
            bad = np.abs(norm - 1.0) > _UNIT_TOLERANCE
            if bad.any():
                raise ConfigError(f"direction rows must be unit vectors; row {int(np.argmax(bad))} has length {norm[bad][0]:.6g}")
            d = a / norm[:, None]
            if np.any(d[:, 2] <= 0):
                raise ConfigError(f"direction must point into the calorimeter (dz > 0); row {int(np.argmax(d[:, 2] <= 0))} does not")
            theta = np.arccos(np.clip(d[:, 2], -1.0, 1.0))
            phi = np.mod(np.arctan2(d[:, 1], d[:, 0]), 2 * np.pi)
        else:
            theta, phi = a[:, 0], np.mod(a[:, 1], 2 * np.pi)
            if np.any((theta < 0) | (theta >= np.pi / 2)):
                raise ConfigError(
                    f"direction theta must be in [0, pi/2) rad (into the calorimeter), got {theta[(theta < 0) | (theta >= np.pi / 2)][0]:.6g}"
                )
            d = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    if position is None:
        x0, y0 = np.zeros(n), np.zeros(n)
    else:
        p = matrix(position, "position")
        x0, y0 = p[:, 0].copy(), p[:, 1].copy()
        if p.shape[1] == 3:
            z = p[:, 2]
            if np.any(z > CENTRE_TOLERANCE_MM):
                raise ConfigError(
                    f"position z must be <= 0 (at or before the front face z = 0), got {z[z > CENTRE_TOLERANCE_MM][0]:.6g} mm"
                )
            x0 -= z * d[:, 0] / d[:, 2]
            y0 -= z * d[:, 1] / d[:, 2]
    return {"x0": x0, "y0": y0, "theta": np.asarray(theta, np.float64), "phi": np.asarray(phi, np.float64)}


def _where(pdg: int, e: float, tracks: dict[str, np.ndarray], i: int) -> str:
    """'e+ at 150 GeV' plus the track when it is not the default beam."""
    text = f"{particle_name(int(pdg))} at {e:g} GeV"
    if any(abs(tracks[k][i]) > 0 for k in ("x0", "y0", "theta")):
        text += (
            f" entering at ({tracks['x0'][i]:g}, {tracks['y0'][i]:g}) mm, theta {tracks['theta'][i]:.4g}, phi {tracks['phi'][i]:.4g} rad"
        )
    return text


# -- the interface ----------------------------------------------------------------------------


class ShowerSimulator:
    """The fast-simulation interface: ``simulate(particle, energy, position, direction) -> cells``.

    - ``particle``: a name (``"e+"``) or PDG code for all showers, or B of them;
    - ``energy``: (B,) incident energies in GeV;
    - ``position``, ``direction``: see ``track_conditions`` (default: centre, along z);
    - ``seed``: the showers of a call are a function of its inputs and ``seed``; without one,
      each call takes the next seed of the simulator's own sequence (``seed`` at construction),
      so successive calls differ and a sequence of calls is reproducible.

    Returns (B, n_cells) float32 cell energies in MeV, flat in ``geometry`` order, in the
    order of the inputs. ``convention`` says what the cells hold (``"total"``: all energy
    deposited in the cell's volume; ``"active"``: the active medium's share), or None when
    unknown. Bad particles, energies outside every range and bad shapes raise ``ConfigError``.
    """

    geometry: Geometry
    convention: str | None = None
    name: str = "simulator"

    def __init__(self, seed: int = 0) -> None:
        self._seeds = np.random.default_rng(seed)

    def simulate(self, particle, energy, position=None, direction=None, *, seed: int | None = None) -> np.ndarray:
        pdg, e = _particles_and_energies(particle, energy)
        tracks = track_conditions(len(e), position, direction)
        if seed is None:
            seed = int(self._seeds.integers(2**63))
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2^63), got {seed!r}")
        return self._run(pdg, e, tracks, int(seed))

    def covers(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) bool: which showers this backend can simulate (particle, energy and track)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line: the backend and what it covers."""
        return self.name

    def _run(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray], seed: int) -> np.ndarray:
        """Checked showers: raise ``ConfigError`` for any shower outside ``covers``."""
        ok = self.covers(pdg, e, tracks)
        if not ok.all():
            i = int(np.argmin(ok))
            raise ConfigError(f"{self.describe()} cannot simulate {_where(pdg[i], e[i], tracks, i)}")
        return self._produce(pdg, e, tracks, seed)

    def _produce(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray], seed: int) -> np.ndarray:
        raise NotImplementedError


# -- generator backends -----------------------------------------------------------------------


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
        from calogan.generate import Conditions

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
                ok &= np.abs(v - _DEFAULTS[key]) <= (AXIS_TOLERANCE_RAD if key == "theta" else CENTRE_TOLERANCE_MM)
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
        import torch

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
        from calogan.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path, device=resolve_device(device))
        attrs = {k: v for k, v in ckpt.data_attrs.items() if k in ("convention", "particle")}
        attrs.update(family=ckpt.family, step=ckpt.step, source=str(path))
        return cls(ckpt.model, device=device, precision=precision, compile=compile, attrs=attrs, seed=seed)

    def _graph(self, cond, z):
        import torch

        if self._dtype is None:
            x = self.model(cond, z)
        else:
            with torch.autocast(device_type=self.device.type, dtype=self._dtype):
                x = self.model(cond, z)
        return self.model.transform.inverse(x.float(), cond[:, 0])  # (B, n_cells) MeV, in fp32

    def cells(self, conditions: np.ndarray, noise: np.ndarray) -> np.ndarray:
        import torch

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
        import onnxruntime as ort

        from calogan.export import read_metadata

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


# -- the parametrized simulator ---------------------------------------------------------------


class ParametrizedBackend(ShowerSimulator):
    """The built-in parametrized simulator (``calogan.simulate``) behind the interface.

    ``mode`` is the convention of its cells (``total`` or ``active``), ``energy`` (lo, hi)
    GeV the range it is trusted in, ``particles`` those it may simulate (default: all the
    simulator models). Any impact point and direction entering the front face are covered.
    """

    name = "parametrized"

    def __init__(self, geometry, *, mode: str, energy: tuple[float, float], particles: Sequence | None = None, seed: int = 0) -> None:
        from calogan.simulate import MODES, SUPPORTED_PARTICLES

        super().__init__(seed)
        self.geometry = load_geometry(geometry)
        if mode not in MODES:
            raise ConfigError(f"the parametrized simulator's mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.convention = mode
        lo, hi = (float(v) for v in energy)
        if not 0 < lo < hi:
            raise ConfigError(f"energy range must be [lo, hi] GeV with 0 < lo < hi, got [{lo:g}, {hi:g}]")
        self.energy = (lo, hi)
        supported = {particle_code(p) for p in SUPPORTED_PARTICLES}
        codes = tuple(sorted(supported)) if particles is None else tuple(_codes(particles, "particles"))
        unknown = [particle_name(c) for c in codes if c not in supported]
        if unknown:
            raise ConfigError(f"the parametrized simulator does not model {', '.join(unknown)}; it models {', '.join(SUPPORTED_PARTICLES)}")
        self.particles = codes

    def covers(self, pdg, e, tracks) -> np.ndarray:
        lo, hi = self.energy
        return np.isin(pdg, self.particles) & (e >= lo) & (e <= hi)

    def describe(self) -> str:
        lo, hi = self.energy
        return f"parametrized simulator ({self.convention}: {', '.join(particle_name(p) for p in self.particles)}, {lo:g}-{hi:g} GeV)"

    def _produce(self, pdg, e, tracks, seed) -> np.ndarray:
        from calogan.simulate import simulate

        out = np.empty((len(e), self.geometry.n_cells), np.float32)
        for code in np.unique(pdg):
            idx = np.flatnonzero(pdg == code)
            data = simulate(
                self.geometry,
                particle_name(int(code)),
                e[idx],
                seed=_derive_seed(seed, int(code)),
                mode=self.convention,
                **{k: tracks[k][idx] for k in CONDITION_KEYS},
            )
            out[idx] = data.cells
        return out


def _codes(particles, where: str) -> list[int]:
    if isinstance(particles, (str, int)):
        particles = [particles]
    codes = []
    for p in particles:
        try:
            codes.append(particle_code(p))
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from None
    if not codes:
        raise ConfigError(f"{where}: name at least one particle")
    return codes


# -- the router -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One row of the routing table: ``particles`` (PDG codes) in ``energy`` (lo, hi) GeV go to ``backend``."""

    name: str
    particles: tuple[int, ...]
    energy: tuple[float, float]
    backend: ShowerSimulator

    def matches(self, pdg: np.ndarray, e: np.ndarray, tracks: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) bool: the route's particles and energies, and tracks its backend covers."""
        lo, hi = self.energy
        ok = np.isin(pdg, self.particles) & (e >= lo) & (e <= hi)
        if isinstance(self.backend, GeneratorBackend):
            ok &= self.backend.covers_tracks(tracks)
        return ok

    def describe(self) -> str:
        lo, hi = self.energy
        return f"{self.name}: {', '.join(particle_name(p) for p in self.particles)} {lo:g}-{hi:g} GeV -> {self.backend.describe()}"


class Router(ShowerSimulator):
    """Sends each shower to the first route that matches it, else to the fallback.

    A route matches a shower when its particles include the shower's, its energy range holds
    the shower's energy and its backend covers the impact point and direction (a model not
    trained on them covers only the default beam). The fallback (usually the parametrized
    simulator) takes what no route takes, within its own particles and energy range; any
    shower left raises ``ConfigError`` naming it and the table. All backends must share one
    geometry, and those that know their convention must agree.
    """

    name = "router"

    def __init__(self, routes: Sequence[Route], fallback: Route | None = None, *, seed: int = 0, convention: str | None = None) -> None:
        super().__init__(seed)
        self.routes = tuple(routes)
        self.fallback = fallback
        table = [*self.routes, *([fallback] if fallback is not None else [])]
        if not table:
            raise ConfigError("a router needs at least one route or a fallback")
        names = [r.name for r in table]
        if len(set(names)) != len(names):
            raise ConfigError(f"route names must be unique, got {names}")
        self.geometry = table[0].backend.geometry
        for r in table[1:]:
            if r.backend.geometry != self.geometry:
                raise ConfigError(
                    f"route {r.name} simulates geometry {r.backend.geometry.name!r}, route {table[0].name} {self.geometry.name!r}: one router, one geometry"
                )
        known = {r.name: r.backend.convention for r in table if r.backend.convention}
        if convention is not None:
            known = {"the router": convention, **known}
        if len(set(known.values())) > 1:
            raise ConfigError(
                f"backends disagree on the cell convention (total or active): {', '.join(f'{k}: {v}' for k, v in known.items())}"
            )
        self.convention = next(iter(known.values()), None)
        for r in table:
            lo, hi = r.energy
            if not 0 < lo < hi:
                raise ConfigError(f"route {r.name}: energy range must be [lo, hi] GeV with 0 < lo < hi, got [{lo:g}, {hi:g}]")

    @property
    def table(self) -> tuple[Route, ...]:
        return (*self.routes, *([self.fallback] if self.fallback is not None else []))

    def describe(self) -> str:
        return "; ".join(r.describe() for r in self.table)

    def assign(self, particle, energy, position=None, direction=None) -> np.ndarray:
        """(B,) route names chosen for these showers (``""`` where none matches)."""
        pdg, e = _particles_and_energies(particle, energy)
        tracks = track_conditions(len(e), position, direction)
        index = self._assign(pdg, e, tracks)
        names = np.array([r.name for r in self.table] + [""], dtype=object)
        return names[index]

    def _assign(self, pdg, e, tracks) -> np.ndarray:
        """(B,) index into ``table`` of each shower's route; len(table) where none matches."""
        table = self.table
        index = np.full(len(e), len(table))
        for i, r in enumerate(table):
            free = index == len(table)
            if not free.any():
                break
            index[free & r.matches(pdg, e, tracks)] = i
        return index

    def covers(self, pdg, e, tracks) -> np.ndarray:
        return self._assign(pdg, e, tracks) < len(self.table)

    def _run(self, pdg, e, tracks, seed) -> np.ndarray:
        table = self.table
        index = self._assign(pdg, e, tracks)
        if (index == len(table)).any():
            i = int(np.argmax(index == len(table)))
            if not any(pdg[i] in r.particles for r in table):
                raise ConfigError(f"particle {particle_name(int(pdg[i]))} is not simulated by any route ({self.describe()})")
            raise ConfigError(f"no route covers {_where(pdg[i], e[i], tracks, i)}: it is outside every range ({self.describe()})")
        out = np.empty((len(e), self.geometry.n_cells), np.float32)
        for i, r in enumerate(table):
            idx = np.flatnonzero(index == i)
            if idx.size:
                sub = {k: v[idx] for k, v in tracks.items()}
                out[idx] = r.backend._produce(pdg[idx], e[idx], sub, _derive_seed(seed, i))
        return out


# -- the YAML table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteConfig:
    """One route of a routing YAML.

    ``backend``: ``torch`` (``model``: a checkpoint), ``onnxruntime`` (``model``: an exported
    .onnx) or ``parametrized`` (``mode``: total or active, default the router's
    ``convention``). ``particles``: names or PDG codes (default: the model's). ``energy``:
    [lo, hi] GeV (default: the model's training range; required for ``parametrized``).
    ``device``, ``threads``, ``precision``, ``compile`` as for ``calogan generate``.
    ``name`` labels the route (default: backend and model file).
    """

    backend: str
    model: str | None = None
    particles: tuple[str, ...] = ()
    energy: tuple[float, float] | None = None
    name: str | None = None
    mode: str | None = None
    device: str = "cpu"
    threads: int | None = None
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "parametrized":
            if self.model is not None:
                raise ConfigError("the parametrized backend takes no model")
            if self.energy is None:
                raise ConfigError("the parametrized backend needs energy: [lo, hi] GeV, the range it is trusted in")
        elif self.model is None:
            raise ConfigError(f"backend {self.backend} needs model: PATH")


@dataclass(frozen=True)
class RouterConfig:
    """A routing YAML: ``routes`` (a list of RouteConfig mappings, tried in order), an optional
    ``fallback`` (one more, usually parametrized), ``geometry`` and ``convention`` to check
    every backend against, and the ``seed`` of the router's own seed sequence."""

    routes: tuple[dict, ...] = ()
    fallback: dict | None = None
    geometry: str | None = None
    convention: str | None = None
    seed: int = 0


def load_router(path: str | Path, *, seed: int | None = None) -> Router:
    """A Router from a routing YAML (see ``RouterConfig``; ``configs/fastsim_eplus.yaml``).

    Model paths are relative to the working directory, as in training configs.
    """
    values = read_config(path, "routing table")
    try:
        config = config_from_dict(RouterConfig, values if values is not None else {}, where="")
        entries = [(f"routes[{i}]", r) for i, r in enumerate(config.routes)] + ([("fallback", config.fallback)] if config.fallback else [])
        parsed = [(where, _route_config(r, where)) for where, r in entries]
        # Models first: a parametrized route takes its geometry and convention from them by default.
        built = {where: _model_route(rc, where) for where, rc in parsed if rc.backend != "parametrized"}
        models = [r.backend for r in built.values()]
        geometry = load_geometry(config.geometry) if config.geometry is not None else (models[0].geometry if models else None)
        for where, route in built.items():
            if route.backend.geometry != geometry:
                raise ConfigError(
                    f"{where}: the model simulates geometry {route.backend.geometry.name!r}, the table names {geometry.name!r}"
                )
        conventions = {b.convention for b in models if b.convention}
        convention = config.convention or (conventions.pop() if len(conventions) == 1 else None)
        for where, rc in parsed:
            if rc.backend == "parametrized":
                built[where] = _parametrized_route(rc, where, geometry, convention)
        routes = [built[where] for where, _ in parsed if where != "fallback"]
        router = Router(routes, built.get("fallback"), seed=config.seed if seed is None else seed, convention=config.convention)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return router


def _route_config(values, where: str) -> RouteConfig:
    try:
        return config_from_dict(RouteConfig, values, where=where)
    except ConfigError as err:
        raise ConfigError(str(err) if where in str(err) else f"{where}: {err}") from None


def _parametrized_route(rc: RouteConfig, where: str, geometry, convention: str | None) -> Route:
    mode = rc.mode or convention
    if mode is None:
        raise ConfigError(f"{where}: the parametrized backend needs mode: total or active (or a model or router convention to follow)")
    if geometry is None:
        raise ConfigError(f"{where}: with no model route, name the geometry (geometry: a preset, .xml or .json)")
    try:
        backend = ParametrizedBackend(geometry, mode=mode, energy=rc.energy, particles=rc.particles or None)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return Route(rc.name or f"parametrized-{mode}", backend.particles, backend.energy, backend)


def _model_route(rc: RouteConfig, where: str) -> Route:
    if rc.mode is not None:
        raise ConfigError(f"{where}: mode is for the parametrized backend; a model's convention comes from its training data")
    if rc.threads is not None and rc.threads < 1:
        raise ConfigError(f"{where}: threads must be >= 1, got {rc.threads}")
    if rc.backend == "torch" and rc.threads is not None:
        import torch

        torch.set_num_threads(rc.threads)
    backend = load_backend(rc.model, backend=rc.backend, device=rc.device, precision=rc.precision, compile=rc.compile, threads=rc.threads)
    particles = tuple(_codes(rc.particles, f"{where}.particles")) if rc.particles else backend.particles
    if not particles:
        raise ConfigError(f"{where}: {rc.model} does not record its particle: name it with particles: [...]")
    if backend.particles:
        foreign = [particle_name(p) for p in particles if p not in backend.particles]
        if foreign:
            raise ConfigError(
                f"{where}: {rc.model} was trained on {', '.join(particle_name(p) for p in backend.particles)}, not {', '.join(foreign)}"
            )
    energy = tuple(float(v) for v in rc.energy) if rc.energy is not None else backend.conditions.ranges[0]
    return Route(rc.name or f"{rc.backend}:{Path(rc.model).name}", tuple(particles), energy, backend)
