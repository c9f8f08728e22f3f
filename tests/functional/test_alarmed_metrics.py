"""Every alarm on the router's own metrics watches a metric the functions really emit.

template.yaml's alarms name metrics by query (SELECT SUM(name) FROM namespace); the functions
emit them as CloudWatch embedded metric format (EMF) lines on stdout. Here the real handlers run
through the local runner with metrics enabled, on what each alarm is for: a quarantined message,
a mailbox that cannot be polled (nothing listens on its port), a CRM email that cannot be sent
(its recipient has no address). Each alarm's query must match an emitted metric: same namespace,
same name, and the tenant among its dimensions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from emailrouter import aws
from emailrouter.local.stack import LocalStack
from emailrouter.local.template import load_stack_template
from tests.helpers import TENANT, add_tenant, enqueue_inbound, pending_send, seed_org

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
QUERY = re.compile(r"SELECT SUM\((?P<name>\w+)\) FROM (?P<namespace>\w+)$")


def _alarm_queries() -> dict[str, tuple[str, str]]:
    stack = load_stack_template(TEMPLATE)
    queries: dict[str, tuple[str, str]] = {}
    for logical_id in stack.logical_ids_of_type("AWS::CloudWatch::Alarm"):
        for metric in stack.resources[logical_id]["Properties"].get("Metrics", []):
            if "Expression" in metric:
                match = QUERY.match(metric["Expression"])
                assert match, f"{logical_id}: unexpected query {metric['Expression']!r}"
                queries[logical_id] = (match["namespace"], match["name"])
    return queries


def _emitted(stdout: str) -> list[dict[str, Any]]:
    """(namespace, name, dimensions) of every EMF metric printed."""
    found = []
    for line in stdout.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                dimensions = {key: document[key] for keys in directive["Dimensions"] for key in keys}
                found.append({"namespace": directive["Namespace"], "name": metric["Name"], **dimensions})
    return found


@pytest.mark.timeout(300)
def test_alarmed_metrics_are_emitted_per_tenant(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    queries = _alarm_queries()
    assert {name for _namespace, name in queries.values()} >= {
        "inbound_quarantined",
        "mailbox_poll_failed",
        "outbound_failed",
    }
    seed_org(local_stack)
    add_tenant(local_stack)  # its POP3 mailbox points at port 1: every poll fails
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    nameless = "cccccccc-0000-0000-0000-000000000099"
    local_stack.dataverse.seed(
        {"contacts": [{"contactid": nameless, "fullname": "No Address", "statecode": 0}]}
    )
    pending_send(
        local_stack,
        "To nobody",
        recipient={"participationtypemask": 2, "partyid_contact@odata.bind": f"/contacts({nameless})"},
    )
    enqueue_inbound(local_stack, b"\x00\x01 not mail at all \xff" * 8)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    capfd.readouterr()

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=90)

    emitted = _emitted(capfd.readouterr().out)
    missing = {
        alarm: (namespace, name)
        for alarm, (namespace, name) in queries.items()
        if not any(
            m["namespace"] == namespace and m["name"] == name and m.get("tenant_id") == TENANT
            for m in emitted
        )
    }
    assert missing == {}, f"alarms on metrics never emitted: {missing}; emitted {emitted}"
