"""Dataverse Web API v9.2 emulator: a wire-faithful OData endpoint for tests and the local stack."""

from __future__ import annotations

from emulators.dataverse.faults import FaultRule
from emulators.dataverse.server import DataverseEmulator
from emulators.dataverse.throttling import RateLimit

__all__ = ["DataverseEmulator", "FaultRule", "RateLimit"]
