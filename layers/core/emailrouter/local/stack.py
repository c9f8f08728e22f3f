"""The embedded local stack: moto (resources from template.yaml), the Dataverse emulator,
Dovecot, and the runner driving the real handlers. Everything listens on 127.0.0.1.

While it runs, its endpoints are in `<workdir>/stack.json`; `stop()` ends every process it
started and removes the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from emailrouter import aws
from emailrouter.local import moto_atomic, moto_speed
from emailrouter.local.runner import FunctionBinding, LocalRunner, QueueBinding, ScheduleBinding, rate_seconds

REGION = "eu-west-1"
REPO_ROOT = Path(__file__).resolve().parents[4]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class StackEndpoints:
    aws_endpoint: str
    region: str
    dataverse_url: str
    dataverse_token: str
    pop3_port: int
    imap_port: int
    resources: dict[str, str] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def _quiet_local_servers() -> None:
    """moto logs every request and warns about each template resource it skips; the local
    stack reports what matters itself."""
    import logging
    import warnings

    for name in ("werkzeug", "moto", "moto.cloudformation.parsing"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"moto\..*")
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def _reset_moto(endpoint: str) -> None:
    import requests

    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()


class LocalStack:
    def __init__(
        self,
        workdir: Path | None = None,
        template: Path | None = None,
        functions_dir: Path | None = None,
        time_scale: float = 1.0,
        with_dovecot: bool = True,
    ) -> None:
        self.workdir = (workdir or REPO_ROOT / ".local").resolve()
        self.template = template or REPO_ROOT / "template.yaml"
        self.functions_dir = functions_dir or REPO_ROOT / "functions"
        self.time_scale = time_scale
        self.with_dovecot = with_dovecot
        self.endpoints: StackEndpoints | None = None
        self.runner: LocalRunner | None = None
        self.dataverse: Any = None
        self.dovecot: Any = None
        self._moto: Any = None
        self._tmp: Path | None = None
        self._saved_env: dict[str, str | None] = {}

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> StackEndpoints:
        from moto.server import ThreadedMotoServer

        moto_speed.apply()
        moto_atomic.apply()

        _quiet_local_servers()

        from emailrouter.local.resources import create_local_resources
        from emulators.dataverse import DataverseEmulator

        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix="emailrouter-local-"))
            port = free_port()
            self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self._moto.start()
            # boto3 keeps connections alive; non-daemon handler threads would make stop() wait
            # for each of them to time out.
            self._moto._server.daemon_threads = True
            endpoint = f"http://127.0.0.1:{port}"
            # moto keeps its state per process, shared by every server in it: start clean.
            _reset_moto(endpoint)
            self._set_env(
                {
                    "AWS_ENDPOINT_URL": endpoint,
                    "AWS_ACCESS_KEY_ID": "local",
                    "AWS_SECRET_ACCESS_KEY": "local",
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_REGION": REGION,
                }
            )
            resources = create_local_resources(self.template, endpoint, REGION)
            token = secrets.token_urlsafe(24)
            self.dataverse = DataverseEmulator(host="127.0.0.1", port=0, tokens=(token,), org_name="demo")
            self.dataverse.start()
            pop3_port = imap_port = 0
            if self.with_dovecot:
                from emailrouter.local.dovecot import DovecotServer

                self.dovecot = DovecotServer(self._tmp / "dovecot")
                self.dovecot.start()
                pop3_port, imap_port = self.dovecot.pop3_port, self.dovecot.imap_port
            environment = self._function_environment(resources)
            self._set_env(environment)
            self.endpoints = StackEndpoints(
                aws_endpoint=endpoint,
                region=REGION,
                dataverse_url=self.dataverse.url,
                dataverse_token=token,
                pop3_port=pop3_port,
                imap_port=imap_port,
                resources=dict(resources.physical_ids),
                environment=environment,
            )
            self.runner = self._build_runner(resources)
            self._publish_ses_events(endpoint, resources)
            from emailrouter.runtime import reset_runtime

            reset_runtime()
            (self.workdir / "stack.json").write_text(self.endpoints.to_json(), encoding="utf-8")
            return self.endpoints
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything this stack started; safe to call twice."""
        if self.runner is not None:
            self.runner.stop()
        if self.endpoints is not None:
            with contextlib.suppress(Exception):
                _reset_moto(self.endpoints.aws_endpoint)
        for component in (self.dovecot, self.dataverse, self._moto):
            if component is not None:
                with contextlib.suppress(Exception):  # keep stopping the rest
                    component.stop()
        self.dovecot = self.dataverse = self._moto = None
        (self.workdir / "stack.json").unlink(missing_ok=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._restore_env()

    def stop_on_signals(self) -> None:
        """Ctrl-C and SIGTERM end the runner loop so `stop()` runs. Set explicitly: a process a
        shell starts in the background inherits SIGINT as ignored."""

        def _stop(signum: int, frame: FrameType | None) -> None:
            if self.runner is not None:
                self.runner.stop()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- wiring ------------------------------------------------------------------------
    def _function_environment(self, resources: Any) -> dict[str, str]:
        from emailrouter.local.template import load_template, resolve_environment

        template = load_template(self.template)
        environment: dict[str, str] = {}
        for function in template.functions.values():
            environment.update(resolve_environment(function, resources))
        environment.update(
            {
                "LOCAL_MODE": "true",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": os.environ.get("EMAILROUTER_LOCAL_LOG_LEVEL", "WARNING"),
                "POWERTOOLS_IDEMPOTENCY_DISABLED": "false",
            }
        )
        return environment

    def _build_runner(self, resources: Any) -> LocalRunner:
        from emailrouter.local.template import load_template

        template = load_template(self.template)
        functions: list[FunctionBinding] = []
        queues: list[QueueBinding] = []
        schedules: list[ScheduleBinding] = []
        for name, spec in template.functions.items():
            functions.append(
                FunctionBinding(name, self.functions_dir / spec.code_dir / "app.py", spec.timeout)
            )
            for sqs in spec.sqs_events:
                queue = template.queues[sqs.queue_logical_id]
                queues.append(
                    QueueBinding(
                        function=name,
                        queue_url=resources.queue_urls[sqs.queue_logical_id],
                        queue_arn=resources.queue_arns[sqs.queue_logical_id],
                        batch_size=sqs.batch_size,
                        visibility_timeout=queue.visibility_timeout,
                    )
                )
            for schedule in spec.schedules:
                if schedule.enabled:
                    schedules.append(
                        ScheduleBinding(name, f"{name}-schedule", rate_seconds(schedule.expression))
                    )
        return LocalRunner(
            functions, queues, schedules, REGION, time_scale=self.time_scale, sqs_client=aws.client("sqs")
        )

    def _publish_ses_events(self, endpoint: str, resources: Any) -> None:
        """moto records sent mail but publishes no SES events; the local stand-in does, to the
        configuration set's topic, so `ses_events` sees what it would in AWS."""
        from emailrouter.local.ses_events import LocalSesEventPublisher

        topic = resources.physical_ids.get("SesEventsTopic")
        if topic and self.runner is not None:
            self.runner.pumps.append(LocalSesEventPublisher(endpoint, topic, REGION, in_process=True).pump)

    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
