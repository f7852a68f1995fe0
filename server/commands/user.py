"""``ngserve user add``: hash a password for a ``[[users]]`` entry of ngserve.toml."""

from __future__ import annotations

import argparse
import getpass
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="manage the users of a deployment")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", help="print a [[users]] entry with a scrypt hash of the password")
    a.add_argument("name", help="the user name")
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    a.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..passwords import hash_password
    from . import UsageError

    if not args.name or ":" in args.name or '"' in args.name:
        raise UsageError(f"user name {args.name!r} is not allowed: no ':' or '\"'")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the passwords differ")
    if len(password) < 8:
        raise UsageError("the password is too short: use at least 8 characters")
    print(f'[[users]]\nname = "{args.name}"\npassword_hash = "{hash_password(password)}"')
    return 0
