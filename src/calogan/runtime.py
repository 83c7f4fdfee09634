"""Where calogan runs and how it writes and stops: device and thread choice, the one output discipline, signals.

Every file or folder calogan produces goes through ``AtomicOutput``: the path is checked
before any work starts (``check_output``: not an input, not existing unless ``force``, its
folder there and writable), the content is written under a temporary name in the same folder,
and only a complete result is moved into place, by a move that refuses to replace a file that
appeared meanwhile (unless ``force``). Whatever fails on the way, the temporary is removed, so
a half-written output is never visible under its name. A temporary carries its writer's
process id; one whose writer was killed (SIGKILL leaves no chance to clean up) is removed by
the next run that writes into its folder. Several outputs of one run appear together or not at
all (``atomic_outputs``).

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

Signals: under ``stop_on_signals`` (the command line runs every command so) SIGINT and
SIGTERM stop the work at once by raising ``Interrupted``, which unwinds through the cleanup
above; the command line then exits 130 or 143.

Device and threads: ``resolve_device("auto")`` is ``"cuda"`` when torch sees a CUDA device,
else ``"cpu"``; ``resolve_threads(None)`` takes ``CALOGAN_THREADS`` from the environment when
it is set, else the caller's default (``default_threads()``: the cores this process may use).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

from calogan.errors import CaloganError, ConfigError

__all__ = [
    "THREADS_ENV",
    "AtomicOutput",
    "Interrupted",
    "OutputError",
    "StaleTemporaryWarning",
    "atomic_outputs",
    "check_output",
    "check_output_folder",
    "check_outputs",
    "commit_all",
    "default_threads",
    "move_no_replace",
    "remove_stale_temporaries",
    "resolve_device",
    "resolve_threads",
    "stale_temporaries",
    "stop_on_signals",
    "temporary_name",
    "write_bytes",
    "write_text",
    "writer_alive",
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

# A temporary is named ".{output name}.{host}-{pid}-{random}.tmp{output suffix}": hidden, in the
# output's folder, with the suffix of the output (tools that pick a format by suffix see the right
# one), and with the writer's host (a short hash of its name) and process id, so that a later run
# can tell the temporary of a killed writer (its process is gone) from that of one still writing.
# The host part is absent from temporaries of calogan 0.1.0 (".{name}.{pid}-{random}.tmp...").
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?:(?P<host>[0-9a-f]{6})-)?(?P<pid>\d+)-[0-9a-f]{8}\.tmp(?:\.[^.]*)?")


class StaleTemporaryWarning(UserWarning):
    """A temporary left by a calogan run that was killed: removed, or reported when it cannot be."""


def temporary_name(path: str | Path) -> Path:
    """A fresh temporary path for the output ``path``: same folder, this host and process in its name."""
    path = Path(path)
    return path.parent / f".{path.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}"


def writer_alive(pid: int, host: str | None = None) -> bool:
    """Whether the process that named a temporary may still be writing it.

    Only a process of this host can be looked up; one of another host counts as alive. A
    process id reused by an unrelated process also counts as alive: its temporary waits for a
    later run.
    """
    if host is not None and host != _HOST:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def stale_temporaries(folder: str | Path) -> list[Path]:
    """The temporaries in ``folder`` whose writer no longer runs (killed before it could clean up)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    stale = []
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match and not writer_alive(int(match["pid"]), match["host"] or _HOST):
            stale.append(Path(folder) / entry.name)
    return sorted(stale)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporaries of killed writers from ``folder``, each with a ``StaleTemporaryWarning``;
    one that cannot be removed is reported instead. Returns the paths removed."""
    removed = []
    for path in stale_temporaries(folder):
        pid = _TEMPORARY.fullmatch(path.name)["pid"]
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # another run cleaned it meanwhile
            continue
        except OSError as err:
            warnings.warn(
                f"{path}: left by calogan process {pid}, which was killed; cannot remove it ({err.strerror})",
                StaleTemporaryWarning,
                stacklevel=2,
            )
            continue
        warnings.warn(
            f"removed {path}, left by calogan process {pid}, which was killed before it could clean up", StaleTemporaryWarning, stacklevel=2
        )
        removed.append(path)
    return removed


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
    (``directory=True``) never replaces anything); a path whose folder does not exist, is a
    file, or is not writable (a read-only file system included). ``error`` is the exception
    type raised (a ``CaloganError``), so that each caller keeps its own.
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
    _check_folder(path, path.parent, error)
    return path


def check_outputs(paths: Iterable[str | Path], **kwargs) -> list[Path]:
    """``check_output`` for several outputs of one run, which must moreover differ from each other."""
    paths = [Path(p) for p in paths]
    for i, a in enumerate(paths):
        for b in paths[:i]:
            if _same_file(a, b):
                raise kwargs.get("error", OutputError)(f"{a}: given twice as an output (also as {b})")
    return [check_output(p, **kwargs) for p in paths]


def check_output_folder(
    path: str | Path,
    *,
    files: Iterable[str] = (),
    force: bool = False,
    inputs: Iterable[str | Path] = (),
    error: type[CaloganError] = OutputError,
) -> Path:
    """Refuse an output folder now: one that receives ``files`` and may already exist.

    An existing folder must be writable and may hold other files, but not one of ``files``
    unless ``force``; a path that is a file (an input, say) is refused. A folder that does not
    exist yet will be created with its parents: the nearest existing one must be a writable
    folder.
    """
    path = Path(path)
    for item in inputs:
        if _same_file(path, Path(item)):
            raise error(f"{path}: is also an input ({item}); write the output to another path")
    if path.is_dir():
        clash = [name for name in files if (path / name).exists()]
        if clash and not force:
            raise error(f"{path}: already holds {', '.join(clash)}; pass --force to overwrite")
        _check_folder(path, path, error)
        return path
    if path.exists() or path.is_symlink():
        raise error(f"{path}: exists and is not a directory")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    _check_folder(path, ancestor, error)
    return path


def _check_folder(path: Path, parent: Path, error: type[CaloganError]) -> None:
    """The folder ``parent`` that will hold ``path`` exists, is a folder and can be written."""
    if not parent.exists():
        raise error(f"{path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise error(f"{path}: {parent} is a file, not a directory")
    # access() answers for the real user and says EROFS for a read-only file system, even to root
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{path}: directory is not writable" if path == parent else f"{path}: directory {parent} is not writable")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare the names
        return a.resolve() == b.resolve()


class AtomicOutput:
    """One output written all at once or not at all.

    ``AtomicOutput(path, force=..., inputs=...)`` checks ``path`` at once (``check_output``)
    and removes the temporaries that killed runs left in its folder
    (``remove_stale_temporaries``). The writer then fills ``tmp``: a name in the same folder
    (a file, or with ``directory=True`` an empty folder created for it) that ends with the
    output's suffix, so that tools which pick a format by suffix see the right one, and that
    carries this process's id (``temporary_name``). ``commit()`` moves it into place
    (``move_no_replace``; with ``force`` an existing file is replaced); ``discard()`` removes
    it. As a context manager it commits when the block succeeds and discards on any error,
    KeyboardInterrupt included. A folder output never replaces an existing path.
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
        remove_stale_temporaries(self.path.parent)
        self.tmp = temporary_name(self.path)
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


def commit_all(outputs: Iterable[AtomicOutput]) -> list[Path]:
    """Commit several filled outputs of one run: all of them, or, when one fails, none.

    Each is moved into place in turn; if one cannot be (it appeared meanwhile, say), those
    already moved are removed again and the rest discarded, so that a failed run leaves no
    output at all. (With ``force`` a file that an output replaced stays replaced.)
    """
    outputs = list(outputs)
    done = []
    try:
        for out in outputs:
            out.commit()
            done.append(out)
    except BaseException:
        for out in outputs:
            out.discard()
        for out in done:
            with contextlib.suppress(FileNotFoundError):
                if out.directory:
                    shutil.rmtree(out.path)
                else:
                    out.path.unlink()
        raise
    return [out.path for out in outputs]


@contextlib.contextmanager
def atomic_outputs(
    paths: Iterable[str | Path], *, force: bool = False, inputs: Iterable[str | Path] = (), error: type[CaloganError] = OutputError
):
    """Several file outputs of one run, written together: all of them appear, or none.

    The paths are checked at once (``check_outputs``: no two the same, none an input); the
    block fills each ``AtomicOutput``'s ``tmp`` and they are committed together when it
    succeeds (``commit_all``), discarded when it fails.
    """
    inputs = list(inputs)
    paths = check_outputs(paths, force=force, inputs=inputs, error=error)
    outputs = []
    try:
        for path in paths:
            outputs.append(AtomicOutput(path, force=force, inputs=inputs, error=error))
        yield outputs
    except BaseException:
        for out in outputs:
            out.discard()
        raise
    commit_all(outputs)


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


# -- signals -----------------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT: Ctrl-C, SIGTERM: kill); ``exit_code`` is 128 + its number.

    A KeyboardInterrupt, so that every ``with`` block and ``finally`` on the way out cleans up
    (temporaries are discarded) and nothing catches it as an ordinary error.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class _SignalState:
    """What ``stop_on_signals`` knows while it is active: the first signal, how often it was
    raised again after a callback swallowed it, and whether the caller has stopped (``stopped``:
    set it once the interruption is handled; later signals are then ignored)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.redelivered = 0
        self.stopped = False


def _stopping() -> bool:
    """Whether an Interrupted is already on its way out (being handled by an except, finally or __exit__)."""
    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


@contextlib.contextmanager
def stop_on_signals(signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM)):
    """Turn SIGINT and SIGTERM into ``Interrupted`` in the main thread while the block runs.

    The first signal stops the work at once (at the next Python instruction); a signal that
    comes while the interruption unwinds is not raised again, so that cleanup finishes. A
    signal whose disposition is "ignore" (``nohup``, a background job of a shell) stays
    ignored. SIGTERM otherwise kills a Python process without any cleanup; here it unwinds
    like Ctrl-C.

    Python runs a signal handler between any two instructions, also inside a weak-reference
    callback or a ``__del__`` method, and an exception raised there is not propagated but
    printed ("Exception ignored in: <function WeakValueDictionary.__init__.<locals>.remove>")
    and dropped: h5py registers each of its short-lived HDF5 identifiers in such a dictionary,
    so a Ctrl-C during a write was lost now and then. Such a dropped interruption reaches
    ``sys.unraisablehook``; this block's hook raises it again a moment later, outside the
    callback (a one-shot SIGALRM timer), and stays silent about it.

    Outside the main thread (where signal handlers cannot be set) the block does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    state = _SignalState()

    def handler(signum, frame):
        if state.signum is None:
            state.signum = signum
        if not state.stopped and not _stopping():
            raise Interrupted(state.signum)

    def again(signum, frame):  # SIGALRM after a swallowed interruption
        if state.signum is not None and not state.stopped and not _stopping():
            raise Interrupted(state.signum)

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and state.signum is not None and can_redeliver:
            state.redelivered += 1
            signal.setitimer(signal.ITIMER_REAL, 0.001)
            return
        previous_hook(unraisable)

    previous = {}
    for signum in signals:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handler)
    can_redeliver = hasattr(signal, "setitimer") and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    if can_redeliver:
        previous_alarm = signal.signal(signal.SIGALRM, again)
    previous_hook, sys.unraisablehook = sys.unraisablehook, hook
    try:
        yield state
    finally:
        if can_redeliver:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous_alarm)
        sys.unraisablehook = previous_hook
        for signum, old in previous.items():
            signal.signal(signum, old)
