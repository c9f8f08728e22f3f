"""`emailrouter local up`: loopback only, endpoints in stack.json while running, Ctrl-C stops
everything and leaves no process or file behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_local_up_serves_on_loopback_and_stops_cleanly(tmp_path: Path) -> None:
    workdir = tmp_path / "local"
    process = subprocess.Popen(
        [sys.executable, "-m", "emailrouter.cli.main", "local", "up", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        stack_file = workdir / "stack.json"
        deadline = time.monotonic() + 60
        while not stack_file.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert stack_file.exists(), process.stdout.read() if process.stdout else ""
        stack = json.loads(stack_file.read_text())
        assert stack["aws_endpoint"].startswith("http://127.0.0.1:")
        assert stack["dataverse_url"].startswith("http://127.0.0.1:")
        for port in (stack["pop3_port"], stack["imap_port"]):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                assert sock.recv(64).startswith((b"+OK", b"* OK"))
        queues = requests.get(f"{stack['aws_endpoint']}/moto-api/data.json", timeout=10).json()["sqs"]
        assert queues  # the template's queues exist
        dovecot_pids = _children(process.pid)
        assert dovecot_pids, "Dovecot runs as a child of the stack"

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not stack_file.exists()
    time.sleep(0.5)
    assert all(
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        for pid in dovecot_pids
    )
