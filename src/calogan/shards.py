"""Sharded samples: a folder of whole shower files and the manifest that says what they hold.

Mass production (``calogan generate --shards N``, ``calogan.distributed.production``) writes
one folder: shard files ``shard-00000.h5`` ... (each a complete CaloGAN-format file, written
atomically) and ``manifest.json``, rewritten atomically after every finished shard:

- ``schema`` (``"calogan-shards"``), ``schema_version`` (1), ``calogan_version``;
- ``spec``: what was produced (model and its SHA-256, number of showers, conditions, seed,
  batch size, backend, ...), compared key by key when the same folder is produced again;
- ``n_showers`` and ``shards``: one entry per planned shard with ``index``, ``file``,
  ``start`` (its first shower's index in the whole sample: the counter of the latent-noise
  stream), ``count``, ``seed`` (the noise stream), and once it is finished ``sha256`` and
  ``bytes`` of its file (``null`` while unfinished).

A folder whose manifest lists every shard as finished is one sample: ``calogan.io`` reads it
like a file, the shards in order (``calogan info``, ``calogan evaluate``, training).

>>> plan_shards(10, 3, align=2)
[(0, 2), (2, 4), (6, 4)]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from calogan import __version__
from calogan.errors import CaloganError
from calogan.runtime import write_text

__all__ = [
    "MANIFEST",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Manifest",
    "Shard",
    "ShardError",
    "file_sha256",
    "is_sharded",
    "plan_shards",
    "read_manifest",
    "shard_files",
    "write_manifest",
]

MANIFEST = "manifest.json"
SCHEMA = "calogan-shards"
SCHEMA_VERSION = 1


class ShardError(CaloganError, ValueError):
    """A sharded folder that cannot be used; the message names the folder, shard or key."""


@dataclass(frozen=True)
class Shard:
    """One shard file of a sharded sample: showers ``start`` .. ``start + count - 1``."""

    index: int
    file: str
    start: int
    count: int
    seed: int
    sha256: str | None = None  # None while unfinished
    bytes: int | None = None

    @property
    def done(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class Manifest:
    """What a sharded folder holds: the production ``spec`` and its shards, in order."""

    spec: dict
    shards: tuple[Shard, ...]

    @property
    def n(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def pending(self) -> list[Shard]:
        return [s for s in self.shards if not s.done]

    def with_shard(self, shard: Shard) -> Manifest:
        """This manifest with the entry of ``shard.index`` replaced by ``shard``."""
        return replace(self, shards=tuple(shard if s.index == shard.index else s for s in self.shards))

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "schema_version": SCHEMA_VERSION,
                "calogan_version": __version__,
                "spec": self.spec,
                "n_showers": self.n,
                "shards": [asdict(s) for s in self.shards],
            },
            indent=1,
        )


def plan_shards(n: int, shards: int, *, align: int = 1) -> list[tuple[int, int]]:
    """(start, count) of ``shards`` consecutive shards of ``n`` showers, each starting at a
    multiple of ``align`` (the generation batch, so that a shard's batches are those of a
    one-process run) and as equal as that allows; fewer shards when there are fewer batches."""
    if n < 1 or shards < 1 or align < 1:
        raise ShardError(f"plan_shards needs n, shards and align >= 1, got {n}, {shards}, {align}")
    blocks = -(-n // align)
    shards = min(shards, blocks)
    edges = [min(n, (k * blocks // shards) * align) for k in range(shards + 1)]
    return [(a, b - a) for a, b in zip(edges[:-1], edges[1:])]


def is_sharded(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a shard manifest."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of a sharded folder, checked (schema, keys, consecutive shards)."""
    path = Path(folder) / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise ShardError(f"{path}: cannot read ({err.strerror})") from None
    except ValueError as err:
        raise ShardError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise ShardError(f"{path}: not a calogan shard manifest (schema {SCHEMA!r} expected)")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(f"{path}: schema_version {raw.get('schema_version')!r}; this calogan reads {SCHEMA_VERSION}")
    try:
        shards = tuple(Shard(**entry) for entry in raw["shards"])
        spec = dict(raw["spec"])
    except (KeyError, TypeError) as err:
        raise ShardError(f"{path}: malformed shard list or spec ({err})") from None
    start = 0
    for k, s in enumerate(shards):
        if s.index != k or s.start != start or s.count < 1:
            raise ShardError(f"{path}: shard {k} ({s.file}) does not follow the one before it (index {s.index}, start {s.start})")
        start += s.count
    return Manifest(spec, shards)


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    """Replace the folder's manifest atomically (a reader sees the old or the new one, whole)."""
    return write_text(Path(folder) / MANIFEST, manifest.to_json() + "\n", force=True, error=ShardError)


def shard_files(folder: str | Path) -> list[Path]:
    """The shard files of a finished sharded folder, in order; an unfinished or damaged one is an error."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    pending = manifest.pending
    if pending:
        raise ShardError(
            f"{folder}: {len(pending)} of {len(manifest.shards)} shards are unfinished (first: {pending[0].file}); "
            "run the calogan generate command that made it again to finish them"
        )
    paths = []
    for s in manifest.shards:
        p = folder / s.file
        if not p.is_file():
            raise ShardError(f"{folder}: shard {s.file} is listed as finished but missing; run the calogan generate command again")
        if p.stat().st_size != s.bytes:
            raise ShardError(f"{folder}: shard {s.file} has {p.stat().st_size} bytes, the manifest says {s.bytes}; it was changed")
        paths.append(p)
    return paths


def file_sha256(path: str | Path, *, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
