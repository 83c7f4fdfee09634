"""Read and write shower files (CaloGAN and CaloChallenge HDF5): validated, streamed, atomic.

Every reader also takes a sharded folder (``calogan.shards``: shard files and a manifest, as
``calogan generate --shards`` writes them) and reads it as one sample, the shards in order.
"""

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
from calogan.errors import CaloganError, ConfigError
from calogan.geometry import PRESETS, Geometry, GeometryError, load_geometry, preset
from calogan.runtime import AtomicOutput, check_outputs, commit_all
from calogan.shards import is_sharded, read_manifest, shard_files

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
# Units: a median E_tot / E_inc outside [_MIN_RESPONSE, _MAX_RESPONSE] is a units mistake (MeV
# for GeV, or the reverse: a factor 1000), not physics. The upper bound stays far above 1 so that
# a badly trained generator that overshoots its energy a few times is still read, and evaluated
# as bad, instead of refused. The lower bound is 12 times below the lowest median of the Geant4
# samples (pi+ in the active convention: 0.062; e+ active 0.19, total 0.99) and 5 times above
# the highest a GeV file stored in MeV gives (e+ total: 0.001). Single pions can deposit far
# less (1 % of them below 0.001 in the active convention), so the lower bound is applied to
# the median of at least _MIN_UNITS_SHOWERS showers only.
_MAX_RESPONSE = 20.0
_MIN_RESPONSE = 0.005
_MIN_UNITS_SHOWERS = 20


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
    shapes = [tuple(_need(f, path, k).shape[1:]) for k in _calogan_layer_keys(f)]
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
    """Check a file's structure and read its small metadata (not its cells).

    A sharded folder: every shard is inspected and must agree with the manifest and with the
    others (geometry, format, conditions); ``attrs`` are the first shard's, without its
    ``shard_*`` keys, plus ``shards`` (their number)."""
    path = Path(path)
    if is_sharded(path):
        return _inspect_sharded(path, geometry)
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


def _inspect_sharded(folder: Path, geometry) -> FileInfo:
    manifest = read_manifest(folder)
    infos = [inspect(p, geometry) for p in shard_files(folder)]
    first = infos[0]
    for shard, info in zip(manifest.shards, infos):
        if info.n != shard.count:
            raise ShowerFileError(f"{folder}: shard {shard.file} holds {info.n} showers, the manifest says {shard.count}")
        for key in ("geometry", "format", "conditions"):
            if getattr(info, key) != getattr(first, key):
                raise ShowerFileError(f"{folder}: shard {shard.file} differs from {manifest.shards[0].file} in its {key}")
    particles = list(dict.fromkeys(p for i in infos if i.particle for p in i.particle.split(",")))
    return FileInfo(
        path=folder,
        format=first.format,
        geometry=first.geometry,
        n=sum(i.n for i in infos),
        particle=",".join(particles) or None,
        conditions=first.conditions,
        e_range=(min(i.e_range[0] for i in infos), max(i.e_range[1] for i in infos)),
        attrs={**{k: v for k, v in first.attrs.items() if not k.startswith("shard_")}, "shards": len(infos)},
        extra_keys=first.extra_keys,
    )


def _shard_ranges(folder: Path, start: int, stop: int | None) -> list[tuple[Path, int, int]]:
    """(shard file, start, stop) within each shard of the showers [start, stop) of a sharded folder."""
    manifest = read_manifest(folder)
    paths = shard_files(folder)
    stop = manifest.n if stop is None else min(stop, manifest.n)
    if not 0 <= start < stop:
        raise _err(folder, None, f"showers [{start}, {stop}) are not in the sample's {manifest.n}")
    out = []
    for shard, p in zip(manifest.shards, paths):
        a, b = max(start, shard.start), min(stop, shard.start + shard.count)
        if a < b:
            out.append((p, a - shard.start, b - shard.start))
    return out


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


def _check_units(path, fmt: str, e_tot: np.ndarray, e_inc: np.ndarray) -> None:
    """Refuse showers whose median deposit over incident energy says the units are wrong."""
    hit = e_tot > 0
    if not hit.any():
        return
    response = float(np.median(e_tot[hit] / (1000.0 * e_inc[hit])))
    key = "energy" if fmt == "calogan" else "incident_energies"
    unit = "GeV" if fmt == "calogan" else "MeV"
    if response > _MAX_RESPONSE:
        raise _err(path, key, f"showers deposit {response:.3g} times their incident energy: units wrong? (cells in MeV, '{key}' in {unit})")
    if response < _MIN_RESPONSE and hit.sum() >= _MIN_UNITS_SHOWERS:
        raise _err(
            path,
            key,
            f"showers deposit {response:.2g} of their incident energy (median of {int(hit.sum())}; any calorimeter keeps more than "
            f"{_MIN_RESPONSE:g}): units wrong? ('{key}' must be in {unit}, cells in MeV; the incident energies read as "
            f"{e_inc.min():.4g} - {e_inc.max():.4g} GeV)",
        )


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
    _check_units(path, fmt, cells.sum(axis=1, dtype=np.float64), e_inc)
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
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    if is_sharded(path):  # the shards in order; a chunk never spans two shards
        for p, a, b in _shard_ranges(path, start, stop):
            yield from iter_showers(p, chunk_size, geometry=geometry, strict=strict, start=a, stop=b)
        return
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
    if is_sharded(path):
        return np.concatenate([read_e_inc(p, geometry) for p in shard_files(path)])
    with _open(path) as f:
        fmt, _, n = _structure(f, path, geometry)
        return _read_energy(f, path, fmt, 0, n)


def read_extra(path: str | Path, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """A per-shower key beyond cells and conditions (e.g. ``g4_cpu_seconds``), shape (N, ...)."""
    if is_sharded(path):
        return np.concatenate([read_extra(p, key, a, b) for p, a, b in _shard_ranges(Path(path), start, stop)])
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
            raise ConfigError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
        unknown = set(conditions) - set(CONDITION_KEYS)
        if unknown:
            raise ConfigError(f"unknown conditions {sorted(unknown)}; known: {', '.join(CONDITION_KEYS)}")
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
            raise ConfigError(f"showers of geometry {data.geometry.name!r} written to a {self.geometry.name!r} file")
        missing = set(self.conditions) - set(data.conditions)
        if missing:
            raise ConfigError(f"{self.path}: showers lack conditions {sorted(missing)} declared for the file")
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

    def finish(self) -> None:
        """Write the attributes and close the temporary file; ``commit`` then moves it into place."""
        f, self._file = self._file, None
        if f is None:
            raise RuntimeError("ShowerWriter.finish outside its with block")
        try:
            if self.n == 0:
                raise ShowerFileError(f"{self.path}: no showers were written")
            attrs = {"calogan_version": __version__, "geometry": self.geometry.to_json(), **self.attrs}
            for key, value in attrs.items():
                if value is not None:
                    f.attrs[key] = value
        finally:
            f.close()

    def discard(self) -> None:
        """Close and remove the temporary file (nothing appears under ``path``)."""
        f, self._file = self._file, None
        try:
            if f:
                f.close()
        finally:
            self._out.discard()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.finish()
                self._out.commit()
        finally:
            self.discard()


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
    if is_sharded(path):
        return {k: v for k, v in _file_attrs(shard_files(path)[0]).items() if not k.startswith("shard_")}
    with _open(path) as f:
        return {k: v for k, v in f.attrs.items() if k not in ("geometry", "calogan_version")}


def copy_subsets(
    path: str | Path, outputs: list[str | Path], assign: np.ndarray, *, force: bool = False, chunk_size: int = DEFAULT_CHUNK
) -> list[int]:
    """Stream a file into several outputs: shower i goes to ``outputs[assign[i]]`` (-1: none).

    Showers keep their order within each output; attributes (particle, convention, ...) are
    copied; the outputs are written atomically and together: all appear, or none (two the same,
    or one that is the input, are refused at once). Returns the number written to each output.
    """
    info = inspect(path)
    assign = np.asarray(assign)
    if assign.shape != (info.n,):
        raise ConfigError(f"assign must have one entry per shower ({info.n}), got {assign.shape}")
    counts = [int((assign == k).sum()) for k in range(len(outputs))]
    for out, count in zip(outputs, counts):
        if count == 0:
            raise ShowerFileError(f"{out}: would receive no showers")
    attrs = _file_attrs(path)
    per_shower_particle = info.particle is not None and "," in info.particle
    check_outputs(outputs, force=force, inputs=(path,), error=ShowerFileError)
    writers = []
    try:
        for out in outputs:
            writer = ShowerWriter(
                out,
                info.geometry,
                conditions=info.conditions,
                per_shower_particle=per_shower_particle,
                attrs=attrs,
                force=force,
                inputs=(path,),
            )
            writers.append(writer.__enter__())
        start = 0
        for chunk in iter_showers(path, chunk_size, geometry=info.geometry):
            part = assign[start : start + len(chunk)]
            for k, w in enumerate(writers):
                sel = part == k
                if sel.any():
                    w.write(chunk.select(sel))
            start += len(chunk)
        for w in writers:
            w.finish()
        commit_all([w._out for w in writers])  # all outputs appear, or none
    finally:
        for w in writers:
            w.discard()
    return counts


def split_file(path: str | Path, outputs: list[str | Path], fractions: list[float], *, seed: int = 0, force: bool = False) -> list[int]:
    """Split a file into disjoint random subsets with the given fractions of its showers.

    The same file, fractions and seed always give the same subsets.
    """
    if len(outputs) != len(fractions):
        raise ConfigError(f"{len(outputs)} outputs for {len(fractions)} fractions")
    if not all(0 < f <= 1 for f in fractions) or not sum(fractions) <= 1 + 1e-9:
        raise ConfigError(f"fractions must be positive and sum to at most 1, got {list(fractions)}")
    n = inspect(path).n
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum([0.0, *fractions]) * n).astype(int)
    assign = np.full(n, -1)
    for k in range(len(fractions)):
        assign[order[bounds[k] : bounds[k + 1]]] = k
    return copy_subsets(path, outputs, assign, force=force)
