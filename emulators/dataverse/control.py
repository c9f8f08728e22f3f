"""The ``/_emulator/`` control endpoints (no auth): seed, reset, faults, limits, stats, journal, dump.

They sit outside ``/api/data`` so nothing a Web API client does can reach them by accident, and
they are what a test or the local stack uses to arrange data and misbehaviour over HTTP.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from emulators.dataverse.faults import FaultRule
from emulators.dataverse.protocol import ApiResponse
from emulators.dataverse.seeding import SeedError
from emulators.dataverse.throttling import RateLimit

if TYPE_CHECKING:
    from emulators.dataverse.server import DataverseEmulator


def _json(status: int, payload: Any) -> ApiResponse:
    return ApiResponse(status, {"Content-Type": "application/json"}, json.dumps(payload).encode())


def _problem(message: str, status: int = 400) -> ApiResponse:
    return _json(status, {"error": message})


def handle_control(emulator: DataverseEmulator, method: str, path: str, body: bytes) -> ApiResponse:
    """Route ``/_emulator/<path>``."""
    try:
        document: Any = json.loads(body) if body.strip() else {}
    except json.JSONDecodeError as error:
        return _problem(f"invalid JSON: {error}")
    try:
        match method, path.strip("/").split("/"):
            case "GET", ["health"]:
                return _json(200, {"status": "ok", "url": emulator.url})
            case "POST", ["seed"]:
                if not isinstance(document, dict):
                    return _problem('expected {"<entity set>": [rows...]}')
                return _json(200, {"ids": emulator.seed(document)})
            case "POST", ["reset"]:
                emulator.reset()
                return ApiResponse(204)
            case "GET", ["faults"]:
                return _json(200, {"rules": [vars(rule) for rule in emulator.faults.rules()]})
            case "POST", ["faults"]:
                rules = document.get("rules") if isinstance(document, dict) else None
                if not isinstance(rules, list):
                    return _problem('expected {"rules": [...], "seed": <int|null>}')
                emulator.set_faults(rules, seed=document.get("seed"))
                return ApiResponse(204)
            case "DELETE", ["faults"]:
                emulator.clear_faults()
                return ApiResponse(204)
            case "POST", ["limits"]:
                requests = document.get("requests") if isinstance(document, dict) else None
                window = document.get("window_seconds", 300) if isinstance(document, dict) else 300
                emulator.set_rate_limit(None if requests is None else (int(requests), float(window)))
                return ApiResponse(204)
            case "GET", ["stats"]:
                return _json(200, emulator.stats())
            case "GET", ["journal"]:
                return _json(200, {"entries": emulator.journal.as_json(), "now": time.monotonic()})
            case "DELETE", ["journal"]:
                emulator.journal.reset()
                return ApiResponse(204)
            case "GET", ["dump", set_name]:
                return _json(200, {"value": emulator.rows(set_name)})
    except (SeedError, ValueError, TypeError, KeyError) as error:
        return _problem(str(error))
    return _problem(f"no control endpoint {method} /_emulator/{path}", status=404)


def fault_rules(rules: list[FaultRule | dict[str, Any]]) -> list[FaultRule]:
    return [rule if isinstance(rule, FaultRule) else FaultRule.from_dict(rule) for rule in rules]


def rate_limit_of(limit: tuple[int, float] | RateLimit | None) -> RateLimit | None:
    if limit is None or isinstance(limit, RateLimit):
        return limit
    requests, window = limit
    return RateLimit(int(requests), float(window))
