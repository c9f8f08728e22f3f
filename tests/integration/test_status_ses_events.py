"""`emailrouter status` and `emailrouter dlq list` show the ses-events queue and its DLQ: events
dead-lettered there hold back every interrupted send, so the operator must see them."""

from __future__ import annotations

import json

import pytest

from emailrouter import aws
from emailrouter.cli.main import main
from emailrouter.local.stack import LocalStack


def test_status_and_dlq_list_show_the_ses_events_dlq(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    dlq = local_stack.endpoints.resources["SesEventsDLQ"]  # type: ignore[union-attr]
    aws.client("sqs").send_message(
        QueueUrl=dlq, MessageBody=json.dumps({"Type": "Notification", "Message": "{}"})
    )

    status_code = main(["status", "--json"])
    status = json.loads(capsys.readouterr().out)
    assert main(["dlq", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)

    assert status["queues"]["ses-events"] == {"depth": 0, "dlq": 1}
    assert status_code == 1  # a DLQ that holds anything is a failure to look at
    assert {"queue": "ses-events", "dlq_depth": 1, "redrive": True} in listed
