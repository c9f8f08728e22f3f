"""Every CLI command has --help, and failures exit non-zero with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = [
    [],
    ["local"],
    ["local", "up"],
    ["local", "demo"],
    ["tenants", "import"],
    ["tenants", "list"],
    ["tenants", "show"],
    ["tenants", "identities"],
    ["tenants", "identities", "show"],
    ["tenants", "identities", "add"],
    ["tenants", "identities", "remove"],
    ["mailboxes", "list"],
    ["mailboxes", "poll"],
    ["ingest"],
    ["messages", "list"],
    ["messages", "show"],
    ["messages", "replay"],
    ["messages", "discard"],
    ["outbound"],
    ["outbound", "show"],
    ["status"],
    ["dlq", "list"],
    ["dlq", "redrive"],
]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emailrouter.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0
    assert "usage: emailrouter" in result.stdout


def test_without_a_deployment_commands_fail_with_one_clear_line(tmp_path: pytest.TempPathFactory) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.endswith("_TABLE")}
    env["EMAILROUTER_STACK_FILE"] = "/nonexistent/stack.json"
    result = _run("tenants", "list", env=env)
    assert result.returncode == 78  # EX_CONFIG
    assert result.stderr.count("\n") == 1 and "emailrouter local up" in result.stderr
