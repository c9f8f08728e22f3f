"""Create template.yaml's queues, tables, bucket and topics in a running moto server.

The local stack does not keep a second list of resources: it hands template.yaml, unchanged, to
moto's CloudFormation ``create_stack``. moto creates the SQS queues, DynamoDB tables, S3 bucket,
SNS topics and the functions' log groups and skips what it does not implement (``AWS::Serverless::*``, policies,
subscriptions, SES, alarms). This module then checks the created resources against the
template and applies, through each service's own API and from the template's own values, what
moto's CloudFormation left out (as of moto 5.2):

- DynamoDB ``TimeToLiveSpecification`` and ``PointInTimeRecoverySpecification`` (dropped);
- S3 versioning, lifecycle rules, public access block, ownership controls and ``BucketKeyEnabled``
  (dropped), and the ``AWS::S3::BucketPolicy`` (resource type not supported);
- ``AWS::SQS::QueuePolicy``, ``AWS::SNS::TopicPolicy``, ``AWS::SNS::Subscription`` (sqs protocol),
  ``AWS::SES::ConfigurationSet`` and its event destination (resource types not supported);
  alarms on a function's metrics are not made (no functions exist locally: the runner calls the
  handlers in-process); ``AWS::SecretsManager::Secret`` (resource type not supported; a secret's
  ``GenerateSecretString`` is honoured with Secrets Manager's own ``GetRandomPassword``, and a
  secret that exists is kept, so a restarted stack keeps its keys).

Queue attributes, GSIs and bucket encryption are verified as well and re-applied if a moto
version drops them. Not fixable through moto's API: a table's ``SSESpecification`` (moto's
CloudFormation reads ``Enabled`` where the template says ``SSEEnabled``); DynamoDB encrypts at
rest regardless, so nothing local depends on it.

Example:
    >>> resources = create_local_resources(Path("template.yaml"), "http://127.0.0.1:5000", "eu-west-1")
    >>> resources.queue_urls["InboundQueue"]
    'http://127.0.0.1:5000/123456789012/emailrouter-local-InboundQueue-...'
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore.exceptions import ClientError

from emailrouter.local.template import (
    FunctionSpec,
    StackTemplate,
    TemplateError,
    load_stack_template,
    resolve_environment,
    resolve_value,
    to_marker,
)

if TYPE_CHECKING:
    from pathlib import Path

_STACK_TIMEOUT_S = 60.0
_POLL_INTERVAL_S = 0.1
_SKIPPED_BY_DESIGN = "AWS::Serverless::"
_CREATION_ORDER = (
    "AWS::SES::ConfigurationSet",
    "AWS::SNS::TopicPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::S3::BucketPolicy",
    "AWS::SNS::Subscription",
    "AWS::SES::ConfigurationSetEventDestination",
    "AWS::CloudWatch::Alarm",
)


class LocalStackError(Exception):
    """The local resources could not be created from the template."""


@dataclass(frozen=True)
class LocalResources:
    """What ``create_local_resources`` made, keyed by the template's logical ids.

    ``physical_ids`` holds each resource's ``!Ref`` value as seen through the local endpoint
    (queue URL at the endpoint, table name, bucket name, topic ARN, configuration set name);
    ``attributes`` its ``!GetAtt`` values (``Arn``, ``QueueName``, ...).
    """

    stack_name: str
    stack_id: str
    region: str
    account_id: str
    endpoint_url: str
    parameters: dict[str, str]
    resource_types: dict[str, str]
    physical_ids: dict[str, str]
    attributes: dict[str, dict[str, str]]
    outputs: dict[str, str]
    patched: tuple[str, ...] = ()
    not_created: dict[str, str] = field(default_factory=dict)

    def _of_type(self, resource_type: str) -> dict[str, str]:
        return {
            logical_id: physical
            for logical_id, physical in self.physical_ids.items()
            if self.resource_types.get(logical_id) == resource_type
        }

    @property
    def queue_urls(self) -> dict[str, str]:
        """Queue URL at the local endpoint, by logical id."""
        return self._of_type("AWS::SQS::Queue")

    @property
    def queue_arns(self) -> dict[str, str]:
        """Queue ARN, by logical id."""
        return {logical_id: self.attributes[logical_id]["Arn"] for logical_id in self.queue_urls}

    @property
    def table_names(self) -> dict[str, str]:
        """DynamoDB table name, by logical id."""
        return self._of_type("AWS::DynamoDB::Table")

    @property
    def bucket_names(self) -> dict[str, str]:
        """S3 bucket name, by logical id."""
        return self._of_type("AWS::S3::Bucket")

    @property
    def bucket_name(self) -> str:
        """The raw mail bucket's name."""
        return self.physical_ids["RawMailBucket"]

    @property
    def topic_arns(self) -> dict[str, str]:
        """SNS topic ARN, by logical id."""
        return self._of_type("AWS::SNS::Topic")

    def reference_values(self) -> dict[str, str]:
        """Everything ``!Ref`` / ``!GetAtt`` / ``!Sub`` can name, for ``resolve_value``."""
        return _reference_values(
            self.region,
            self.account_id,
            self.stack_name,
            self.stack_id,
            self.parameters,
            self.physical_ids,
            self.attributes,
        )

    def environment(self, fn: FunctionSpec, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The function's environment as Lambda would set it, pointing at these resources."""
        return {**resolve_environment(fn, self.reference_values()), **(overrides or {})}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (for ``.local/stack.json``)."""
        return {
            "stack_name": self.stack_name,
            "stack_id": self.stack_id,
            "region": self.region,
            "account_id": self.account_id,
            "endpoint_url": self.endpoint_url,
            "parameters": self.parameters,
            "queue_urls": self.queue_urls,
            "table_names": self.table_names,
            "bucket_names": self.bucket_names,
            "topic_arns": self.topic_arns,
            "outputs": self.outputs,
            "patched": list(self.patched),
            "not_created": self.not_created,
        }


def create_local_resources(
    template_path: Path,
    endpoint_url: str,
    region: str,
    stack_name: str = "emailrouter-local",
    *,
    parameters: Mapping[str, str] | None = None,
    session: boto3.Session | None = None,
    timeout_s: float = _STACK_TIMEOUT_S,
) -> LocalResources:
    """Create the template's resources in the moto server at ``endpoint_url``.

    The stack is created with moto's CloudFormation from template.yaml as it is; a stack of
    that name already complete is reused. Whatever moto's CloudFormation leaves out is applied
    afterwards (see the module docstring); ``LocalResources.patched`` lists what was.

    Raises:
        LocalStackError: the stack failed, timed out, or a resource does not match the template.
    """
    template = load_stack_template(template_path)
    if session is None:
        # Explicit dummy credentials: a local endpoint never receives real ones.
        session = boto3.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
            region_name=region,
        )
    builder = _LocalStackBuilder(template, session, endpoint_url, region, stack_name, dict(parameters or {}))
    return builder.build(timeout_s)


class _LocalStackBuilder:
    """One run of ``create_local_resources``: the clients and what has been made so far."""

    def __init__(
        self,
        template: StackTemplate,
        session: boto3.Session,
        endpoint_url: str,
        region: str,
        stack_name: str,
        parameters: dict[str, str],
    ) -> None:
        self.template = template
        self.session = session
        self.endpoint_url = endpoint_url
        self.region = region
        self.stack_name = stack_name
        self.parameters = {**template.parameter_defaults, **parameters}
        self.overrides = parameters
        self.conditions = template.evaluate_conditions(self.parameters)
        self.physical_ids: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self.patched: list[str] = []
        self.not_created: dict[str, str] = {}
        self.stack_id = ""
        self.account_id = ""
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service, endpoint_url=self.endpoint_url, region_name=self.region
            )
        return self._clients[service]

    def note(self, text: str) -> None:
        self.patched.append(text)

    # ------------------------------------------------------------------ stack
    def build(self, timeout_s: float) -> LocalResources:
        stack = self._create_or_reuse_stack(timeout_s)
        self.stack_id = str(stack["StackId"])
        self.account_id = self.stack_id.split(":")[4]
        summaries = self._stack_resources()
        # Record every physical id first: a queue's RedrivePolicy names its DLQ, which moto may
        # list after it.
        for logical_id, physical_id in summaries.items():
            self._record_created(logical_id, physical_id)
        for logical_id in summaries:
            self._check_created(logical_id)
        missing = [logical_id for logical_id in self.template.resources if logical_id not in summaries]
        for logical_id in sorted(missing, key=self._creation_order):
            self._apply_missing_resource(logical_id)
        return LocalResources(
            stack_name=self.stack_name,
            stack_id=self.stack_id,
            region=self.region,
            account_id=self.account_id,
            endpoint_url=self.endpoint_url,
            parameters=dict(self.parameters),
            resource_types=dict(self.template.resource_types),
            physical_ids=dict(self.physical_ids),
            attributes={name: dict(values) for name, values in self.attributes.items()},
            outputs=self._outputs(stack, summaries),
            patched=tuple(self.patched),
            not_created=dict(self.not_created),
        )

    def _create_or_reuse_stack(self, timeout_s: float) -> dict[str, Any]:
        cloudformation = self.client("cloudformation")
        existing = self._describe_stack()
        if existing is None or existing["StackStatus"] != "CREATE_COMPLETE":
            cloudformation.create_stack(
                StackName=self.stack_name,
                TemplateBody=self.template.path.read_text(encoding="utf-8"),
                Parameters=[
                    {"ParameterKey": key, "ParameterValue": value} for key, value in self.overrides.items()
                ],
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            )
        deadline = time.monotonic() + timeout_s
        while True:
            stack = self._describe_stack()
            status = stack["StackStatus"] if stack else "MISSING"
            if stack is not None and status == "CREATE_COMPLETE":
                return stack
            if status.endswith("FAILED") or "ROLLBACK" in status or status == "MISSING":
                reason = stack.get("StackStatusReason", "") if stack else ""
                raise LocalStackError(f"stack {self.stack_name} is {status}: {reason}")
            if time.monotonic() > deadline:
                raise LocalStackError(f"stack {self.stack_name} still {status} after {timeout_s:.0f} s")
            time.sleep(_POLL_INTERVAL_S)

    def _describe_stack(self) -> dict[str, Any] | None:
        try:
            stacks = self.client("cloudformation").describe_stacks(StackName=self.stack_name)["Stacks"]
        except ClientError:
            return None
        return cast(dict[str, Any], stacks[0]) if stacks else None

    def _stack_resources(self) -> dict[str, str]:
        paginator = self.client("cloudformation").get_paginator("list_stack_resources")
        return {
            summary["LogicalResourceId"]: summary["PhysicalResourceId"]
            for page in paginator.paginate(StackName=self.stack_name)
            for summary in page["StackResourceSummaries"]
            if summary.get("LogicalResourceId")
        }

    def _outputs(self, stack: Mapping[str, Any], summaries: Mapping[str, str]) -> dict[str, str]:
        """moto's outputs with queue URLs moved to the endpoint, plus those moto could not make."""
        rewrite = {summaries[name]: url for name, url in self.physical_ids.items() if name in summaries}
        outputs = {
            str(output["OutputKey"]): rewrite.get(str(output["OutputValue"]), str(output["OutputValue"]))
            for output in stack.get("Outputs", [])
        }
        declared = cast(Mapping[str, Mapping[str, Any]], self.template.document.get("Outputs", {}))
        references = self._references()
        for key, spec in declared.items():
            if key in outputs or not self._condition_holds(spec):
                continue
            try:
                outputs[key] = str(resolve_value(to_marker(spec.get("Value")), references))
            except TemplateError:
                continue  # refers to something not created locally (the layer)
        return outputs

    # ------------------------------------------------------------------ references
    def _references(self) -> dict[str, str]:
        return _reference_values(
            self.region,
            self.account_id,
            self.stack_name,
            self.stack_id,
            self.parameters,
            self.physical_ids,
            self.attributes,
        )

    def _properties(self, logical_id: str) -> dict[str, Any]:
        """The resource's Properties with every reference resolved."""
        raw = self.template.resources[logical_id].get("Properties", {})
        return cast(
            dict[str, Any], resolve_value(to_marker(raw), self._references(), conditions=self.conditions)
        )

    def _condition_holds(self, spec: Mapping[str, Any]) -> bool:
        name = spec.get("Condition")
        return name is None or self.conditions.get(str(name), False)

    # ------------------------------------------------------------------ created by moto
    def _record_created(self, logical_id: str, physical_id: str) -> None:
        """Remember a created resource's ``!Ref`` and ``!GetAtt`` values."""
        kind = self.template.resource_types.get(logical_id)
        record: Callable[[str, str], None] | None = {
            "AWS::SQS::Queue": self._record_queue,
            "AWS::DynamoDB::Table": self._record_table,
            "AWS::S3::Bucket": self._record_bucket,
            "AWS::SNS::Topic": self._record_topic,
        }.get(kind or "")
        if record is None:
            self.physical_ids[logical_id] = physical_id
        else:
            record(logical_id, physical_id)

    def _check_created(self, logical_id: str) -> None:
        """Compare a created resource with the template; apply what moto's CloudFormation dropped."""
        check: Callable[[str], None] | None = {
            "AWS::SQS::Queue": self._check_queue,
            "AWS::DynamoDB::Table": self._check_table,
            "AWS::S3::Bucket": self._check_bucket,
        }.get(self.template.resource_types.get(logical_id) or "")
        if check is not None:
            check(logical_id)

    def _record_queue(self, logical_id: str, physical_id: str) -> None:
        sqs = self.client("sqs")
        name = physical_id.rstrip("/").rsplit("/", 1)[-1]
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]  # the URL as the endpoint serves it
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.physical_ids[logical_id] = url
        self.attributes[logical_id] = {"Arn": arn, "QueueName": name, "QueueUrl": url}

    def _check_queue(self, logical_id: str) -> None:
        sqs = self.client("sqs")
        url = self.physical_ids[logical_id]
        actual = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        expected = self._expected_queue_attributes(logical_id)
        differing = {key: value for key, value in expected.items() if not _same(key, actual.get(key), value)}
        if differing:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=differing)
            self.note(f"{logical_id}: set {', '.join(sorted(differing))} on the queue")

    def _expected_queue_attributes(self, logical_id: str) -> dict[str, str]:
        properties = self._properties(logical_id)
        expected: dict[str, str] = {
            key: str(properties[key])
            for key in (
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "DelaySeconds",
                "MaximumMessageSize",
                "ReceiveMessageWaitTimeSeconds",
            )
            if key in properties
        }
        if "RedrivePolicy" in properties:
            expected["RedrivePolicy"] = json.dumps(properties["RedrivePolicy"])
        if "SqsManagedSseEnabled" in properties:
            expected["SqsManagedSseEnabled"] = str(properties["SqsManagedSseEnabled"]).lower()
        return expected

    def _record_table(self, logical_id: str, name: str) -> None:
        table = self.client("dynamodb").describe_table(TableName=name)["Table"]
        self.physical_ids[logical_id] = name
        self.attributes[logical_id] = {"Arn": table["TableArn"]}
        if "LatestStreamArn" in table:
            self.attributes[logical_id]["StreamArn"] = table["LatestStreamArn"]

    def _check_table(self, logical_id: str) -> None:
        dynamodb = self.client("dynamodb")
        name = self.physical_ids[logical_id]
        table = dynamodb.describe_table(TableName=name)["Table"]
        properties = self._properties(logical_id)
        if _key_schema(table["KeySchema"]) != _key_schema(properties["KeySchema"]):
            raise LocalStackError(f"{logical_id}: key schema {table['KeySchema']} differs from the template")
        present = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
        missing = [
            index
            for index in properties.get("GlobalSecondaryIndexes", [])
            if index["IndexName"] not in present
        ]
        if missing:
            dynamodb.update_table(
                TableName=name,
                AttributeDefinitions=properties["AttributeDefinitions"],
                GlobalSecondaryIndexUpdates=[{"Create": index} for index in missing],
            )
            self.note(f"{logical_id}: created GSI {', '.join(index['IndexName'] for index in missing)}")
        ttl = properties.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            status = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if (
                status.get("TimeToLiveStatus") != "ENABLED"
                or status.get("AttributeName") != ttl["AttributeName"]
            ):
                dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
                self.note(f"{logical_id}: enabled TTL on {ttl['AttributeName']}")
        pitr = properties.get("PointInTimeRecoverySpecification")
        if pitr and pitr.get("PointInTimeRecoveryEnabled"):
            backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
            if backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] != "ENABLED":
                dynamodb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification=pitr)
                self.note(f"{logical_id}: enabled point-in-time recovery")

    def _record_bucket(self, logical_id: str, name: str) -> None:
        self.physical_ids[logical_id] = name
        self.attributes[logical_id] = {
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
        }

    def _check_bucket(self, logical_id: str) -> None:
        name = self.physical_ids[logical_id]
        properties = self._properties(logical_id)
        for key, apply in (
            ("BucketEncryption", self._bucket_encryption),
            ("VersioningConfiguration", self._bucket_versioning),
            ("LifecycleConfiguration", self._bucket_lifecycle),
            ("PublicAccessBlockConfiguration", self._bucket_public_access_block),
            ("OwnershipControls", self._bucket_ownership),
        ):
            if key in properties and apply(name, properties[key]):
                self.note(f"{logical_id}: applied {key}")

    def _bucket_encryption(self, name: str, spec: dict[str, Any]) -> bool:
        s3 = self.client("s3")
        rules = [
            {
                "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                "BucketKeyEnabled": bool(rule.get("BucketKeyEnabled", False)),
            }
            for rule in spec["ServerSideEncryptionConfiguration"]
        ]
        try:
            actual = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
        except ClientError:
            actual = []
        if actual == rules:
            return False
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        return True

    def _bucket_versioning(self, name: str, spec: dict[str, Any]) -> bool:
        s3 = self.client("s3")
        if s3.get_bucket_versioning(Bucket=name).get("Status") == spec["Status"]:
            return False
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": spec["Status"]})
        return True

    def _bucket_lifecycle(self, name: str, spec: dict[str, Any]) -> bool:
        s3 = self.client("s3")
        try:
            if s3.get_bucket_lifecycle_configuration(Bucket=name).get("Rules"):
                return False
        except ClientError:
            pass
        rules = [_lifecycle_rule(rule) for rule in spec["Rules"]]
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
        return True

    def _bucket_public_access_block(self, name: str, spec: dict[str, Any]) -> bool:
        s3 = self.client("s3")
        try:
            if s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"] == spec:
                return False
        except ClientError:
            pass
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=spec)
        return True

    def _bucket_ownership(self, name: str, spec: dict[str, Any]) -> bool:
        s3 = self.client("s3")
        try:
            if s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"] == spec:
                return False
        except ClientError:
            pass
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=spec)
        return True

    def _record_topic(self, logical_id: str, arn: str) -> None:
        self.physical_ids[logical_id] = arn
        self.attributes[logical_id] = {"TopicArn": arn, "TopicName": arn.rsplit(":", 1)[-1]}

    # ------------------------------------------------------------------ skipped by moto
    def _creation_order(self, logical_id: str) -> int:
        """Dependencies first: policies and the event destination name the configuration set."""
        kind = self.template.resource_types.get(logical_id, "")
        return _CREATION_ORDER.index(kind) if kind in _CREATION_ORDER else len(_CREATION_ORDER)

    def _apply_missing_resource(self, logical_id: str) -> None:
        """Make a resource moto's CloudFormation skipped, if it matters locally."""
        resource = self.template.resources[logical_id]
        kind = str(resource.get("Type"))
        if kind.startswith(_SKIPPED_BY_DESIGN):
            self.not_created[logical_id] = "SAM resource: the local runner calls handlers in-process"
            return
        if not self._condition_holds(resource):
            self.not_created[logical_id] = f"condition {resource['Condition']} is false"
            return
        apply = {
            "AWS::SES::ConfigurationSet": self._ses_configuration_set,
            "AWS::SES::ConfigurationSetEventDestination": self._ses_event_destination,
            "AWS::SNS::TopicPolicy": self._topic_policy,
            "AWS::SQS::QueuePolicy": self._queue_policy,
            "AWS::S3::BucketPolicy": self._bucket_policy,
            "AWS::SNS::Subscription": self._subscription,
            "AWS::CloudWatch::Alarm": self._alarm,
            "AWS::SecretsManager::Secret": self._secret,
        }.get(kind)
        if apply is None:
            self.not_created[logical_id] = f"{kind} is not supported by moto's CloudFormation"
            return
        try:
            apply(logical_id, self._properties(logical_id))
        except TemplateError as error:
            self.not_created[logical_id] = str(error)
        except ClientError as error:
            raise LocalStackError(f"{logical_id}: {error}") from error
        else:
            service = kind.split("::")[1]
            self.note(f"{logical_id}: applied with the {service} API (moto's CloudFormation skips {kind})")

    def _secret(self, logical_id: str, properties: dict[str, Any]) -> None:
        """A secret under the template's Name (else `<stack>-<logical id>`); `!Ref` is its ARN."""
        secrets = self.client("secretsmanager")
        name = str(properties.get("Name") or f"{self.stack_name}-{logical_id}")
        try:
            self.physical_ids[logical_id] = str(secrets.describe_secret(SecretId=name)["ARN"])
            return
        except secrets.exceptions.ResourceNotFoundException:
            pass
        value = properties.get("SecretString")
        if value is None:
            spec = dict(properties.get("GenerateSecretString") or {})
            options = {
                key: spec[key]
                for key in (
                    "PasswordLength",
                    "ExcludeCharacters",
                    "ExcludeNumbers",
                    "ExcludePunctuation",
                    "ExcludeUppercase",
                    "ExcludeLowercase",
                    "IncludeSpace",
                    "RequireEachIncludedType",
                )
                if key in spec
            }
            value = secrets.get_random_password(**options)["RandomPassword"]
        created = secrets.create_secret(
            Name=name, SecretString=str(value), Description=str(properties.get("Description", ""))
        )
        self.physical_ids[logical_id] = str(created["ARN"])

    def _ses_configuration_set(self, logical_id: str, properties: dict[str, Any]) -> None:
        name = str(properties.get("Name") or f"{self.stack_name}-{logical_id}")
        options = {
            key: properties[key] for key in ("ReputationOptions", "SendingOptions") if key in properties
        }
        try:
            self.client("sesv2").create_configuration_set(ConfigurationSetName=name, **options)
        except ClientError as error:
            if "AlreadyExists" not in error.response["Error"]["Code"]:
                raise
        self.physical_ids[logical_id] = name

    def _ses_event_destination(self, logical_id: str, properties: dict[str, Any]) -> None:
        destination = dict(properties["EventDestination"])
        if "SnsDestination" in destination:  # CloudFormation's spelling; SES v1 says SNSDestination
            destination["SNSDestination"] = destination.pop("SnsDestination")
        destination.setdefault("Name", logical_id)
        try:
            self.client("ses").create_configuration_set_event_destination(
                ConfigurationSetName=properties["ConfigurationSetName"], EventDestination=destination
            )
        except ClientError as error:
            if "AlreadyExists" not in error.response["Error"]["Code"]:
                raise
        self.physical_ids[logical_id] = str(destination["Name"])

    def _topic_policy(self, logical_id: str, properties: dict[str, Any]) -> None:
        for topic_arn in properties["Topics"]:
            self.client("sns").set_topic_attributes(
                TopicArn=topic_arn,
                AttributeName="Policy",
                AttributeValue=json.dumps(properties["PolicyDocument"]),
            )
        self.physical_ids[logical_id] = logical_id

    def _queue_policy(self, logical_id: str, properties: dict[str, Any]) -> None:
        for queue_url in properties["Queues"]:
            self.client("sqs").set_queue_attributes(
                QueueUrl=queue_url, Attributes={"Policy": json.dumps(properties["PolicyDocument"])}
            )
        self.physical_ids[logical_id] = logical_id

    def _bucket_policy(self, logical_id: str, properties: dict[str, Any]) -> None:
        # The local endpoint is plain HTTP on loopback, and moto enforces bucket policies: a
        # statement that denies requests without TLS (aws:SecureTransport) would refuse every
        # local request, so only that statement is left out here. The rest applies as written.
        document = dict(properties["PolicyDocument"])
        statements = [
            statement
            for statement in document.get("Statement", [])
            if "aws:SecureTransport" not in json.dumps(statement.get("Condition", {}))
        ]
        if statements:
            document["Statement"] = statements
            self.client("s3").put_bucket_policy(Bucket=properties["Bucket"], Policy=json.dumps(document))
        self.physical_ids[logical_id] = logical_id

    def _subscription(self, logical_id: str, properties: dict[str, Any]) -> None:
        protocol = properties["Protocol"]
        if protocol != "sqs":
            raise TemplateError(f"{protocol} subscriptions are not made locally")
        sns = self.client("sns")
        topic_arn, endpoint = properties["TopicArn"], properties["Endpoint"]
        existing = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
        for subscription in existing:
            if subscription["Protocol"] == protocol and subscription["Endpoint"] == endpoint:
                self.physical_ids[logical_id] = subscription["SubscriptionArn"]
                return
        attributes = {
            key: str(properties[key]).lower()
            if isinstance(properties[key], bool)
            else json.dumps(properties[key])
            for key in ("RawMessageDelivery", "FilterPolicy", "RedrivePolicy")
            if key in properties
        }
        response = sns.subscribe(
            TopicArn=topic_arn,
            Protocol=protocol,
            Endpoint=endpoint,
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )
        self.physical_ids[logical_id] = response["SubscriptionArn"]

    def _alarm(self, logical_id: str, properties: dict[str, Any]) -> None:
        alarm = dict(properties)
        alarm.setdefault("AlarmName", f"{self.stack_name}-{logical_id}")
        alarm["Threshold"] = float(alarm["Threshold"])
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if key in alarm:
                alarm[key] = int(alarm[key])
        self.client("cloudwatch").put_metric_alarm(**alarm)
        self.physical_ids[logical_id] = str(alarm["AlarmName"])


# ---------------------------------------------------------------------- helpers
def _reference_values(
    region: str,
    account_id: str,
    stack_name: str,
    stack_id: str,
    parameters: Mapping[str, str],
    physical_ids: Mapping[str, str],
    attributes: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """Pseudo parameters, parameters, ``!Ref`` values and ``"Logical.Attribute"`` values."""
    values: dict[str, str] = {
        "AWS::Region": region,
        "AWS::AccountId": account_id,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::StackName": stack_name,
        "AWS::StackId": stack_id,
        **parameters,
        **physical_ids,
    }
    for logical_id, named in attributes.items():
        values.update({f"{logical_id}.{name}": value for name, value in named.items()})
    return values


def _same(key: str, actual: str | None, expected: str) -> bool:
    """Compare a queue attribute; JSON attributes compare by content, not spelling."""
    if actual is None:
        return False
    if key == "RedrivePolicy":
        parsed_actual = {name: str(value) for name, value in json.loads(actual).items()}
        parsed_expected = {name: str(value) for name, value in json.loads(expected).items()}
        return parsed_actual == parsed_expected
    return actual == expected


def _key_schema(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((element["AttributeName"], element["KeyType"]) for element in schema)


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """One CloudFormation S3 lifecycle rule in the S3 API's shape."""
    translated: dict[str, Any] = {
        "ID": rule.get("Id", "rule"),
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "ExpirationInDays" in rule:
        translated["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "NoncurrentVersionExpiration" in rule:
        noncurrent = rule["NoncurrentVersionExpiration"]
        translated["NoncurrentVersionExpiration"] = {
            key: int(value)
            for key, value in noncurrent.items()
            if key in ("NoncurrentDays", "NewerNoncurrentVersions")
        }
    elif "NoncurrentVersionExpirationInDays" in rule:
        translated["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpirationInDays"])
        }
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        translated["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    return translated
