"""template.yaml read into typed models: what the local runner takes from the deployment template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emailrouter.config import Settings
from emailrouter.local.template import (
    GetAtt,
    Intrinsic,
    Ref,
    StackTemplate,
    TemplateError,
    TemplateValue,
    load_stack_template,
    load_template_document,
    resolve_environment,
    resolve_value,
    to_marker,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


@pytest.fixture(scope="module")
def stack() -> StackTemplate:
    return load_stack_template(TEMPLATE)


def test_sqs_consumers_read_their_queue_with_the_templates_batch_settings(stack: StackTemplate) -> None:
    consumers = {
        name: [
            (e.queue_logical_id, e.batch_size, e.max_batching_window_s, e.report_batch_item_failures)
            for e in fn.sqs_events
        ]
        for name, fn in stack.functions.items()
        if fn.sqs_events
    }

    assert consumers == {
        "PollMailboxFunction": [("PollJobsQueue", 1, 0, True)],
        "DeliverInboundFunction": [("InboundQueue", 10, 1, True)],
        "SendOutboundFunction": [("OutboundQueue", 5, 0, True)],
        "SesEventsFunction": [("SesEventsQueue", 10, 0, True)],
    }


def test_dispatchers_run_every_minute_with_retries_and_a_dead_letter_queue(stack: StackTemplate) -> None:
    schedules = {name: fn.schedules for name, fn in stack.functions.items() if fn.schedules}

    assert set(schedules) == {"DispatchFunction", "DispatchOutboundFunction"}
    for specs in schedules.values():
        (schedule,) = specs
        assert schedule.expression == "rate(1 minute)"
        assert schedule.enabled
        assert schedule.dead_letter_logical_id == "SchedulerDLQ"
        assert schedule.max_retry_attempts is not None


def test_function_timeouts_and_handlers_come_from_the_template_with_globals_applied(
    stack: StackTemplate,
) -> None:
    timeouts = {name: fn.timeout for name, fn in stack.functions.items()}

    assert timeouts == {
        "DispatchFunction": 60,
        "PollMailboxFunction": 120,
        "DeliverInboundFunction": 60,
        "DispatchOutboundFunction": 60,
        "SendOutboundFunction": 60,
        "SesEventsFunction": 30,
    }
    for fn in stack.functions.values():
        assert fn.memory == 512
        assert fn.handler == "app.handler"
        assert fn.handler_function == "handler"
        assert fn.handler_path == Path("functions") / fn.code_dir / "app.py"
        assert (ROOT / fn.handler_path).is_file(), f"{fn.logical_id}: {fn.handler_path} is missing"


def test_every_sqs_consumer_has_visibility_timeout_of_six_times_its_function_timeout(
    stack: StackTemplate,
) -> None:
    for fn in stack.functions.values():
        for event in fn.sqs_events:
            queue = stack.queues[event.queue_logical_id]
            # Lambda's guidance: 6x the function timeout, plus the batching window.
            needed = 6 * fn.timeout + event.max_batching_window_s
            assert queue.visibility_timeout >= needed, (
                f"{queue.logical_id}: VisibilityTimeout {queue.visibility_timeout} < {needed}"
            )


def test_every_queue_has_a_dead_letter_queue_or_is_one(stack: StackTemplate) -> None:
    dead_letter_ids = {q.dlq_logical_id for q in stack.queues.values() if q.dlq_logical_id} | {
        s.dead_letter_logical_id for fn in stack.functions.values() for s in fn.schedules
    }

    for queue in stack.queues.values():
        if queue.logical_id in dead_letter_ids:
            assert queue.dlq_logical_id is None, f"{queue.logical_id} is a DLQ with its own DLQ"
            assert queue.message_retention_s == 14 * 24 * 3600
        else:
            assert queue.dlq_logical_id in stack.queues, f"{queue.logical_id} has no DLQ"
            # SES events outlast a two-hour outage in their queue (interrupted sends wait for them).
            assert queue.max_receive_count == (40 if queue.logical_id == "SesEventsQueue" else 5)
            assert stack.consumers_of(queue.logical_id), f"nothing consumes {queue.logical_id}"


def _alarms(stack: StackTemplate) -> dict[str, dict[str, Any]]:
    return {
        logical_id: stack.resources[logical_id]["Properties"]
        for logical_id in stack.logical_ids_of_type("AWS::CloudWatch::Alarm")
    }


def test_every_dead_letter_queue_has_an_alarm_on_visible_messages(stack: StackTemplate) -> None:
    alarmed: set[str] = set()
    for properties in _alarms(stack).values():
        if properties.get("MetricName") != "ApproximateNumberOfMessagesVisible":
            continue
        assert properties["Namespace"] == "AWS/SQS"
        assert properties["ComparisonOperator"] == "GreaterThanThreshold"
        assert properties["Threshold"] == 0
        (dimension,) = properties["Dimensions"]
        marker = to_marker(dimension["Value"])
        assert isinstance(marker, GetAtt)
        alarmed.add(marker.logical_id)

    dead_letter_queues = {q.logical_id for q in stack.queues.values() if q.dlq_logical_id is None}
    assert alarmed == dead_letter_queues


def test_every_alarm_notifies_the_alarm_topic_both_ways(stack: StackTemplate) -> None:
    for logical_id, properties in _alarms(stack).items():
        assert to_marker(properties["AlarmActions"]) == [Ref("AlarmTopic")], logical_id
        assert to_marker(properties["OKActions"]) == [Ref("AlarmTopic")], logical_id
        assert properties["TreatMissingData"] == "notBreaching", logical_id


def test_quarantines_of_any_tenant_raise_an_alarm(stack: StackTemplate) -> None:
    namespace = stack.functions["DeliverInboundFunction"].environment["POWERTOOLS_METRICS_NAMESPACE"]
    expressions = [
        query["Expression"]
        for properties in _alarms(stack).values()
        for query in properties.get("Metrics", [])
        if "Expression" in query
    ]

    # Summed over every series of the namespace, whatever its dimensions: any tenant's quarantine
    # (tests/functional/test_alarmed_metrics.py shows the metric is emitted per tenant).
    assert f"SELECT SUM(inbound_quarantined) FROM {namespace}" in expressions


def test_quarantined_raw_mail_has_its_own_longer_lifecycle(stack: StackTemplate) -> None:
    from emailrouter.queues.rawstore import RawMailStore

    rules = stack.resources["RawMailBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiry = {
        rule["Prefix"]: to_marker(rule["ExpirationInDays"]) for rule in rules if "ExpirationInDays" in rule
    }
    # Every rule that expires objects is limited to one prefix, and the prefixes are the store's.
    assert all(rule.get("Prefix") for rule in rules if "ExpirationInDays" in rule)
    assert set(expiry) == {
        RawMailStore.key_for("t", "m", b"x").split("/")[0] + "/",
        RawMailStore.key_for("t", "m", b"x", kind="quarantine").split("/")[0] + "/",
    }
    assert expiry == {"raw/": Ref("RawMailRetentionDays"), "quarantine/": Ref("QuarantineRetentionDays")}
    defaults = stack.parameter_defaults
    assert int(defaults["QuarantineRetentionDays"]) > int(defaults["RawMailRetentionDays"])


def test_settings_the_code_reads_are_all_set_by_the_template(stack: StackTemplate) -> None:
    provided = set(stack.functions["DeliverInboundFunction"].environment)
    # Tuning knobs with defaults, not deployed resources.
    knobs = {
        "INLINE_MAX_BYTES",
        "CRM_BREAKER_THRESHOLD",
        "CRM_BREAKER_COOLDOWN_SECONDS",
        "DISABLED_TENANT_RETRY_SECONDS",
    }
    needed = {name.upper() for name in Settings.model_fields} - knobs
    # Only send_outbound reads the ses-events queues (before resending an interrupted send).
    send_only = {"SES_EVENTS_QUEUE_URL", "SES_EVENTS_DLQ_URL"}

    assert needed - send_only <= provided, f"template lacks {sorted(needed - send_only - provided)}"
    assert send_only <= set(stack.functions["SendOutboundFunction"].environment)


def test_environment_keeps_references_as_markers(stack: StackTemplate) -> None:
    environment = stack.functions["DispatchFunction"].environment

    assert environment["TENANTS_TABLE"] == Ref("TenantsTable")
    assert environment["POLL_JOBS_QUEUE_URL"] == Ref("PollJobsQueue")
    assert environment["POWERTOOLS_LOG_LEVEL"] == Ref("LogLevel")
    assert environment["LOCAL_MODE"] == "false"


def test_resolve_environment_uses_physical_values_and_parameters(stack: StackTemplate) -> None:
    fn = stack.functions["PollMailboxFunction"]
    physical = {name: f"physical-{name}" for name in stack.resources}
    physical.update(stack.parameter_defaults)

    environment = resolve_environment(fn, physical)

    assert environment["INBOUND_QUEUE_URL"] == "physical-InboundQueue"
    assert environment["RAW_MAIL_BUCKET"] == "physical-RawMailBucket"
    assert environment["RAW_MAIL_RETENTION_DAYS"] == "30"
    assert environment["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert all(isinstance(value, str) for value in environment.values())


def test_resolve_environment_refuses_an_unknown_reference(stack: StackTemplate) -> None:
    with pytest.raises(TemplateError, match="TenantsTable"):
        resolve_environment(stack.functions["DispatchFunction"], {})


def test_conditions_follow_the_parameters(stack: StackTemplate) -> None:
    assert stack.evaluate_conditions() == {"HasAlarmEmail": False}
    assert stack.evaluate_conditions({"AlarmEmail": "ops@example.com"}) == {"HasAlarmEmail": True}


def test_loader_reads_cloudformation_short_tags_into_long_form(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        """\
AWSTemplateFormatVersion: 2010-09-09
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      A: !GetAtt Other.Arn
      B: !Sub "${AWS::Region}-${Other.QueueName}-${!Literal}"
      C: !If [IsProd, !Join ["-", [a, !Ref Stage]], !Select [1, !Split [",", "x,y"]]]
""",
        encoding="utf-8",
    )

    document = load_template_document(path)
    properties = document["Resources"]["Q"]["Properties"]
    markers = to_marker(properties)

    assert document["AWSTemplateFormatVersion"] == "2010-09-09"
    assert properties["A"] == {"Fn::GetAtt": ["Other", "Arn"]}
    assert isinstance(markers, dict)
    assert markers["A"] == GetAtt("Other", "Arn")
    assert isinstance(markers["C"], Intrinsic)
    physical = {
        "AWS::Region": "eu-west-1",
        "Other.Arn": "arn:other",
        "Other.QueueName": "other",
        "Stage": "prod",
    }
    assert resolve_value(markers, physical, conditions={"IsProd": True}) == {
        "A": "arn:other",
        "B": "eu-west-1-other-${Literal}",
        "C": "a-prod",
    }
    assert resolve_value(markers["C"], physical, conditions={"IsProd": False}) == "y"
    assert load_stack_template(path).evaluate_conditions({"Stage": "prod"}) == {"IsProd": True}
    with pytest.raises(TemplateError, match=r"Other\.Arn"):
        resolve_value(markers["A"], {})


def test_a_file_without_resources_is_not_a_template(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Parameters: {}\n", encoding="utf-8")

    with pytest.raises(TemplateError, match="no Resources"):
        load_stack_template(path)


def test_every_function_logs_to_its_own_log_group_with_a_retention(stack: StackTemplate) -> None:
    groups = set()
    for logical_id in stack.functions:
        logging_config = stack.resources[logical_id]["Properties"].get("LoggingConfig", {})
        marker = to_marker(logging_config.get("LogGroup"))
        assert isinstance(marker, Ref), f"{logical_id} has no log group of its own"
        group = stack.resources[marker.name]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert to_marker(group["Properties"]["RetentionInDays"]) == Ref("LogRetentionDays")
        groups.add(marker.name)

    assert len(groups) == len(stack.functions)
    assert stack.parameter_defaults["LogRetentionDays"] == "30"


def _alarmed_dimensions(stack: StackTemplate, namespace: str, metric: str) -> list[TemplateValue]:
    return [
        to_marker(properties["Dimensions"][0]["Value"])
        for properties in _alarms(stack).values()
        if properties.get("Namespace") == namespace and properties.get("MetricName") == metric
    ]


def test_every_function_has_an_alarm_on_errors_and_one_on_throttles(stack: StackTemplate) -> None:
    for metric in ("Errors", "Throttles"):
        alarmed = _alarmed_dimensions(stack, "AWS/Lambda", metric)
        assert sorted(m.name for m in alarmed if isinstance(m, Ref)) == sorted(stack.functions), metric
        assert len(alarmed) == len(stack.functions)


def test_every_work_queue_has_an_alarm_on_the_age_of_its_oldest_message(stack: StackTemplate) -> None:
    work_queues = {q.logical_id for q in stack.queues.values() if q.dlq_logical_id is not None}
    alarmed = _alarmed_dimensions(stack, "AWS/SQS", "ApproximateAgeOfOldestMessage")

    assert {
        m.logical_id for m in alarmed if isinstance(m, GetAtt) and m.attribute == "QueueName"
    } == work_queues
    assert len(alarmed) == len(work_queues)


# What each function does with each table, from the code (who calls which store):
# TenantStore.save_cursor / save_health are called only by the poller (sources/poller.py);
# tenants and sending identities are written otherwise only by the CLI. Powertools idempotency is
# used by run_poll_job (sources/jobs.py) and handle_ses_event (outbound/jobs.py) only. The party
# cache is read and filled by inbound party resolution only. Outbound dispatch updates one item
# per tenant, its CRM circuit breaker (crm/breaker.py, CRM_HEALTH: update_item only).
TABLE_ACCESS = {
    "DispatchFunction": {"TenantsTable": "read"},
    "PollMailboxFunction": {"TenantsTable": "crud", "LedgerTable": "crud", "IdempotencyTable": "crud"},
    "DeliverInboundFunction": {"TenantsTable": "read", "LedgerTable": "crud", "PartyCacheTable": "crud"},
    "DispatchOutboundFunction": {"TenantsTable": "read+update", "LedgerTable": "crud"},
    "SendOutboundFunction": {"TenantsTable": "read", "LedgerTable": "crud"},
    "SesEventsFunction": {"TenantsTable": "read", "LedgerTable": "crud", "IdempotencyTable": "crud"},
}
# RawMailStore: the poller writes claim checks (raw/), the worker reads them and writes
# quarantined copies (quarantine/); replay and discard run in the CLI. Nothing else touches S3.
RAW_MAIL_ACCESS = {
    "PollMailboxFunction": {("s3:PutObject", "raw/*")},
    "DeliverInboundFunction": {("s3:GetObject", "raw/*"), ("s3:PutObject", "quarantine/*")},
}


def _policies(stack: StackTemplate, function: str) -> list[dict[str, Any]]:
    return list(stack.resources[function]["Properties"].get("Policies", []))


def test_each_function_gets_the_table_access_its_code_needs_and_no_more(stack: StackTemplate) -> None:
    granted: dict[str, dict[str, str]] = {}
    for function in stack.functions:
        access: dict[str, str] = {}
        for policy in _policies(stack, function):
            for template, level in (("DynamoDBReadPolicy", "read"), ("DynamoDBCrudPolicy", "crud")):
                if template in policy:
                    table = to_marker(policy[template]["TableName"])
                    assert isinstance(table, Ref)
                    assert table.name not in access, f"{function}: two policies on {table.name}"
                    access[table.name] = level
            for statement in policy.get("Statement", []):
                if str(statement["Action"]).startswith("dynamodb:"):
                    table = to_marker(statement["Resource"])
                    assert isinstance(table, GetAtt) and table.attribute == "Arn"
                    assert statement["Action"] == "dynamodb:UpdateItem", f"{function}: {statement}"
                    access[table.logical_id] = access.get(table.logical_id, "none") + "+update"
        granted[function] = access

    assert granted == TABLE_ACCESS


def test_only_the_functions_that_handle_raw_mail_reach_the_bucket_and_only_its_prefixes(
    stack: StackTemplate,
) -> None:
    granted: dict[str, set[tuple[str, str]]] = {}
    for function in stack.functions:
        for policy in _policies(stack, function):
            assert not any(name.startswith("S3") for name in policy), f"{function}: a broad S3 policy"
            for statement in policy.get("Statement", []):
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                for action in (a for a in actions if a.startswith("s3:")):
                    resource = to_marker(statement["Resource"])
                    assert isinstance(resource, Intrinsic) and resource.function == "Fn::Sub"
                    assert isinstance(resource.argument, str)
                    prefix = resource.argument.removeprefix("${RawMailBucket.Arn}/")
                    granted.setdefault(function, set()).add((action, prefix))

    assert granted == RAW_MAIL_ACCESS


def test_every_sqs_event_source_caps_its_concurrency(stack: StackTemplate) -> None:
    for fn in stack.functions.values():
        for event in fn.sqs_events:
            # Lambda's range for an SQS event source's MaximumConcurrency.
            assert event.maximum_concurrency is not None, f"{fn.logical_id}.{event.name}"
            assert 2 <= event.maximum_concurrency <= 1000


def test_a_polls_mailbox_lease_outlasts_the_longest_poll(stack: StackTemplate) -> None:
    """Two polls of one mailbox never overlap while the first is alive: its lease ends only
    after poll_mailbox's timeout has ended the invocation."""
    from emailrouter.sources.poller import POLL_LEASE_SECONDS

    timeout = stack.functions["PollMailboxFunction"].timeout
    assert timeout is not None and timeout < POLL_LEASE_SECONDS
