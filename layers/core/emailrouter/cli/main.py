"""The `emailrouter` command: operators' and admins' entry point."""

from __future__ import annotations

import argparse
import sys

from emailrouter.cli import local_cmd, messages_cmd, status_cmd, suppressions_cmd, tenants_cmd
from emailrouter.cli.context import CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emailrouter", description="Email Router for Dynamics 365")
    sub = parser.add_subparsers(dest="command", required=True)
    local_cmd.register(sub)
    tenants_cmd.register(sub)
    messages_cmd.register(sub)
    messages_cmd.register_outbound(sub)
    status_cmd.register(sub)
    suppressions_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as error:
        print(f"emailrouter: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # one line for people; the class says what kind of failure
        print(f"emailrouter: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
