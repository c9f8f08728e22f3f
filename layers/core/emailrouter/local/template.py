"""template.yaml as typed models: the functions, their events and the queues they consume.

The local stack and the tests read the deployment template instead of repeating its values, so
a timeout or a batch size changed in template.yaml is what the local runner uses too.

Example:
    >>> stack = load_stack_template(Path("template.yaml"))
    >>> stack.functions["DeliverInboundFunction"].sqs_events[0].batch_size
    10
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import yaml

# Intrinsic functions whose YAML short form is "!Name" and long form "Fn::Name".
_FN_TAGS = (
    "And",
    "Base64",
    "Cidr",
    "Equals",
    "FindInMap",
    "GetAZs",
    "If",
    "ImportValue",
    "Join",
    "Not",
    "Or",
    "Select",
    "Split",
    "Sub",
    "Transform",
)
_SUB_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_DEFAULT_FUNCTION_TIMEOUT_S = 3
_DEFAULT_FUNCTION_MEMORY_MB = 128
_DEFAULT_VISIBILITY_TIMEOUT_S = 30


class TemplateError(Exception):
    """template.yaml cannot be read, or a value in it cannot be resolved."""


# --------------------------------------------------------------------------- markers
@dataclass(frozen=True)
class Ref:
    """An unresolved ``!Ref``: a logical id, a parameter or a pseudo parameter (``AWS::Region``)."""

    name: str


@dataclass(frozen=True)
class GetAtt:
    """An unresolved ``!GetAtt LogicalId.Attribute``."""

    logical_id: str
    attribute: str

    @property
    def key(self) -> str:
        """The key a physical-values mapping uses for this attribute: ``"Queue.Arn"``."""
        return f"{self.logical_id}.{self.attribute}"


@dataclass(frozen=True)
class Intrinsic:
    """Any other unresolved intrinsic function, e.g. ``Intrinsic("Fn::Sub", "...")``."""

    function: str
    argument: TemplateValue


type TemplateValue = (
    str
    | int
    | float
    | bool
    | Ref
    | GetAtt
    | Intrinsic
    | list[TemplateValue]
    | dict[str, TemplateValue]
    | None
)


# --------------------------------------------------------------------------- models
@dataclass(frozen=True)
class SqsEventSpec:
    """An ``SQS`` event source of a function."""

    name: str
    queue_logical_id: str
    batch_size: int
    max_batching_window_s: int
    report_batch_item_failures: bool
    maximum_concurrency: int | None = None  # ScalingConfig: concurrent invocations at most


@dataclass(frozen=True)
class ScheduleSpec:
    """A ``ScheduleV2`` (EventBridge Scheduler) event of a function."""

    name: str
    expression: str
    enabled: bool
    dead_letter_logical_id: str | None = None
    max_retry_attempts: int | None = None


type EventSpec = SqsEventSpec | ScheduleSpec


@dataclass(frozen=True)
class FunctionSpec:
    """One ``AWS::Serverless::Function`` with the template's Globals applied."""

    logical_id: str
    code_uri: str
    handler: str
    handler_path: Path
    handler_function: str
    timeout: int
    memory: int
    environment: Mapping[str, TemplateValue]
    events: tuple[EventSpec, ...] = ()

    @property
    def code_dir(self) -> str:
        """The function's directory name under functions/ (``"dispatch"`` for functions/dispatch/)."""
        return Path(self.code_uri).name

    @property
    def sqs_events(self) -> tuple[SqsEventSpec, ...]:
        """The function's SQS event sources, in template order."""
        return tuple(event for event in self.events if isinstance(event, SqsEventSpec))

    @property
    def schedules(self) -> tuple[ScheduleSpec, ...]:
        """The function's schedules, in template order."""
        return tuple(event for event in self.events if isinstance(event, ScheduleSpec))


@dataclass(frozen=True)
class QueueSpec:
    """One ``AWS::SQS::Queue`` and its redrive policy."""

    logical_id: str
    visibility_timeout: int
    dlq_logical_id: str | None
    max_receive_count: int | None
    message_retention_s: int | None = None
    fifo: bool = False


@dataclass(frozen=True)
class StackTemplate:
    """The parts of template.yaml the local stack and the tests need.

    ``document`` is the whole template in CloudFormation's long (JSON) form: short tags such as
    ``!Ref X`` read as ``{"Ref": "X"}``, so it can be passed on to CloudFormation APIs unchanged.
    """

    path: Path
    document: Mapping[str, Any]
    parameter_defaults: dict[str, str]
    functions: dict[str, FunctionSpec]
    queues: dict[str, QueueSpec]
    resource_types: dict[str, str] = field(default_factory=dict)

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        """Every resource of the template by logical id (long form)."""
        return cast(Mapping[str, Mapping[str, Any]], self.document.get("Resources", {}))

    def logical_ids_of_type(self, resource_type: str) -> list[str]:
        """Logical ids of the resources of one type, in template order."""
        return [name for name, kind in self.resource_types.items() if kind == resource_type]

    def consumers_of(self, queue_logical_id: str) -> list[tuple[FunctionSpec, SqsEventSpec]]:
        """The functions (and their event) that consume a queue."""
        return [
            (function, event)
            for function in self.functions.values()
            for event in function.sqs_events
            if event.queue_logical_id == queue_logical_id
        ]

    def evaluate_conditions(self, parameters: Mapping[str, str] | None = None) -> dict[str, bool]:
        """The template's Conditions, evaluated with the given parameter values over the defaults."""
        values: dict[str, str] = {**self.parameter_defaults, **(parameters or {})}
        raw = cast(Mapping[str, Any], self.document.get("Conditions", {}))
        results: dict[str, bool] = {}

        def evaluate(name: str) -> bool:
            if name not in results:
                if name not in raw:
                    raise TemplateError(f"unknown condition {name!r}")
                results[name] = bool(resolve_value(to_marker(raw[name]), values, conditions=evaluate))
            return results[name]

        for name in raw:
            evaluate(name)
        return results


# --------------------------------------------------------------------------- loading
class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short tags into their long (JSON) form."""


def _construct_tag(function: str) -> Callable[[yaml.SafeLoader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(cast(yaml.MappingNode, node), deep=True)
        if function == "Fn::GetAtt" and isinstance(value, str):
            logical_id, _, attribute = value.partition(".")
            value = [logical_id, attribute]
        return {function: value}

    return construct


def _construct_timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    # AWSTemplateFormatVersion 2010-09-09 must stay a string, as CloudFormation reads it.
    return str(loader.construct_scalar(cast(yaml.ScalarNode, node)))


_TemplateLoader.add_constructor("!Ref", _construct_tag("Ref"))
_TemplateLoader.add_constructor("!Condition", _construct_tag("Condition"))
_TemplateLoader.add_constructor("!GetAtt", _construct_tag("Fn::GetAtt"))
for _name in _FN_TAGS:
    _TemplateLoader.add_constructor(f"!{_name}", _construct_tag(f"Fn::{_name}"))
_TemplateLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_text)


def load_template_document(path: Path) -> dict[str, Any]:
    """Read a CloudFormation/SAM YAML template into its long (JSON) form."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_TemplateLoader)  # noqa: S506
    except (OSError, yaml.YAMLError) as error:
        raise TemplateError(f"cannot read {path}: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path} is not a CloudFormation template (no Resources)")
    return document


def to_marker(value: Any) -> TemplateValue:
    """Turn long-form intrinsics into ``Ref`` / ``GetAtt`` / ``Intrinsic`` markers, recursively."""
    if isinstance(value, dict):
        if len(value) == 1:
            (key, argument), *_ = value.items()
            if key == "Ref" and isinstance(argument, str):
                return Ref(argument)
            if key == "Fn::GetAtt":
                parts = argument.split(".", 1) if isinstance(argument, str) else list(argument)
                return GetAtt(str(parts[0]), str(parts[1]))
            if key.startswith("Fn::") or (key == "Condition" and isinstance(argument, str)):
                return Intrinsic(key, to_marker(argument))
        return {str(key): to_marker(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_marker(item) for item in value]
    return cast(TemplateValue, value)


def load_stack_template(path: Path) -> StackTemplate:
    """Read template.yaml into a :class:`StackTemplate`."""
    document = load_template_document(path)
    resources = cast(dict[str, dict[str, Any]], document["Resources"])
    globals_ = cast(dict[str, Any], document.get("Globals", {}).get("Function", {}))
    functions: dict[str, FunctionSpec] = {}
    queues: dict[str, QueueSpec] = {}
    for logical_id, resource in resources.items():
        kind = resource.get("Type")
        properties = cast(dict[str, Any], resource.get("Properties", {}))
        if kind == "AWS::Serverless::Function":
            functions[logical_id] = _function_spec(logical_id, properties, globals_)
        elif kind == "AWS::SQS::Queue":
            queues[logical_id] = _queue_spec(logical_id, properties)
    parameters = cast(dict[str, dict[str, Any]], document.get("Parameters", {}))
    return StackTemplate(
        path=path,
        document=document,
        parameter_defaults={
            name: _scalar_text(spec["Default"]) for name, spec in parameters.items() if "Default" in spec
        },
        functions=functions,
        queues=queues,
        resource_types={name: str(resource.get("Type")) for name, resource in resources.items()},
    )


def _merge_globals(properties: dict[str, Any], globals_: dict[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps merge (resource wins), lists add up, scalars are overridden."""
    merged: dict[str, Any] = dict(globals_)
    for key, value in properties.items():
        inherited = merged.get(key)
        if isinstance(inherited, dict) and isinstance(value, dict):
            merged[key] = _merge_globals(value, inherited)
        elif isinstance(inherited, list) and isinstance(value, list):
            merged[key] = inherited + value
        else:
            merged[key] = value
    return merged


def _function_spec(logical_id: str, properties: dict[str, Any], globals_: dict[str, Any]) -> FunctionSpec:
    merged = _merge_globals(properties, globals_)
    code_uri = str(merged.get("CodeUri", ""))
    handler = str(merged.get("Handler", ""))
    module, _, function_name = handler.rpartition(".")
    if not module or not function_name:
        raise TemplateError(f"{logical_id}: Handler {handler!r} is not module.function")
    events = tuple(
        _event_spec(logical_id, name, cast(dict[str, Any], event))
        for name, event in cast(dict[str, Any], merged.get("Events", {})).items()
    )
    variables = cast(dict[str, Any], merged.get("Environment", {}).get("Variables", {}))
    return FunctionSpec(
        logical_id=logical_id,
        code_uri=code_uri,
        handler=handler,
        handler_path=Path(code_uri) / (module.replace(".", "/") + ".py"),
        handler_function=function_name,
        timeout=int(merged.get("Timeout", _DEFAULT_FUNCTION_TIMEOUT_S)),
        memory=int(merged.get("MemorySize", _DEFAULT_FUNCTION_MEMORY_MB)),
        environment={name: to_marker(value) for name, value in variables.items()},
        events=tuple(event for event in events if event is not None),
    )


def _event_spec(function_id: str, name: str, event: dict[str, Any]) -> EventSpec | None:
    properties = cast(dict[str, Any], event.get("Properties", {}))
    kind = event.get("Type")
    if kind == "SQS":
        scaling = cast(dict[str, Any], properties.get("ScalingConfig", {}))
        queue = to_marker(properties.get("Queue"))
        if not isinstance(queue, GetAtt) or queue.attribute != "Arn":
            raise TemplateError(f"{function_id}.{name}: Queue must be !GetAtt <Queue>.Arn")
        return SqsEventSpec(
            name=name,
            queue_logical_id=queue.logical_id,
            batch_size=int(properties.get("BatchSize", 10)),
            max_batching_window_s=int(properties.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures="ReportBatchItemFailures"
            in properties.get("FunctionResponseTypes", []),
            maximum_concurrency=int(scaling["MaximumConcurrency"])
            if "MaximumConcurrency" in scaling
            else None,
        )
    if kind in ("ScheduleV2", "Schedule"):
        dead_letter = to_marker(properties.get("DeadLetterConfig", {}).get("Arn"))
        retry = cast(dict[str, Any], properties.get("RetryPolicy", {}))
        enabled = properties.get("State", "ENABLED") == "ENABLED" and properties.get("Enabled", True)
        return ScheduleSpec(
            name=name,
            expression=str(properties.get("ScheduleExpression", properties.get("Schedule", ""))),
            enabled=bool(enabled),
            dead_letter_logical_id=dead_letter.logical_id if isinstance(dead_letter, GetAtt) else None,
            max_retry_attempts=int(retry["MaximumRetryAttempts"])
            if "MaximumRetryAttempts" in retry
            else None,
        )
    return None  # other event types are not run by the local stack


def _queue_spec(logical_id: str, properties: dict[str, Any]) -> QueueSpec:
    redrive = cast(dict[str, Any], properties.get("RedrivePolicy") or {})
    target = to_marker(redrive.get("deadLetterTargetArn"))
    if redrive and not isinstance(target, GetAtt):
        raise TemplateError(f"{logical_id}: deadLetterTargetArn must be !GetAtt <Queue>.Arn")
    retention = properties.get("MessageRetentionPeriod")
    return QueueSpec(
        logical_id=logical_id,
        visibility_timeout=int(properties.get("VisibilityTimeout", _DEFAULT_VISIBILITY_TIMEOUT_S)),
        dlq_logical_id=target.logical_id if isinstance(target, GetAtt) else None,
        max_receive_count=int(redrive["maxReceiveCount"]) if "maxReceiveCount" in redrive else None,
        message_retention_s=int(retention) if retention is not None else None,
        fifo=bool(properties.get("FifoQueue", False)),
    )


# --------------------------------------------------------------------------- resolving
def _scalar_text(value: object) -> str:
    """How CloudFormation renders a scalar where a string is expected."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve_value(
    value: TemplateValue,
    physical: Mapping[str, str],
    *,
    conditions: Callable[[str], bool] | Mapping[str, bool] | None = None,
) -> Any:
    """Resolve the intrinsic functions in ``value`` against physical values.

    ``physical`` maps what ``!Ref`` names (logical ids, parameters, pseudo parameters such as
    ``AWS::Region``) to their values, and ``"LogicalId.Attribute"`` to ``!GetAtt`` values.
    Supports Ref, GetAtt, Sub, Join, Select, Split, If, Equals, Not, And, Or and Condition.

    Raises:
        TemplateError: a name is missing from ``physical`` or the function is not supported.
    """

    def condition(name: str) -> bool:
        if callable(conditions):
            return conditions(name)
        if conditions is not None and name in conditions:
            return conditions[name]
        raise TemplateError(f"condition {name!r} is not known here")

    def lookup(key: str) -> str:
        if key not in physical:
            raise TemplateError(f"no physical value for {key!r}")
        return physical[key]

    def resolve(item: TemplateValue) -> Any:
        if isinstance(item, Ref):
            return lookup(item.name)
        if isinstance(item, GetAtt):
            return lookup(item.key)
        if isinstance(item, list):
            return [resolve(element) for element in item]
        if isinstance(item, dict):
            return {key: resolve(element) for key, element in item.items()}
        if isinstance(item, Intrinsic):
            return _resolve_intrinsic(item, resolve, lookup, condition)
        return item

    return resolve(value)


def _resolve_intrinsic(
    item: Intrinsic,
    resolve: Callable[[TemplateValue], Any],
    lookup: Callable[[str], str],
    condition: Callable[[str], bool],
) -> Any:
    function, argument = item.function, item.argument
    if function == "Condition" and isinstance(argument, str):
        return condition(argument)
    if function == "Fn::Sub":
        template, variables = (argument, {}) if isinstance(argument, str) else cast(list[Any], argument)
        local = {
            name: _scalar_text(resolve(value)) for name, value in cast(dict[str, Any], variables).items()
        }
        return _substitute(str(template), local, lookup)
    if function == "Fn::If":
        name, when_true, when_false = cast(list[Any], argument)
        return resolve(when_true if condition(str(name)) else when_false)
    arguments = resolve(argument)
    if function == "Fn::Join":
        separator, items = arguments
        return str(separator).join(_scalar_text(element) for element in items)
    if function == "Fn::Select":
        index, items = arguments
        return items[int(index)]
    if function == "Fn::Split":
        separator, text = arguments
        return str(text).split(str(separator))
    if function == "Fn::Equals":
        left, right = arguments
        return _scalar_text(left) == _scalar_text(right)
    if function == "Fn::Not":
        return not arguments[0]
    if function == "Fn::And":
        return all(arguments)
    if function == "Fn::Or":
        return any(arguments)
    raise TemplateError(f"{function} is not supported by the local resolver")


def _substitute(template: str, local: Mapping[str, str], lookup: Callable[[str], str]) -> str:
    """Fn::Sub: ``${Name}``, ``${Logical.Attribute}``, ``${AWS::Region}``; ``${!Literal}`` stays."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"
        if name in local:
            return local[name]
        return lookup(name)

    return _SUB_PLACEHOLDER.sub(replace, template)


class ReferenceSource(Protocol):
    """Anything that can list the values references resolve to (``LocalResources`` does)."""

    def reference_values(self) -> dict[str, str]:
        """Names (``LogicalId``, ``LogicalId.Attribute``, parameters) to values."""
        ...


def resolve_environment(fn: FunctionSpec, physical: Mapping[str, str] | ReferenceSource) -> dict[str, str]:
    """A function's environment variables with every reference resolved, as Lambda sets them.

    ``physical`` is the mapping :func:`resolve_value` takes, or an object with
    ``reference_values()`` returning one, such as the local stack's ``LocalResources``.

    Example:
        >>> env = resolve_environment(stack.functions["DispatchFunction"], resources.reference_values())
        >>> env["POLL_JOBS_QUEUE_URL"]
        'http://127.0.0.1:5000/123456789012/emailrouter-local-PollJobsQueue-...'
    """
    values = physical if isinstance(physical, Mapping) else physical.reference_values()
    return {name: _scalar_text(resolve_value(value, values)) for name, value in fn.environment.items()}


load_template = load_stack_template
"""Alias of :func:`load_stack_template`."""
