"""One module per ``ngserve`` subcommand.

Each module defines ``register(subparsers)``, which adds its parser and sets
``run=...`` as a default.  Modules import heavy libraries inside ``run`` so
that ``ngserve --help`` stays fast.
"""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""
