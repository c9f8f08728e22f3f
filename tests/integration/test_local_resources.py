"""The local stack's AWS resources, created in moto from template.yaml itself."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from emailrouter.local.resources import LocalResources, create_local_resources
from emailrouter.local.template import StackTemplate, load_stack_template, resolve_environment
from tests.fixtures.aws import REGION

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"

# moto announces each resource type its CloudFormation skips; LocalResources.not_created and
# .patched say the same in a form the tests check.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")


@pytest.fixture(scope="module")
def stack() -> StackTemplate:
    return load_stack_template(TEMPLATE)


@pytest.fixture
def resources(aws: boto3.Session, moto_endpoint: str) -> LocalResources:
    return create_local_resources(TEMPLATE, moto_endpoint, REGION)


def test_queues_have_the_templates_visibility_timeout_and_redrive_to_their_dlq(
    aws: boto3.Session, resources: LocalResources, stack: StackTemplate
) -> None:
    sqs = aws.client("sqs")

    for logical_id, spec in stack.queues.items():
        attributes = sqs.get_queue_attributes(
            QueueUrl=resources.queue_urls[logical_id], AttributeNames=["All"]
        )["Attributes"]
        assert int(attributes["VisibilityTimeout"]) == spec.visibility_timeout, logical_id
        assert attributes["SqsManagedSseEnabled"] == "true", logical_id
        if spec.dlq_logical_id is None:
            assert "RedrivePolicy" not in attributes, logical_id
            assert int(attributes["MessageRetentionPeriod"]) == 14 * 24 * 3600
            continue
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == resources.queue_arns[spec.dlq_logical_id]
        assert int(redrive["maxReceiveCount"]) == spec.max_receive_count, logical_id


def test_a_message_received_five_times_moves_to_the_dead_letter_queue(
    aws: boto3.Session, resources: LocalResources
) -> None:
    sqs = aws.client("sqs")
    inbound, dlq = resources.queue_urls["InboundQueue"], resources.queue_urls["InboundDLQ"]
    sqs.send_message(QueueUrl=inbound, MessageBody="poison")

    for _ in range(5):
        received = sqs.receive_message(QueueUrl=inbound, VisibilityTimeout=0, WaitTimeSeconds=0)
        assert len(received.get("Messages", [])) == 1
    after = sqs.receive_message(QueueUrl=inbound, VisibilityTimeout=0, WaitTimeSeconds=0)

    assert after.get("Messages", []) == []
    dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)["Messages"]
    assert [message["Body"] for message in dead] == ["poison"]


def test_tables_have_the_templates_keys_index_ttl_and_recovery(
    aws: boto3.Session, resources: LocalResources
) -> None:
    dynamodb = aws.client("dynamodb")
    expected = {
        "TenantsTable": ([("pk", "HASH"), ("sk", "RANGE")], None),
        "LedgerTable": ([("pk", "HASH"), ("sk", "RANGE")], "expires_at"),
        "IdempotencyTable": ([("id", "HASH")], "expiration"),
        "PartyCacheTable": ([("pk", "HASH"), ("sk", "RANGE")], "expires_at"),
    }
    assert set(resources.table_names) == set(expected)

    for logical_id, (keys, ttl_attribute) in expected.items():
        name = resources.table_names[logical_id]
        table = dynamodb.describe_table(TableName=name)["Table"]
        assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == keys
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl_attribute is not None:
            assert (ttl["TimeToLiveStatus"], ttl.get("AttributeName")) == ("ENABLED", ttl_attribute)
        backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"

    ledger = dynamodb.describe_table(TableName=resources.table_names["LedgerTable"])["Table"]
    (index,) = ledger["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_outcome"
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [
        ("gsi1pk", "HASH"),
        ("gsi1sk", "RANGE"),
    ]
    assert index["Projection"]["ProjectionType"] == "ALL"


def test_raw_mail_bucket_is_encrypted_private_versioned_and_expires_mail(
    aws: boto3.Session, resources: LocalResources
) -> None:
    s3 = aws.client("s3")
    bucket = resources.bucket_name

    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True
    )
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    # Claim-check copies expire after 30 days; quarantined mail waits a year for a replay.
    assert {rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in rules} == {
        "raw/": 30,
        "quarantine/": 365,
    }
    assert all(rule["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 1 for rule in rules)
    # The template denies non-TLS access; the local endpoint is plain HTTP, so that one
    # statement (the policy's only one) is not applied locally and objects can be written.
    template_policy = load_stack_template(TEMPLATE).resources["RawMailBucketPolicy"]["Properties"][
        "PolicyDocument"
    ]
    assert [s["Condition"] for s in template_policy["Statement"]] == [
        {"Bool": {"aws:SecureTransport": "false"}}
    ]
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="raw/t/m/x.eml", Body=b"x")


def test_parameters_reach_the_created_resources(aws: boto3.Session, moto_endpoint: str) -> None:
    resources = create_local_resources(
        TEMPLATE,
        moto_endpoint,
        REGION,
        stack_name="emailrouter-short",
        parameters={
            "RawMailRetentionDays": "7",
            "QuarantineRetentionDays": "90",
            "AlarmEmail": "ops@example.com",
        },
    )

    rules = aws.client("s3").get_bucket_lifecycle_configuration(Bucket=resources.bucket_name)["Rules"]
    assert {rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in rules} == {
        "raw/": 7,
        "quarantine/": 90,
    }
    assert resources.parameters["RawMailRetentionDays"] == "7"
    # The configuration set is named after the stack; email subscriptions are never made locally.
    assert resources.outputs["SesConfigurationSetName"] == "emailrouter-short"
    aws.client("sesv2").get_configuration_set(ConfigurationSetName="emailrouter-short")
    assert "email" in resources.not_created["AlarmEmailSubscription"]


def test_ses_events_published_to_the_topic_arrive_on_the_ses_events_queue_in_the_sns_envelope(
    aws: boto3.Session, resources: LocalResources
) -> None:
    event = {"eventType": "Delivery", "mail": {"messageId": "0100-ses-id"}}

    aws.client("sns").publish(TopicArn=resources.topic_arns["SesEventsTopic"], Message=json.dumps(event))

    messages = aws.client("sqs").receive_message(
        QueueUrl=resources.queue_urls["SesEventsQueue"], WaitTimeSeconds=1
    )["Messages"]
    envelope = json.loads(messages[0]["Body"])
    assert envelope["Type"] == "Notification"
    assert json.loads(envelope["Message"]) == event


def test_outputs_and_function_environment_point_at_the_local_endpoint(
    aws: boto3.Session, resources: LocalResources, stack: StackTemplate, moto_endpoint: str
) -> None:
    assert resources.outputs["InboundQueueUrl"] == resources.queue_urls["InboundQueue"]
    assert resources.outputs["InboundQueueUrl"].startswith(moto_endpoint)
    assert resources.outputs["LedgerTableName"] == resources.table_names["LedgerTable"]
    assert "CoreLayerArn" not in resources.outputs  # the layer exists only in AWS
    assert "DeliverInboundFunction" in resources.not_created

    environment = resolve_environment(stack.functions["DeliverInboundFunction"], resources)

    assert environment["LEDGER_TABLE"] == resources.table_names["LedgerTable"]
    assert environment["RAW_MAIL_BUCKET"] == resources.bucket_name
    assert environment["SES_CONFIGURATION_SET"] == resources.stack_name
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=environment["POLL_JOBS_QUEUE_URL"], MessageBody="{}")
    depth = sqs.get_queue_attributes(
        QueueUrl=resources.queue_urls["PollJobsQueue"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    assert depth == "1"


def test_creating_again_reuses_the_stack(resources: LocalResources, moto_endpoint: str) -> None:
    again = create_local_resources(TEMPLATE, moto_endpoint, REGION)

    assert again.stack_id == resources.stack_id
    assert again.physical_ids == resources.physical_ids
    assert not any("TTL" in note for note in again.patched)  # already applied the first time


def test_router_id_key_is_a_generated_secret_the_functions_are_pointed_at(
    aws: boto3.Session, resources: LocalResources, stack: StackTemplate, moto_endpoint: str
) -> None:
    """The template's RouterIdKeySecret (GenerateSecretString, no value in the template) exists
    locally with a random value of the template's length, and every function that signs or
    verifies X-EmailRouter-Id finds it through ROUTER_ID_KEY_SECRET."""
    secrets = aws.client("secretsmanager")
    arn = resources.physical_ids["RouterIdKeySecret"]
    value = secrets.get_secret_value(SecretId=arn)["SecretString"]
    spec = stack.resources["RouterIdKeySecret"]["Properties"]["GenerateSecretString"]
    assert len(value) == spec["PasswordLength"] and value.isalnum()
    for function in ("DeliverInboundFunction", "SendOutboundFunction", "SesEventsFunction"):
        assert resolve_environment(stack.functions[function], resources)["ROUTER_ID_KEY_SECRET"] == arn

    again = create_local_resources(TEMPLATE, moto_endpoint, REGION)

    assert again.physical_ids["RouterIdKeySecret"] == arn  # reused: mail already sent stays verifiable
    assert secrets.get_secret_value(SecretId=arn)["SecretString"] == value


def test_log_groups_and_alarms_are_made_locally_except_those_on_lambda_metrics(
    aws: boto3.Session, resources: LocalResources, stack: StackTemplate
) -> None:
    groups = {
        group["logGroupName"]: group.get("retentionInDays")
        for group in aws.client("logs").describe_log_groups()["logGroups"]
    }
    assert len(groups) == len(stack.functions)
    assert set(groups.values()) == {30}
    alarms = {alarm["AlarmName"] for alarm in aws.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    for logical_id in stack.logical_ids_of_type("AWS::CloudWatch::Alarm"):
        if stack.resources[logical_id]["Properties"].get("Namespace") == "AWS/Lambda":
            # No Lambda functions locally: the runner calls the handlers in-process.
            assert "no physical value" in resources.not_created[logical_id]
        else:
            assert resources.physical_ids[logical_id] in alarms, logical_id
