"""The ``calogan`` command line: thin subcommands that parse, call the library and write.

Each subcommand lives in its own module of this package with a ``register(subparsers)``
function; modules import torch and other heavy libraries inside their handlers only, so
that ``calogan --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import warnings

from calogan import __version__
from calogan.errors import CaloganError

__all__ = ["COMMANDS", "build_parser", "flag_names", "main"]

# Subcommand modules of calogan.cli, in the order --help lists them.
COMMANDS = (
    "info",
    "subsets",
    "simulate",
    "calibrate",
    "train",
    "calibrate-model",
    "tune",
    "generate",
    "evaluate",
    "interpolate",
    "export",
    "benchmark",
    "models",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calogan",
        description="Fast calorimeter shower simulation with generative adversarial networks.",
        epilog="Run 'calogan COMMAND --help' for a command's options. Set CALOGAN_DEBUG=1 for tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"calogan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"calogan.cli.{name.replace('-', '_')}").register(sub)
    return parser


@contextlib.contextmanager
def flag_names(**flags: str):
    """Say the command's flags where a library error names the Python parameter it came from.

    The library names its parameters (``n_average must be >= 1``); inside this context such
    an error, one that starts with a parameter given here, is raised again, same type, with
    the flag instead (``--n-average must be >= 1``).

    >>> with flag_names(n_average="--n-average"):
    ...     raise CaloganError("n_average must be >= 1, got 0")
    Traceback (most recent call last):
    ...
    calogan.errors.CaloganError: --n-average must be >= 1, got 0
    """
    try:
        yield
    except CaloganError as err:
        message = str(err)
        for name, flag in flags.items():
            if re.match(rf"{re.escape(name)}(?=[ :])", message):
                raise type(err)(flag + message[len(name) :]) from None
        raise


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"calogan: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``calogan`` console script; returns the exit status.

    0: done; 2: bad input (a ``CaloganError`` or a file the system refused: one line naming
    the file, key or option); 130 or 143: stopped by SIGINT or SIGTERM, after cleaning up;
    141: the reader of the output went away (``calogan info F | head``), quietly; 1: a bug in
    calogan, reported on one line. ``CALOGAN_DEBUG=1`` shows the traceback instead.
    """
    from calogan.runtime import Interrupted, stop_on_signals

    args = build_parser().parse_args(argv)
    warnings.formatwarning = _warning_line
    debug = bool(os.environ.get("CALOGAN_DEBUG"))
    with stop_on_signals() as signals:
        try:
            try:
                status = int(args.func(args) or 0)
            except Exception as err:
                # an error raised while an interruption unwound is its consequence (torch's
                # checkpoint writer, cut short by Ctrl-C, fails as it closes): the run was stopped
                interruption = _interruption(err)
                if interruption is None:
                    raise
                raise interruption from err
            sys.stdout.flush()  # a reader gone away shows here (BrokenPipeError), not in the interpreter's last flush
            return status
        except KeyboardInterrupt as err:
            if signals is not None:
                signals.stopped = True  # the work is unwound: a second Ctrl-C must not interrupt this message
            print(f"calogan {args.command}: stopped by {err.args[0] if isinstance(err, Interrupted) else 'SIGINT'}", file=sys.stderr)
            return err.exit_code if isinstance(err, Interrupted) else 130
        except BrokenPipeError:
            _silence_stdout()
            return 141
        except CaloganError as err:
            if debug:
                raise
            print(f"calogan {args.command}: error: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            if debug:
                raise
            print(f"calogan {args.command}: error: {_os_message(err)}", file=sys.stderr)
            return 2
        except Exception as err:
            if debug:
                raise
            print(
                f"calogan {args.command}: internal error: {type(err).__name__}: {err} "
                "(a bug in calogan: CALOGAN_DEBUG=1 shows the traceback to report)",
                file=sys.stderr,
            )
            return 1


def _interruption(err: BaseException | None) -> KeyboardInterrupt | None:
    """The interruption that ``err`` was raised while handling, if any (along its chain of contexts)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return err
        seen.add(id(err))
        err = err.__context__
    return None


def _os_message(err: OSError) -> str:
    """'path: reason' for an error of the operating system (no space left, read-only file system, ...)."""
    reason = err.strerror or str(err)
    if err.filename is None:
        return reason
    return f"{err.filename}: {reason}" + (f" (-> {err.filename2})" if err.filename2 else "")


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush does not complain about the closed pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
