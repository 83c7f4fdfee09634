"""Sharded mass production on Dask: whole shard files, a manifest, reruns that finish what is missing.

``produce(spec, folder, client)`` splits the showers of a ``ProductionSpec`` into shards
(``calogan.shards.plan_shards``: consecutive ranges that start at multiples of the batch
size), submits one Dask task per unfinished shard and records each finished shard (file,
first shower, count, noise seed, SHA-256, bytes) in ``folder/manifest.json`` as it comes
back. A task loads the model on its worker, draws exactly the conditions a one-process
``calogan generate`` run draws for that range of showers, generates them with that run's
noise (``calogan.fastsim.latent_noise`` is a function of the seed and the shower index) in the
same batches, and writes the shard through ``calogan.io.ShowerWriter`` (a temporary file
renamed when complete). So the shards, read in order, hold the showers of the one-process run
with the same options, bit for bit on the same kind of machine and thread count.

Failures: a worker that dies mid-shard leaves only a hidden temporary; Dask gives the task
to another worker, and the temporaries are removed when the production ends. A shard whose
task failed stays unfinished in the manifest; running the same production again (same
folder, same spec) skips the finished shards and redoes the others. A folder holds one
production at a time (``folder/.lock``).

Clusters (``connect``): ``local`` starts a ``distributed.LocalCluster`` of worker processes;
``tcp://HOST:8786`` joins a running scheduler (``dask scheduler`` plus ``dask worker``
processes, e.g. in a Slurm job); a path to a ``.json`` scheduler file (``dask scheduler
--scheduler-file F``) does the same. The shard folder must be on a file system every worker
and the client see.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from calogan.errors import CaloganError, ConfigError
from calogan.fastsim import load_backend
from calogan.generate import conditions_from_file, generate_to_file, generation_attrs, sample_conditions
from calogan.io import ShowerFileError, inspect
from calogan.runtime import default_threads
from calogan.shards import MANIFEST, Manifest, Shard, file_sha256, plan_shards, read_manifest, write_manifest

__all__ = ["ProductionError", "ProductionResult", "ProductionSpec", "connect", "describe_workers", "produce", "produce_shard"]

# Options that belong to the machine: a rerun may change them without changing the showers' definition.
_MACHINE = ("threads",)


class ProductionError(CaloganError):
    """A production that cannot start or did not finish; the message says what to do."""


@dataclass(frozen=True)
class ProductionSpec:
    """What a sharded production makes; stored as the manifest's ``spec``.

    The generation options are those of ``calogan generate``: ``model`` (checkpoint or ONNX
    file; its SHA-256 is recorded), ``n`` showers at conditions drawn with ``energy``,
    ``conditions`` (rules for x0, y0, theta, phi) and ``particle``, or the conditions of
    every shower of ``energy_from``; ``seed``, ``batch_size``, ``backend``, ``device``,
    ``precision``. ``shards`` is how many shard files; ``threads`` the CPU threads of each task.
    """

    model: str
    model_sha256: str
    n: int
    shards: int
    seed: int = 0
    batch_size: int = 10000
    energy: str | None = None
    conditions: dict = field(default_factory=dict)
    particle: str | None = None
    energy_from: str | None = None
    backend: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 1

    @classmethod
    def create(cls, model: str | Path, **options) -> ProductionSpec:
        """A spec for ``model`` (path made absolute, checksum computed); ``n`` defaults to the
        number of showers of ``energy_from``."""
        path = Path(model).resolve()
        if not path.is_file():
            raise ConfigError(f"model {model}: no such file")
        if options.get("energy_from"):
            options["energy_from"] = str(Path(options["energy_from"]).resolve())
            available = inspect(options["energy_from"]).n
            if options.get("n") is None:
                options["n"] = available
            elif options["n"] > available:
                raise ConfigError(f"n {options['n']} exceeds the {available} showers of {options['energy_from']}")
        return cls(model=str(path), model_sha256=file_sha256(path), **options)

    def __post_init__(self) -> None:
        for key in ("n", "shards", "batch_size", "threads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.energy_from and (self.energy is not None or self.conditions):
            raise ConfigError("energy_from takes the conditions from the file: drop energy and conditions")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @property
    def digest(self) -> str:
        """16 hex digits identifying the showers this spec defines (machine options left out)."""
        values = {k: v for k, v in self.to_dict().items() if k not in _MACHINE}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, stored: dict) -> list[str]:
        """The options of ``stored`` (a manifest's spec) that differ from this one, machine options aside."""
        now = self.to_dict()
        names = [f.name for f in fields(self)]
        return [k for k in names if k not in _MACHINE and stored.get(k) != now[k]]


@dataclass(frozen=True)
class ProductionResult:
    """How a production went: showers and shards made now and before, time, peak memory per worker."""

    folder: Path
    n: int
    shards: int
    produced: int  # shards made by this run
    skipped: int  # shards finished before (with verify: checked on a worker and kept)
    seconds: float
    peak_rss: dict  # worker address -> peak resident memory in bytes (of the live worker processes)


# -- one shard, on a worker --------------------------------------------------------------------


def _shard_conditions(spec: ProductionSpec, model, shard: Shard) -> Iterator:
    """The conditions of showers [start, start + count) of the one-process run, chunk by chunk.

    Drawn conditions come from the run's stream in the run's chunks (one per batch): the
    chunks before the shard are drawn and dropped, so the values are the run's whatever the
    shard. The shard starts at a multiple of the batch size (``plan_shards``)."""
    stop = shard.start + shard.count
    if spec.energy_from:
        return conditions_from_file(spec.energy_from, model.conditions, chunk_size=spec.batch_size, start=shard.start, stop=stop)
    rs = model.conditions.ranges[0]
    chunks = sample_conditions(
        model.conditions,
        spec.n,
        particle=spec.particle,
        energy=spec.energy or f"{rs[0]:g}:{rs[1]:g}",
        extra=spec.conditions,
        seed=spec.seed,
        chunk_size=spec.batch_size,
    )
    b = spec.batch_size
    return itertools.islice(chunks, shard.start // b, -(-stop // b))


def _finished(shard: Shard, path: Path, made: bool) -> tuple[dict, bool]:
    return asdict(replace(shard, sha256=file_sha256(path), bytes=path.stat().st_size)), made


def _is_this_shard(path: Path, spec: ProductionSpec, shard: Shard, sha256: str | None) -> bool:
    """Whether ``path`` is a complete file of this shard of this production (checksum when known)."""
    try:
        info = inspect(path)
    except ShowerFileError:
        return False
    a = info.attrs
    ours = a.get("production") == spec.digest and a.get("shard_index") == shard.index and info.n == shard.count
    return ours and (sha256 is None or file_sha256(path) == sha256)


def produce_shard(spec: dict, folder: str, shard: dict, expect_sha256: str | None = None) -> tuple[dict, bool]:
    """Make one shard file (the Dask task); returns its finished manifest entry and whether it was made now.

    A file already under the shard's name that is this shard, complete (with
    ``expect_sha256``: with that checksum), is kept, so a task that runs again after its
    worker died between writing and reporting costs one read. Anything else under that name
    is replaced.
    """
    spec_, shard_ = ProductionSpec(**spec), Shard(**shard)
    path = Path(folder) / shard_.file
    if path.exists() and _is_this_shard(path, spec_, shard_, expect_sha256):
        return _finished(shard_, path, made=False)
    torch.set_num_threads(spec_.threads)
    model = load_backend(spec_.model, backend=spec_.backend, device=spec_.device, precision=spec_.precision, threads=spec_.threads)
    attrs = generation_attrs(model, spec_.model, spec_.seed)
    attrs.update(production=spec_.digest, shard_index=shard_.index, shard_start=shard_.start, shard_count=shard_.count)
    n = generate_to_file(
        path,
        model,
        _shard_conditions(spec_, model, shard_),
        seed=spec_.seed,
        batch_size=spec_.batch_size,
        attrs=attrs,
        force=True,
        start=shard_.start,
    )
    if n != shard_.count:
        raise ProductionError(f"{path}: wrote {n} showers, the shard holds {shard_.count}")
    return _finished(shard_, path, made=True)


def _peak_rss() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the production, on the client ------------------------------------------------------------


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """One production per folder: ``.lock`` holds host and pid; a stale one (this host, dead pid) is taken over."""
    path = folder / ".lock"
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = path.read_text().split()
            host, pid = (holder + ["", ""])[:2]
            if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)
                continue
            raise ProductionError(
                f"{folder}: another calogan generate is producing here ({' pid '.join(holder)}); if it is gone, remove {path} and run again"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _open_manifest(spec: ProductionSpec, folder: Path) -> Manifest:
    """The folder's manifest: a new one (all shards unfinished) or the stored one, checked against ``spec``."""
    if (folder / MANIFEST).exists():
        manifest = read_manifest(folder)
        changed = spec.differences(manifest.spec)
        if changed:
            k = changed[0]
            raise ProductionError(
                f"{folder}: holds a production with other options ({k}: {manifest.spec.get(k)!r} there, {spec.to_dict()[k]!r} now); "
                "use another folder, or run the stored command again to finish this one"
            )
        return manifest
    if any(p.name != ".lock" for p in folder.iterdir()):
        raise ProductionError(f"{folder}: exists and is not a calogan production folder (no {MANIFEST}); choose a new folder")
    plan = plan_shards(spec.n, spec.shards, align=spec.batch_size)
    width = max(5, len(str(len(plan) - 1)))
    shards = tuple(Shard(k, f"shard-{k:0{width}d}.h5", a, c, spec.seed) for k, (a, c) in enumerate(plan))
    manifest = Manifest(spec.to_dict(), shards)
    write_manifest(folder, manifest)
    return manifest


def _still_there(folder: Path, shard: Shard) -> bool:
    p = folder / shard.file
    return p.is_file() and p.stat().st_size == shard.bytes


def _remove_temporaries(folder: Path, manifest: Manifest) -> None:
    """Remove what killed writers left: the hidden temporaries of the shard files (``runtime.AtomicOutput``)."""
    for s in manifest.shards:
        for tmp in folder.glob(f".{s.file}.*.tmp.h5"):
            tmp.unlink(missing_ok=True)


def produce(
    spec: ProductionSpec,
    folder: str | Path,
    client,
    *,
    verify: bool = False,
    on_shard: Callable[[Shard], None] | None = None,
) -> ProductionResult:
    """Produce (or finish producing) ``spec`` into ``folder`` on the Dask ``client``.

    Finished shards are skipped when their file is still there with its recorded size; with
    ``verify`` their checksums are recomputed on the workers and a shard that differs is made
    again. ``on_shard(shard)`` is called as each shard finishes (a progress bar). Raises
    ``ProductionError`` when shards failed; the manifest then records those that finished.
    """
    from distributed import as_completed

    folder = Path(folder)
    t0 = time.perf_counter()
    if folder.exists() and not folder.is_dir():
        raise ProductionError(f"{folder}: is a file; a sharded production writes a folder")
    if not folder.parent.is_dir():
        raise ProductionError(f"{folder}: directory {folder.parent} does not exist")
    folder.mkdir(exist_ok=True)
    with _lock(folder):
        manifest = _open_manifest(spec, folder)
        todo, skipped, made = [], 0, 0
        for s in manifest.shards:
            if s.done and _still_there(folder, s) and not verify:
                skipped += 1
            else:
                todo.append((s, s.sha256 if s.done and verify else None))
        futures = {
            client.submit(
                produce_shard,
                spec.to_dict(),
                str(folder),
                asdict(replace(s, sha256=None, bytes=None)),
                expect,
                key=f"calogan-shard-{spec.digest}-{s.index}",
                pure=False,
                retries=1,
            ): s
            for s, expect in todo
        }
        errors = []
        for future in as_completed(futures):
            shard = futures[future]
            if future.status != "finished":
                errors.append((shard, future.exception()))
                if shard.done:  # a verified shard that could not be checked or remade is no longer finished
                    manifest = manifest.with_shard(replace(shard, sha256=None, bytes=None))
                    write_manifest(folder, manifest)
                continue
            record, fresh = future.result()
            done = Shard(**record)
            made += fresh
            skipped += not fresh
            manifest = manifest.with_shard(done)
            write_manifest(folder, manifest)
            if on_shard is not None:
                on_shard(done)
        _remove_temporaries(folder, manifest)
    peak = client.run(_peak_rss)
    if errors:
        shard, err = errors[0]
        raise ProductionError(
            f"{folder}: {len(errors)} of {len(manifest.shards)} shards failed (first: {shard.file}: {type(err).__name__}: {err}); "
            f"the manifest records the {len(manifest.shards) - len(manifest.pending)} finished ones: run the same command again to redo the rest"
        )
    return ProductionResult(folder, manifest.n, len(manifest.shards), made, skipped, time.perf_counter() - t0, peak)


@contextlib.contextmanager
def connect(cluster: str = "local", *, workers: int | None = None, threads: int = 1) -> Iterator:
    """A Dask ``Client`` for ``cluster``: ``local`` (a LocalCluster of ``workers`` processes,
    one task each at a time, default: the cores over ``threads``), a scheduler address
    (``tcp://HOST:8786``) or a scheduler file (``*.json``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("sharded production needs Dask: pip install 'calogan[distributed]'") from None
    if cluster == "local":
        n = workers or max(1, default_threads() // threads)
        with (
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR) as local,
            Client(local) as client,
        ):
            yield client
        return
    if workers is not None:
        raise ConfigError("--workers applies to --cluster local; a running cluster has the workers it was started with")
    if cluster.endswith(".json"):
        if not Path(cluster).is_file():
            raise ConfigError(f"scheduler file {cluster}: no such file")
        with Client(scheduler_file=cluster) as client:
            yield client
        return
    if "://" not in cluster:
        raise ConfigError(f"cluster must be local, a scheduler address (tcp://HOST:8786) or a scheduler file (.json), got {cluster!r}")
    with Client(cluster) as client:
        yield client


def describe_workers(peak: dict) -> str:
    """One line per worker: its address and peak resident memory."""
    return "\n".join(f"  {addr}: peak {rss / 2**20:.0f} MiB resident" for addr, rss in sorted(peak.items()))
