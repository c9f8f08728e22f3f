"""Run the Dataverse emulator in the foreground: ``python -m emulators.dataverse --port 8790``.

Prints one JSON line with the URLs once listening; SIGTERM or Ctrl-C stop it cleanly.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from emulators.dataverse.server import DataverseEmulator


def _rate_limit(text: str) -> tuple[int, float]:
    requests, _, window = text.partition("/")
    return int(requests), float(window or 300)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.dataverse", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument(
        "--token", action="append", help="accepted bearer token (repeatable; default test-token)"
    )
    parser.add_argument("--org-name", default="demo")
    parser.add_argument(
        "--rate-limit", type=_rate_limit, help="service protection, e.g. 6000/300 (requests/seconds)"
    )
    args = parser.parse_args(argv)

    emulator = DataverseEmulator(
        host=args.host,
        port=args.port,
        tokens=tuple(args.token or ("test-token",)),
        org_name=args.org_name,
        rate_limit=args.rate_limit,
    )
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    emulator.start()
    print(json.dumps({"url": emulator.url, "api_url": emulator.api_url}), flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
