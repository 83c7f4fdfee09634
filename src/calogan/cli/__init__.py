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
COMMANDS = ("info", "subsets", "simulate", "calibrate", "train", "generate", "evaluate", "interpolate", "export", "benchmark")


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
        importlib.import_module(f"calogan.cli.{name}").register(sub)
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
    """Entry point of the ``calogan`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _warning_line
    try:
        return int(args.func(args) or 0)
    except (CaloganError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError) as err:
        if os.environ.get("CALOGAN_DEBUG"):
            raise
        print(f"calogan {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"calogan {args.command}: interrupted", file=sys.stderr)
        return 130
