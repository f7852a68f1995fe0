"""One module per ``ngserve`` subcommand.

Each module defines ``register(subparsers)``, which adds its parser and sets
``run=...`` as a default.  Modules import heavy libraries inside ``run`` so
that ``ngserve --help`` stays fast.
"""

import argparse


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def float_list(text: str) -> list[float]:
    """An argparse type: comma-separated numbers (blank items are skipped, so a trailing comma is fine)."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
