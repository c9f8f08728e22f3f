"""The `emailrouter` command: operators' and admins' entry point."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from emailrouter.cli import local_cmd, messages_cmd, status_cmd, suppressions_cmd, tenants_cmd
from emailrouter.cli.context import CliError
from emailrouter.cli.exits import Exit
from emailrouter.routing.outcomes import is_retryable
from emailrouter.tenancy.errors import InvalidTenantFileError, MailboxNotFoundError, TenantNotFoundError


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 64 (EX_USAGE), not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(Exit.USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(prog="emailrouter", description="Email Router for Dynamics 365")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", required=True
    )
    local_cmd.register(sub)
    tenants_cmd.register(sub)
    messages_cmd.register(sub)
    messages_cmd.register_outbound(sub)
    status_cmd.register(sub)
    suppressions_cmd.register(sub)
    return parser


def exit_code(error: Exception) -> Exit:
    """The one place errors become exit codes (docs: README, "Exit codes")."""
    if isinstance(error, CliError):
        return error.code
    if isinstance(error, (TenantNotFoundError, MailboxNotFoundError)):
        return Exit.NOUSER
    if isinstance(error, InvalidTenantFileError):
        return Exit.CONFIG
    if is_retryable(error):
        return Exit.TEMPFAIL
    return Exit.FAILURE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as error:  # one line for people; the class says what kind of failure
        text = str(error) if isinstance(error, CliError) else f"{type(error).__name__}: {error}"
        print(f"emailrouter: {text}", file=sys.stderr)
        return int(exit_code(error))


if __name__ == "__main__":
    sys.exit(main())
