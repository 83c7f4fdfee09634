"""The one output discipline (validate first, temporary, no-replace move, cleanup) and device/thread choice."""

import os
import re
import signal
import subprocess
import sys
import time
import warnings
import weakref
from pathlib import Path

import pytest

from calogan import runtime
from calogan.errors import ConfigError
from calogan.runtime import (
    AtomicOutput,
    Interrupted,
    OutputError,
    StaleTemporaryWarning,
    atomic_outputs,
    check_output,
    check_output_folder,
    check_outputs,
    move_no_replace,
    resolve_device,
    resolve_threads,
    stale_temporaries,
    stop_on_signals,
    write_bytes,
    write_text,
    writer_alive,
)


class OwnError(ConfigError):
    pass


def test_check_output_refuses_before_any_work(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    assert check_output(tmp_path / "new.txt") == tmp_path / "new.txt"
    assert check_output(tmp_path / "old.txt", force=True) == tmp_path / "old.txt"
    cases = [
        (dict(path=tmp_path / "old.txt"), "old.txt: exists; pass --force to overwrite it"),
        (dict(path=tmp_path / "sub"), "sub: is a directory"),
        (dict(path=tmp_path / "sub", force=True), "sub: is a directory"),
        (dict(path=tmp_path / "missing" / "x.txt"), r"x.txt: directory .*missing does not exist"),
        (
            dict(path=tmp_path / "old.txt", force=True, inputs=[tmp_path / "a", tmp_path / "sub" / ".." / "old.txt"]),
            "old.txt: is also an input",
        ),
        (dict(path=tmp_path / "new", inputs=[tmp_path / "new"]), "new: is also an input"),
        (dict(path=tmp_path / "sub", directory=True), "sub: exists; a folder output is never written over"),
    ]
    for kwargs, message in cases:
        with pytest.raises(OutputError, match=message):
            check_output(**kwargs)
    with pytest.raises(OwnError, match="exists"):  # callers keep their own error type
        check_output(tmp_path / "old.txt", error=OwnError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="ro/x.txt: directory .*ro is not writable"):
            check_output(ro / "x.txt")
    finally:
        ro.chmod(0o700)


def test_atomic_output_appears_whole_or_not_at_all(tmp_path):
    path = tmp_path / "fig.png"
    with AtomicOutput(path) as out:
        assert out.tmp.parent == tmp_path and out.tmp.suffix == ".png" and out.tmp.name.startswith(".fig.png.")
        out.tmp.write_bytes(b"png")
        assert not path.exists()
    assert path.read_bytes() == b"png" and os.listdir(tmp_path) == ["fig.png"]
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), AtomicOutput(tmp_path / "b.txt") as out:
            out.tmp.write_text("half")
            raise exc
        assert os.listdir(tmp_path) == ["fig.png"]  # neither the output nor its temporary
    write_text(path, "replaced", force=True)
    assert path.read_text() == "replaced"
    assert write_bytes(tmp_path / "c.bin", b"\x00\x01").read_bytes() == b"\x00\x01"


def test_a_file_that_appears_meanwhile_is_never_replaced(tmp_path):
    path = tmp_path / "out.txt"
    out = AtomicOutput(path)
    out.tmp.write_text("ours")
    path.write_text("theirs")  # another process got there first
    with pytest.raises(OutputError, match="out.txt: appeared while calogan was writing it"):
        out.commit()
    assert path.read_text() == "theirs" and os.listdir(tmp_path) == ["out.txt"]
    with AtomicOutput(tmp_path / "forced.txt", force=True) as out:  # force replaces it
        out.tmp.write_text("ours")
        (tmp_path / "forced.txt").write_text("theirs")
    assert (tmp_path / "forced.txt").read_text() == "ours"


def test_folder_outputs(tmp_path):
    with AtomicOutput(tmp_path / "report", directory=True) as out:
        assert out.tmp.is_dir()
        (out.tmp / "a.txt").write_text("a")
    assert os.listdir(tmp_path / "report") == ["a.txt"]
    out = AtomicOutput(tmp_path / "second", directory=True)
    (tmp_path / "second").mkdir()  # appeared meanwhile, empty
    with pytest.raises(OutputError, match="appeared while"):
        out.commit()
    assert sorted(os.listdir(tmp_path)) == ["report", "second"]


@pytest.mark.parametrize("path", ["renameat2", "link", "rename"])
def test_move_no_replace_and_its_fallbacks(tmp_path, monkeypatch, path):
    if path != "renameat2":
        monkeypatch.setattr(runtime, "_renameat2", lambda: None)
    if path == "rename":

        def no_links(src, dst):
            raise OSError(runtime.errno.EPERM, "no hard links here")

        monkeypatch.setattr(runtime.os, "link", no_links)
    (tmp_path / "src").write_text("new")
    (tmp_path / "dst").write_text("old")
    with pytest.raises(FileExistsError):
        move_no_replace(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_text() == "old" and (tmp_path / "src").exists()
    move_no_replace(tmp_path / "src", tmp_path / "moved")
    assert (tmp_path / "moved").read_text() == "new" and not (tmp_path / "src").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("f")
    move_no_replace(tmp_path / "d", tmp_path / "d2")
    assert (tmp_path / "d2" / "f").read_text() == "f"


def test_threads_and_device(monkeypatch):
    monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
    assert resolve_threads(None, default=None) is None and resolve_threads(None, default=4) == 4 and resolve_threads(2) == 2
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert resolve_threads(None, default=4) == 3 and resolve_threads(1) == 1  # an explicit value wins
    monkeypatch.setenv(runtime.THREADS_ENV, "many")
    with pytest.raises(ConfigError, match="environment variable CALOGAN_THREADS must be a whole number >= 1, got 'many'"):
        resolve_threads(None)
    with pytest.raises(ConfigError, match="threads must be >= 1, got 0"):
        resolve_threads(0)
    assert runtime.default_threads() >= 1
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="device must be auto, cpu or cuda"):
        resolve_device("gpu")


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    pid, host = dead_pid(), runtime._HOST
    other = "ffffff" if host != "ffffff" else "eeeeee"
    names = {
        "dead": f".gen.h5.{host}-{pid}-0123abcd.tmp.h5",
        "dead_old_style": f".gen.h5.{pid}-0123abcd.tmp.h5",  # calogan 0.1.0's names carry no host
        "dead_folder": f".report.{host}-{pid}-0123abcd.tmp",
        "live": f".gen.h5.{host}-{os.getppid()}-0123abcd.tmp.h5",
        "other_host": f".gen.h5.{other}-{pid}-0123abcd.tmp.h5",
        "not_ours": ".gen.h5.tmp",
    }
    for key, name in names.items():
        if key == "dead_folder":
            (tmp_path / name).mkdir()
            (tmp_path / name / "metrics.json").write_text("{}")
        else:
            (tmp_path / name).write_bytes(b"half")
    assert stale_temporaries(tmp_path) == sorted(tmp_path / names[k] for k in ("dead", "dead_old_style", "dead_folder"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with AtomicOutput(tmp_path / "new.txt") as out:  # the next run writing into the folder cleans up
            assert re.fullmatch(rf"\.new\.txt\.{host}-{os.getpid()}-[0-9a-f]{{8}}\.tmp\.txt", out.tmp.name)
            out.tmp.write_text("whole")
    said = sorted(str(w.message) for w in caught if w.category is StaleTemporaryWarning)
    assert said == sorted(
        f"removed {tmp_path / names[k]}, left by calogan process {pid}, which was killed before it could clean up"
        for k in ("dead", "dead_old_style", "dead_folder")
    )
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["new.txt", names["live"], names["other_host"], names["not_ours"]])
    assert writer_alive(os.getpid()) and not writer_alive(pid) and writer_alive(pid, other)


def test_outputs_of_one_run_differ_and_appear_together(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    with pytest.raises(OutputError, match="a.h5: given twice as an output"):
        check_outputs([a, tmp_path / "sub" / ".." / "a.h5"])
    with pytest.raises(OutputError, match="a.h5: is also an input"):
        check_outputs([b, a], inputs=[a])
    with pytest.raises(OutputError, match="b.h5: appeared while calogan was writing it"):
        with atomic_outputs([a, b]) as (out_a, out_b):
            out_a.tmp.write_text("a")
            out_b.tmp.write_text("b")
            b.write_text("theirs")  # another process takes the second name meanwhile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.h5"] and b.read_text() == "theirs"  # the first went again
    with atomic_outputs([a, tmp_path / "c.h5"]) as outs:
        for out in outs:
            out.tmp.write_text(out.path.name)
    assert a.read_text() == "a.h5" and (tmp_path / "c.h5").read_text() == "c.h5"


def test_output_folders(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_folder(tmp_path / "run", files=("report.html",)) == tmp_path / "run"
    cases = [
        (dict(path=tmp_path / "run", files=("metrics.json",)), "run: already holds metrics.json; pass --force"),
        (dict(path=tmp_path / "file"), "file: exists and is not a directory"),
        (dict(path=tmp_path / "file", inputs=[tmp_path / "file"]), "file: is also an input"),
        (dict(path=tmp_path / "file" / "run"), r"file/run: .*file is a file, not a directory"),
        (dict(path=tmp_path / "file" / "a" / "b"), r"file/a/b: .*file is a file, not a directory"),
    ]
    for kwargs, message in cases:
        with pytest.raises(OutputError, match=message):
            check_output_folder(**kwargs)


def test_read_only_folders_are_refused_before_any_work(tmp_path, monkeypatch):
    """A read-only file system (or folder) refuses access(W_OK) even to root, who writes into read-only
    folders otherwise: the check asks access(), mocked here to say what a read-only mount says."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(runtime.os, "access", lambda p, mode: False if Path(p) == ro and mode & os.W_OK else real(p, mode))
    for call, message in [
        (lambda: check_output(ro / "x.h5"), "ro/x.h5: directory .*ro is not writable"),
        (lambda: check_output_folder(ro / "new" / "run"), "ro/new/run: directory .*ro is not writable"),
        (lambda: check_output_folder(ro), "ro: directory is not writable"),
        (lambda: AtomicOutput(ro / "x.h5"), "ro/x.h5: directory .*ro is not writable"),
    ]:
        with pytest.raises(OutputError, match=message):
            call()
    assert os.listdir(ro) == []


class _Object:
    pass


@pytest.fixture
def ctrl_c():
    """SIGINT as in an interactive shell; a test runner started in the background (``cmd &``)
    inherits it ignored, which calogan respects."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_interrupt_swallowed_by_a_callback_is_raised_again(capfd, ctrl_c):
    """Python drops an exception raised inside a weak-reference callback (h5py's WeakValueDictionary of
    HDF5 identifiers runs one whenever an identifier dies): a Ctrl-C handled there would be lost."""

    def callback(ref):  # a signal arriving while a callback runs: its handler runs inside the callback
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100):
            pass

    t0 = time.perf_counter()
    with pytest.raises(Interrupted) as caught, stop_on_signals() as state:
        obj = _Object()
        ref = weakref.ref(obj, callback)
        del obj
        while time.perf_counter() - t0 < 5:
            pass
    assert caught.value.exit_code == 130 and state.redelivered == 1 and ref() is None
    assert time.perf_counter() - t0 < 1
    assert "Exception ignored" not in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_sigterm_unwinds_like_ctrl_c_and_ignored_signals_stay_ignored(tmp_path):
    with pytest.raises(Interrupted) as caught, stop_on_signals(), AtomicOutput(tmp_path / "x.txt") as out:
        out.tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    assert caught.value.exit_code == 143 and os.listdir(tmp_path) == []
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # nohup or a background job: left as the user set it
    finally:
        signal.signal(signal.SIGINT, previous)
