"""The one output discipline (validate first, temporary, no-replace move, cleanup) and device/thread choice."""

import os

import pytest

from calogan import runtime
from calogan.errors import ConfigError
from calogan.runtime import (
    AtomicOutput,
    OutputError,
    check_output,
    move_no_replace,
    resolve_device,
    resolve_threads,
    write_bytes,
    write_text,
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
