"""Where calogan runs and how it writes: device and thread choice, and the one output discipline.

Every file or folder calogan produces goes through ``AtomicOutput``: the path is checked
before any work starts (``check_output``), the content is written under a temporary name in
the same folder, and only a complete result is moved into place, by a move that refuses to
replace a file that appeared meanwhile (unless ``force``). Whatever fails on the way, the
temporary is removed, so a half-written output is never visible under its name.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> with AtomicOutput(folder / "table.txt") as out:
...     _ = out.tmp.write_text("e_inc response\\n")
>>> (folder / "table.txt").read_text()
'e_inc response\\n'
>>> write_text(folder / "table.txt", "again")
Traceback (most recent call last):
...
calogan.runtime.OutputError: .../table.txt: exists; pass --force to overwrite it
>>> sorted(p.name for p in folder.iterdir())
['table.txt']

Device and threads: ``resolve_device("auto")`` is ``"cuda"`` when torch sees a CUDA device,
else ``"cpu"``; ``resolve_threads(None)`` takes ``CALOGAN_THREADS`` from the environment when
it is set, else the caller's default (``default_threads()``: the cores this process may use).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from calogan.errors import CaloganError, ConfigError

__all__ = [
    "THREADS_ENV",
    "AtomicOutput",
    "OutputError",
    "check_output",
    "default_threads",
    "move_no_replace",
    "resolve_device",
    "resolve_threads",
    "write_bytes",
    "write_text",
]

THREADS_ENV = "CALOGAN_THREADS"


class OutputError(CaloganError):
    """An output path that cannot be written: the message names it and the reason."""


# -- device and threads ------------------------------------------------------------------------


def default_threads() -> int:
    """CPU threads to use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not every platform has sched_getaffinity
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None = None, *, default: int | None = None, name: str = "threads") -> int | None:
    """The thread count to use: ``threads`` when given, else ``$CALOGAN_THREADS`` when set, else ``default``.

    ``name`` is how the caller calls the parameter, for the error message of a value below 1.

    >>> resolve_threads(3, default=1)
    3
    """
    if threads is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        if not text:
            return default
        try:
            threads = int(text)
        except ValueError:
            raise ConfigError(f"environment variable {THREADS_ENV} must be a whole number >= 1, got {text!r}") from None
        name = THREADS_ENV
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ConfigError(f"{name} must be >= 1, got {threads}")
    return int(threads)


def resolve_device(device: str) -> str:
    """``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda[:i]``, checked against the machine."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but this torch ({torch.__version__}) sees no CUDA device; use cpu")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ConfigError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices")
        return device
    raise ConfigError(f"device must be auto, cpu or cuda[:N], got {device!r}")


# -- outputs -----------------------------------------------------------------------------------


def check_output(
    path: str | Path,
    *,
    force: bool = False,
    inputs: Iterable[str | Path] = (),
    directory: bool = False,
    error: type[CaloganError] = OutputError,
) -> Path:
    """Refuse an output path now, before the work that would fill it; returns it as a Path.

    Refused: one of ``inputs`` (the same file under any name); an existing file unless
    ``force``; an existing folder (a file output cannot replace it, a folder output
    (``directory=True``) never replaces anything); a path whose folder does not exist or is
    not writable. ``error`` is the exception type raised (a ``CaloganError``), so that each
    caller keeps its own.
    """
    path = Path(path)
    for item in inputs:
        if _same_file(path, Path(item)):
            raise error(f"{path}: is also an input ({item}); write the output to another path")
    if directory and path.exists():
        raise error(f"{path}: exists; a folder output is never written over")
    if path.is_dir():
        raise error(f"{path}: is a directory")
    if path.exists() and not force:
        raise error(f"{path}: exists; pass --force to overwrite it")
    parent = path.parent
    if not parent.is_dir():
        raise error(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{path}: directory {parent} is not writable")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare the names
        return a.resolve() == b.resolve()


class AtomicOutput:
    """One output written all at once or not at all.

    ``AtomicOutput(path, force=..., inputs=...)`` checks ``path`` at once (``check_output``).
    The writer then fills ``tmp``: a name in the same folder (a file, or with
    ``directory=True`` an empty folder created for it) that ends with the output's suffix, so
    that tools which pick a format by suffix see the right one. ``commit()`` moves it into
    place (``move_no_replace``; with ``force`` an existing file is replaced); ``discard()``
    removes it. As a context manager it commits when the block succeeds and discards on any
    error, KeyboardInterrupt included. A folder output never replaces an existing path.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        force: bool = False,
        inputs: Iterable[str | Path] = (),
        directory: bool = False,
        error: type[CaloganError] = OutputError,
    ) -> None:
        self.path = check_output(path, force=force, inputs=inputs, directory=directory, error=error)
        self.force, self.directory, self.error = force, directory, error
        self.tmp = self.path.parent / f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{self.path.suffix}"
        self.committed = False
        if directory:
            os.mkdir(self.tmp)

    def commit(self) -> Path:
        """Move the finished temporary into place; it must exist."""
        if self.committed:
            raise RuntimeError(f"{self.path}: committed already")
        try:
            if self.force and not self.directory:
                os.replace(self.tmp, self.path)
            else:
                move_no_replace(self.tmp, self.path)
        except FileExistsError:
            self.discard()
            raise self.error(f"{self.path}: appeared while calogan was writing it; left as it is (pass --force to overwrite it)") from None
        except BaseException:
            self.discard()
            raise
        self.committed = True
        return self.path

    def discard(self) -> None:
        """Remove the temporary (file or folder), unless it was committed."""
        if self.committed:
            return
        if self.tmp.is_dir() and not self.tmp.is_symlink():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_text(path: str | Path, text: str, *, force: bool = False, inputs: Iterable[str | Path] = (), error=OutputError) -> Path:
    """Write a text file (UTF-8) through ``AtomicOutput``."""
    with AtomicOutput(path, force=force, inputs=inputs, error=error) as out:
        out.tmp.write_text(text, encoding="utf-8")
    return out.path


def write_bytes(path: str | Path, data: bytes, *, force: bool = False, inputs: Iterable[str | Path] = (), error=OutputError) -> Path:
    """Write a binary file through ``AtomicOutput``."""
    with AtomicOutput(path, force=force, inputs=inputs, error=error) as out:
        out.tmp.write_bytes(data)
    return out.path


# -- the no-replace move -----------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
# errno values by which a kernel or file system says it lacks renameat2's flag or link().
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EXDEV}


def _renameat2():
    """libc's renameat2 (Linux, glibc >= 2.28), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


def move_no_replace(src: str | Path, dst: str | Path) -> None:
    """Move ``src`` to ``dst`` in one step that fails with ``FileExistsError`` when ``dst`` exists.

    Both must be on one file system (a temporary in the output's folder is). On Linux this is
    ``renameat2(RENAME_NOREPLACE)``, for files and folders. Where the kernel or file system
    lacks it, a file is hard-linked to ``dst`` (which fails if ``dst`` exists) and ``src``
    unlinked; where that fails too, and for folders, ``dst`` is checked and ``src`` renamed,
    which leaves a moment in which a file created by another process could be replaced (a
    folder: only an empty one).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    rename = _renameat2()
    if rename is not None:
        if rename(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), dst)
        if code not in _UNSUPPORTED:
            raise OSError(code, os.strerror(code), src, None, dst)
    if not os.path.isdir(src):
        try:
            os.link(src, dst)
        except FileExistsError:
            raise
        except OSError as err:
            if err.errno not in _UNSUPPORTED:
                raise
        else:
            os.unlink(src)
            return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)
