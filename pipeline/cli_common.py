"""Command-line helpers shared by the console scripts and the benchmark commands.

Nothing here imports the rest of the project but :mod:`pipeline.errors`, so any command
(``cli.py``, ``benchmarks/``) can use it without import cycles.
"""

from __future__ import annotations

import argparse

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
