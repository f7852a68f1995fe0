"""The ``ngserve`` command line: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn, Sequence

from . import commands
from .commands import UsageError
from .config import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not a usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ngserve", description="Serve imaging data to Neuroglancer and mint viewer links.")
    parser.add_argument("--version", action="version", version=f"ngserve {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    # One module per command; "_" modules are helpers the commands share.
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")):
        importlib.import_module(f"{commands.__name__}.{mod}").register(sub)
    return parser


def _version() -> str:
    try:
        return version("ngserve")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (``ngserve link --batch … | head``): end quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return args.run(args) or 0
    except (UsageError, ConfigError) as exc:
        # One line, always: a message may quote a value from the user that holds a line break.
        line = str(exc).replace("\r", "\\r").replace("\n", "\\n")
        print(f"ngserve {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
