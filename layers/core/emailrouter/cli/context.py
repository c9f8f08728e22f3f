"""Where the CLI finds the deployment: the environment, else a running local stack's stack.json."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from emailrouter.cli.exits import Exit
from emailrouter.runtime import Runtime, reset_runtime

STACK_FILE = Path(".local/stack.json")


class CliError(Exception):
    """A failure to report in one line, with a non-zero exit (a sysexits code)."""

    def __init__(self, message: str, code: Exit = Exit.FAILURE) -> None:
        super().__init__(message)
        self.code = code


def load_runtime(stack_file: Path | None = None) -> Runtime:
    """Use TENANTS_TABLE & co. from the environment when set (a deployed stack, with AWS
    credentials); otherwise the endpoints of `emailrouter local up` from .local/stack.json."""
    if "TENANTS_TABLE" not in os.environ:
        path = stack_file or Path(os.environ.get("EMAILROUTER_STACK_FILE", STACK_FILE))
        if not path.exists():
            raise CliError(
                f"no deployment configured: set TENANTS_TABLE, LEDGER_TABLE, … (see docs/configuration.md) "
                f"or start the local stack with `emailrouter local up` ({path} not found)",
                Exit.CONFIG,
            )
        stack = json.loads(path.read_text(encoding="utf-8"))
        os.environ.update({key: str(value) for key, value in stack["environment"].items()})
        os.environ.update(_queue_variables(stack.get("resources", {})))
        os.environ.setdefault("AWS_ENDPOINT_URL", stack["aws_endpoint"])
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        os.environ.setdefault("AWS_DEFAULT_REGION", stack["region"])
        os.environ.setdefault("AWS_REGION", stack["region"])
    return reset_runtime()


def _queue_variables(resources: dict[str, str]) -> dict[str, str]:
    """`<NAME>_QUEUE_URL` / `<NAME>_DLQ_URL` for every queue of the local stack, the functions'
    and the others (SesEventsQueue → SES_EVENTS_QUEUE_URL, SchedulerDLQ → SCHEDULER_DLQ_URL)."""
    variables = {}
    for logical_id, url in resources.items():
        if logical_id.endswith(("Queue", "DLQ")) and str(url).startswith(("http://", "https://")):
            variables[re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", logical_id).upper() + "_URL"] = str(url)
    return variables
