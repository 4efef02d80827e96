"""Command-line helpers shared by the console scripts and the benchmark commands.

Nothing here imports the rest of the project but :mod:`pipeline.errors`, so any command
(``cli.py``, ``benchmarks/``) can use it without import cycles.

Exit codes: 0 success; 1 unexpected internal error; 2 bad input or options (one line
``error: ...`` on stderr); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence

from pipeline.errors import InputError

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one ``error:`` line (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        raise InputError(message)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_command(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Runs a command body and turns every failure into one line and an exit code.

    SIGTERM is handled like Ctrl-C (in the main thread only: signals cannot be set elsewhere).
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main_thread else None
    try:
        return main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("ENERV_DEBUG"):
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: internal error ({type(exc).__name__}): {message}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


class _Version(argparse.Action):
    """``--version``: the package's version and the bitstream formats it writes and reads (the
    bitstream module is imported only when asked, so that ``--help`` stays quick)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        from pipeline.bitstream import FORMAT_VERSION, READABLE_VERSIONS

        try:
            package = f"enerv-codec {version('enerv-codec')}"
        except PackageNotFoundError:  # run from a tree that was not installed
            package = "enerv-codec (not installed)"
        readable = ", ".join(map(str, READABLE_VERSIONS))
        parser.exit(message=f"{parser.prog} ({package}): writes bitstream format {FORMAT_VERSION}, reads {readable}\n")


def add_version(parser: argparse.ArgumentParser) -> None:
    """Gives ``parser`` a ``--version`` option."""
    parser.add_argument("--version", action=_Version, help="print the version and the bitstream formats, and exit")
