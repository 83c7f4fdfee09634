"""Read and write shower files (CaloGAN and CaloChallenge HDF5): validated, streamed, atomic."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from calogan import __version__
from calogan.data import CONDITION_KEYS, ShowerData, particle_code, particle_name
from calogan.errors import CaloganError
from calogan.geometry import PRESETS, Geometry, GeometryError, load_geometry, preset
from calogan.runtime import AtomicOutput

__all__ = [
    "FileInfo",
    "NegativeCellsWarning",
    "ShowerFileError",
    "ShowerWriter",
    "copy_subsets",
    "inspect",
    "iter_showers",
    "read_e_inc",
    "read_extra",
    "read_showers",
    "split_file",
    "write_showers",
]

FORMATS = ("calogan", "calochallenge")
DEFAULT_CHUNK = 8192
# A median E_tot / E_inc above this is a units mistake (MeV vs GeV is a factor 1000), not
# physics. It stays far above 1 so that a badly trained generator that overshoots its energy a
# few times is still read, and evaluated as bad, instead of refused.
_MAX_RESPONSE = 20.0


class ShowerFileError(CaloganError, ValueError):
    """A shower file that cannot be used; the message names the file, key and problem."""


class NegativeCellsWarning(UserWarning):
    """Negative cell energies were clipped to zero."""


@dataclass(frozen=True)
class FileInfo:
    """What a shower file holds, found without reading its cells.

    ``particle`` is the file-level particle name (attribute) or, with a per-shower
    ``particle`` key, the names present.
    """

    path: Path
    format: str
    geometry: Geometry
    n: int
    particle: str | None
    conditions: tuple[str, ...]
    e_range: tuple[float, float]  # GeV
    attrs: dict = field(default_factory=dict)
    extra_keys: tuple[str, ...] = ()


def _err(path, key, problem) -> ShowerFileError:
    where = f"{path}" if key is None else f"{path}: key '{key}'"
    return ShowerFileError(f"{where}: {problem}")


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise ShowerFileError(f"{path}: no such file")
    if path.is_dir():
        raise ShowerFileError(f"{path}: is a directory, not a shower file")
    if path.stat().st_size == 0:
        raise ShowerFileError(f"{path}: empty file (0 bytes)")
    if not h5py.is_hdf5(path):
        raise ShowerFileError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ShowerFileError(f"{path}: cannot open HDF5 file ({err})") from None


def _detect_format(f: h5py.File, path) -> str:
    keys = set(f.keys())
    if not keys:
        raise _err(path, None, "empty HDF5 file: it holds no datasets")
    if "showers" in keys or "incident_energies" in keys:
        return "calochallenge"
    if "energy" in keys or any(k.startswith("layer_") for k in keys):
        return "calogan"
    raise _err(
        path, None, f"neither a CaloGAN file (layer_i, energy) nor a CaloChallenge file (showers, incident_energies); keys: {sorted(keys)}"
    )


def _need(f: h5py.File, path, key: str) -> h5py.Dataset:
    if key not in f:
        raise _err(path, key, "missing")
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise _err(path, key, "is a group, expected a dataset")
    if not np.issubdtype(obj.dtype, np.number):
        raise _err(path, key, f"has dtype {obj.dtype}, expected numbers")
    return obj


def _calogan_layer_keys(f: h5py.File) -> list[str]:
    idx = sorted(int(k[6:]) for k in f if k.startswith("layer_") and k[6:].isdigit())
    return [f"layer_{i}" for i in idx]


def _file_geometry(f: h5py.File, path, fmt: str, geometry) -> Geometry:
    """The geometry a file is read in: the one asked for, the file's own, or a matching preset."""
    stored = f.attrs.get("geometry")
    if geometry is not None:
        try:
            return load_geometry(geometry)
        except GeometryError as err:
            raise ShowerFileError(f"{path}: {err}") from None
    if stored is not None:
        try:
            return Geometry.from_json(stored if isinstance(stored, str) else stored.decode())
        except (GeometryError, json.JSONDecodeError) as err:
            raise _err(path, None, f"attribute 'geometry' is not a geometry description ({err})") from None
    if fmt == "calochallenge":
        raise _err(path, None, "a CaloChallenge file does not say its geometry: pass its binning XML (--geometry binning.xml)")
    shapes = [tuple(f[k].shape[1:]) for k in _calogan_layer_keys(f)]
    for name in PRESETS:
        g = preset(name)
        if g.shapes == shapes:
            return g
    raise _err(path, None, f"layer shapes {shapes} match no preset geometry ({', '.join(PRESETS)}): pass --geometry")


def _structure(f: h5py.File, path, geometry) -> tuple[str, Geometry, int]:
    """Check keys, shapes and N of every dataset; return (format, geometry, N)."""
    fmt = _detect_format(f, path)
    geo = _file_geometry(f, path, fmt, geometry)
    if fmt == "calogan":
        energy = _need(f, path, "energy")
        n = energy.shape[0] if energy.ndim else 0
        if energy.ndim not in (1, 2) or (energy.ndim == 2 and energy.shape[1] != 1):
            raise _err(path, "energy", f"has shape {energy.shape}, expected (N, 1)")
        present = _calogan_layer_keys(f)
        expected = [f"layer_{i}" for i in range(geo.n_layers)]
        for key, layer in zip(expected, geo.layers):
            ds = _need(f, path, key)
            if ds.ndim != 3 or tuple(ds.shape[1:]) != layer.shape:
                raise _err(path, key, f"has shape {ds.shape}, geometry {geo.name!r} expects (N, {layer.shape[0]}, {layer.shape[1]})")
            if ds.shape[0] != n:
                raise _err(path, key, f"holds {ds.shape[0]} showers but 'energy' holds {n}")
        extra_layers = sorted(set(present) - set(expected))
        if extra_layers:
            raise _err(path, extra_layers[0], f"geometry {geo.name!r} has only {geo.n_layers} layers")
    else:
        energy = _need(f, path, "incident_energies")
        showers = _need(f, path, "showers")
        n = energy.shape[0] if energy.ndim else 0
        if showers.ndim != 2 or showers.shape[1] != geo.n_cells:
            raise _err(path, "showers", f"has shape {showers.shape}, geometry {geo.name!r} expects (N, {geo.n_cells})")
        if showers.shape[0] != n:
            raise _err(path, "showers", f"holds {showers.shape[0]} showers but 'incident_energies' holds {n}")
    for key in CONDITION_KEYS + ("particle", "overflow"):
        if key in f:
            ds = _need(f, path, key) if key != "particle" else f[key]
            if ds.shape[0] != n:
                raise _err(path, key, f"holds {ds.shape[0]} entries but the file holds {n} showers")
    if n == 0:
        raise _err(path, "energy" if fmt == "calogan" else "incident_energies", "holds 0 showers")
    return fmt, geo, n


def _attr_text(value) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def inspect(path: str | Path, geometry: str | Geometry | None = None) -> FileInfo:
    """Check a file's structure and read its small metadata (not its cells)."""
    path = Path(path)
    with _open(path) as f:
        fmt, geo, n = _structure(f, path, geometry)
        e = _read_energy(f, path, fmt, 0, n)
        if "particle" in f:
            codes = np.unique(_read_particle(f, path, 0, n))
            particle = ",".join(particle_name(int(c)) for c in codes)
        else:
            particle = _attr_text(f.attrs.get("particle"))
        known = {"energy", "overflow", "particle", "showers", "incident_energies", *CONDITION_KEYS}
        known |= {f"layer_{i}" for i in range(geo.n_layers)}
        return FileInfo(
            path=path,
            format=fmt,
            geometry=geo,
            n=n,
            particle=particle,
            conditions=tuple(k for k in CONDITION_KEYS if k in f),
            e_range=(float(e.min()), float(e.max())),
            attrs={k: _attr_text(v) if isinstance(v, (str, bytes)) else v for k, v in f.attrs.items() if k != "geometry"},
            extra_keys=tuple(sorted(set(f.keys()) - known)),
        )


def _read_energy(f, path, fmt, start, stop) -> np.ndarray:
    """Incident energy in GeV, checked finite and positive."""
    key = "energy" if fmt == "calogan" else "incident_energies"
    e = np.asarray(f[key][start:stop], dtype=np.float64).reshape(-1)
    if fmt == "calochallenge":
        e = e / 1000.0  # CaloChallenge stores MeV
    bad = ~np.isfinite(e)
    if bad.any():
        raise _err(path, key, f"{int(bad.sum())} incident energies are NaN or inf (first at shower {start + int(np.argmax(bad))})")
    if (e <= 0).any():
        i = int(np.argmax(e <= 0))
        raise _err(path, key, f"incident energies must be > 0; shower {start + i} has {e[i] * (1000 if fmt == 'calochallenge' else 1):g}")
    return e


def _read_particle(f, path, start, stop) -> np.ndarray:
    raw = np.asarray(f["particle"][start:stop]).reshape(-1)
    try:
        if raw.dtype.kind in "SUO":
            return np.array([particle_code(v.decode() if isinstance(v, bytes) else v) for v in raw], np.int32)
        return raw.astype(np.int32)
    except ValueError as err:
        raise _err(path, "particle", str(err)) from None


def _read_chunk(f, path, fmt, geo, start, stop, strict) -> tuple[ShowerData, int]:
    if fmt == "calogan":
        parts = []
        for i, layer in enumerate(geo.layers):
            parts.append(np.asarray(f[f"layer_{i}"][start:stop], dtype=np.float32).reshape(stop - start, layer.n_cells))
        cells = np.concatenate(parts, axis=1)
    else:
        cells = np.asarray(f["showers"][start:stop], dtype=np.float32)
    cell_key = "showers" if fmt == "calochallenge" else "layer_*"
    finite = np.isfinite(cells)
    if not finite.all():
        shower = start + int(np.argmax(~finite.all(axis=1)))
        key = cell_key if fmt == "calochallenge" else f"layer_{int(geo.layer_of_cell()[np.argmax(~finite[shower - start])])}"
        raise _err(path, key, f"{int((~finite).sum())} cell energies are NaN or inf (first in shower {shower})")
    negative = cells < 0
    n_negative = int(negative.sum())
    if n_negative:
        if strict:
            shower = start + int(np.argmax(negative.any(axis=1)))
            key = cell_key if fmt == "calochallenge" else f"layer_{int(geo.layer_of_cell()[np.argmax(negative[shower - start])])}"
            raise _err(path, key, f"{n_negative} negative cell energies (first in shower {shower}); --strict refuses them")
        np.maximum(cells, 0, out=cells)
    e_inc = _read_energy(f, path, fmt, start, stop)
    e_tot = cells.sum(axis=1, dtype=np.float64)
    hit = e_tot > 0
    if hit.any() and np.median(e_tot[hit] / (1000.0 * e_inc[hit])) > _MAX_RESPONSE:
        ekey = "energy" if fmt == "calogan" else "incident_energies"
        unit = "GeV" if fmt == "calogan" else "MeV"
        raise _err(
            path,
            ekey,
            f"showers deposit {np.median(e_tot[hit] / (1000 * e_inc[hit])):.3g} times their incident energy: units wrong? (cells in MeV, '{ekey}' in {unit})",
        )
    conditions = {}
    for key in CONDITION_KEYS:
        if key in f:
            value = np.asarray(f[key][start:stop], dtype=np.float64).reshape(-1)
            if not np.isfinite(value).all():
                raise _err(path, key, f"holds NaN or inf (first in shower {start + int(np.argmax(~np.isfinite(value)))})")
            conditions[key] = value
    pdg = _read_particle(f, path, start, stop) if "particle" in f else None
    if pdg is None and f.attrs.get("particle") is not None:
        try:
            pdg = np.full(stop - start, particle_code(_attr_text(f.attrs["particle"])), np.int32)
        except ValueError as err:
            raise _err(path, None, f"attribute 'particle': {err}") from None
    overflow = None
    if "overflow" in f:
        overflow = np.asarray(f["overflow"][start:stop], dtype=np.float32).reshape(stop - start, -1)
    return ShowerData(geo, cells, e_inc, pdg, conditions, overflow), n_negative


def iter_showers(
    path: str | Path,
    chunk_size: int = DEFAULT_CHUNK,
    *,
    geometry: str | Geometry | None = None,
    strict: bool = False,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[ShowerData]:
    """Stream showers ``[start, stop)`` of a file in chunks, validating each.

    Negative cells are clipped to zero (the ATLAS preprocessing) and counted in one
    ``NegativeCellsWarning`` at the end; ``strict=True`` refuses them instead.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    with _open(path) as f:
        fmt, geo, n = _structure(f, path, geometry)
        stop = n if stop is None else min(stop, n)
        if not 0 <= start < stop:
            raise _err(path, None, f"showers [{start}, {stop}) are not in the file's {n}")
        n_negative = 0
        for a in range(start, stop, chunk_size):
            data, neg = _read_chunk(f, path, fmt, geo, a, min(a + chunk_size, stop), strict)
            n_negative += neg
            yield data
    if n_negative:
        warnings.warn(
            f"{path}: clipped {n_negative} negative cell energies to 0 (use --strict to refuse them)", NegativeCellsWarning, stacklevel=2
        )


def read_showers(path: str | Path, **kwargs) -> ShowerData:
    """All showers ``[start, stop)`` of a file in memory; see ``iter_showers``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NegativeCellsWarning)
        data = ShowerData.concatenate(list(iter_showers(path, **kwargs)))
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return data


def read_e_inc(path: str | Path, geometry: str | Geometry | None = None) -> np.ndarray:
    """(N,) incident energies in GeV of every shower, without reading any cells."""
    path = Path(path)
    with _open(path) as f:
        fmt, _, n = _structure(f, path, geometry)
        return _read_energy(f, path, fmt, 0, n)


def read_extra(path: str | Path, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """A per-shower key beyond cells and conditions (e.g. ``g4_cpu_seconds``), shape (N, ...)."""
    with _open(path) as f:
        ds = _need(f, path, key)
        return np.asarray(ds[start:stop])


class ShowerWriter:
    """Write showers to HDF5 in chunks, atomically.

    Data go to a hidden temporary file beside ``path``, gzip-compressed and chunked, and are
    moved onto ``path`` only when the ``with`` block ends without error
    (``calogan.runtime.AtomicOutput``); an interrupted run leaves nothing that looks like a
    complete file. ``path`` is checked at construction: an existing file is refused unless
    ``force=True``, and so is any of ``inputs`` (the files the showers come from).

    >>> import tempfile
    >>> g = preset("calogan")
    >>> path = Path(tempfile.mkdtemp()) / "gen.h5"
    >>> chunks = [ShowerData(g, np.ones((n, g.n_cells), np.float32), np.full(n, 10.0)) for n in (3, 2)]
    >>> with ShowerWriter(path, g, attrs={"particle": "e+"}) as w:
    ...     for chunk in chunks:
    ...         w.write(chunk)
    >>> inspect(path).n, inspect(path).particle
    (5, 'e+')
    """

    def __init__(
        self,
        path: str | Path,
        geometry: Geometry,
        *,
        format: str = "calogan",
        conditions: tuple[str, ...] = (),
        per_shower_particle: bool = False,
        attrs: dict | None = None,
        force: bool = False,
        inputs: tuple[str | Path, ...] = (),
        compression_level: int = 4,
        chunk_rows: int = 1024,
    ) -> None:
        self.path = Path(path)
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        unknown = set(conditions) - set(CONDITION_KEYS)
        if unknown:
            raise ValueError(f"unknown conditions {sorted(unknown)}; known: {', '.join(CONDITION_KEYS)}")
        self._out = AtomicOutput(self.path, force=force, inputs=inputs, error=ShowerFileError)  # checked now, before any work
        self.geometry = geometry
        self.format = format
        self.conditions = tuple(k for k in CONDITION_KEYS if k in conditions)
        self.per_shower_particle = per_shower_particle
        self.attrs = dict(attrs or {})
        self.n = 0
        self._opts = dict(compression="gzip", compression_opts=compression_level, shuffle=True)
        self._rows = chunk_rows
        self._file: h5py.File | None = None

    def __enter__(self) -> ShowerWriter:
        self._file = h5py.File(self._out.tmp, "w")
        f, g = self._file, self.geometry

        def make(key, tail, dtype=np.float32):
            f.create_dataset(key, shape=(0,) + tail, maxshape=(None,) + tail, dtype=dtype, chunks=(self._rows,) + tail, **self._opts)

        if self.format == "calogan":
            for i, layer in enumerate(g.layers):
                make(f"layer_{i}", layer.shape)
            make("energy", (1,))
            make("overflow", (g.n_layers,))
        else:
            make("showers", (g.n_cells,))
            make("incident_energies", (1,))
        for key in self.conditions:
            make(key, (1,))
        if self.per_shower_particle:
            make("particle", (1,), np.int32)
        return self

    def write(self, data: ShowerData) -> None:
        """Append a chunk of showers."""
        if self._file is None:
            raise RuntimeError("ShowerWriter.write outside its with block")
        if data.geometry != self.geometry:
            raise ValueError(f"showers of geometry {data.geometry.name!r} written to a {self.geometry.name!r} file")
        missing = set(self.conditions) - set(data.conditions)
        if missing:
            raise ValueError(f"{self.path}: showers lack conditions {sorted(missing)} declared for the file")
        f, n, m = self._file, self.n, len(data)

        def put(key, value):
            ds = f[key]
            ds.resize(n + m, axis=0)
            ds[n : n + m] = value

        if self.format == "calogan":
            for i, part in enumerate(data.layers()):
                put(f"layer_{i}", part)
            put("energy", data.e_inc[:, None])
            overflow = data.overflow if data.overflow is not None else np.zeros((m, self.geometry.n_layers), np.float32)
            put("overflow", overflow)
        else:
            put("showers", data.cells)
            put("incident_energies", data.e_inc[:, None] * 1000.0)  # CaloChallenge stores MeV
        for key in self.conditions:
            put(key, data.conditions[key][:, None])
        if self.per_shower_particle:
            put("particle", data.pdg[:, None])
        self.n += m

    def __exit__(self, exc_type, exc, tb) -> None:
        f, self._file = self._file, None
        try:
            if exc_type is None:
                if self.n == 0:
                    raise ShowerFileError(f"{self.path}: no showers were written")
                attrs = {"calogan_version": __version__, "geometry": self.geometry.to_json(), **self.attrs}
                for key, value in attrs.items():
                    if value is not None:
                        f.attrs[key] = value
                f.close()
                self._out.commit()
        finally:
            if f:
                f.close()
            self._out.discard()


def write_showers(path: str | Path, data: ShowerData, **kwargs) -> Path:
    """Write one in-memory ShowerData; keyword arguments as for ``ShowerWriter``.

    The file-level ``particle`` attribute is set when all showers share one known particle;
    otherwise a per-shower ``particle`` key is written.
    """
    codes = np.unique(data.pdg)
    attrs = dict(kwargs.pop("attrs", None) or {})
    single = len(codes) == 1 and codes[0] != 0
    if single:
        attrs.setdefault("particle", particle_name(int(codes[0])))
    kwargs.setdefault("per_shower_particle", not single and not (len(codes) == 1 and codes[0] == 0))
    kwargs.setdefault("conditions", tuple(data.conditions))
    with ShowerWriter(path, data.geometry, attrs=attrs, **kwargs) as w:
        for chunk in data.batches(DEFAULT_CHUNK):
            w.write(chunk)
    return Path(path)


def _file_attrs(path: str | Path) -> dict:
    with _open(path) as f:
        return {k: v for k, v in f.attrs.items() if k not in ("geometry", "calogan_version")}


def copy_subsets(
    path: str | Path, outputs: list[str | Path], assign: np.ndarray, *, force: bool = False, chunk_size: int = DEFAULT_CHUNK
) -> list[int]:
    """Stream a file into several outputs: shower i goes to ``outputs[assign[i]]`` (-1: none).

    Showers keep their order within each output; attributes (particle, convention, ...) are
    copied; every output is written atomically. Returns the number written to each output.
    """
    info = inspect(path)
    assign = np.asarray(assign)
    if assign.shape != (info.n,):
        raise ValueError(f"assign must have one entry per shower ({info.n}), got {assign.shape}")
    counts = [int((assign == k).sum()) for k in range(len(outputs))]
    for out, count in zip(outputs, counts):
        if count == 0:
            raise ShowerFileError(f"{out}: would receive no showers")
    attrs = _file_attrs(path)
    per_shower_particle = info.particle is not None and "," in info.particle
    writers = [
        ShowerWriter(
            out,
            info.geometry,
            conditions=info.conditions,
            per_shower_particle=per_shower_particle,
            attrs=attrs,
            force=force,
            inputs=(path,),
        )
        for out in outputs
    ]
    opened = []
    try:
        for w in writers:
            opened.append(w.__enter__())
        start = 0
        for chunk in iter_showers(path, chunk_size, geometry=info.geometry):
            part = assign[start : start + len(chunk)]
            for k, w in enumerate(opened):
                sel = part == k
                if sel.any():
                    w.write(chunk.select(sel))
            start += len(chunk)
    except BaseException as err:
        for w in opened:
            w.__exit__(type(err), err, None)
        raise
    for w in opened:
        w.__exit__(None, None, None)
    return counts


def split_file(path: str | Path, outputs: list[str | Path], fractions: list[float], *, seed: int = 0, force: bool = False) -> list[int]:
    """Split a file into disjoint random subsets with the given fractions of its showers.

    The same file, fractions and seed always give the same subsets.
    """
    if len(outputs) != len(fractions):
        raise ValueError(f"{len(outputs)} outputs for {len(fractions)} fractions")
    if any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"fractions must be positive and sum to at most 1, got {fractions}")
    n = inspect(path).n
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum([0.0, *fractions]) * n).astype(int)
    assign = np.full(n, -1)
    for k in range(len(fractions)):
        assign[order[bounds[k] : bounds[k + 1]]] = k
    return copy_subsets(path, outputs, assign, force=force)
