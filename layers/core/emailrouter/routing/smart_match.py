"""Smart matching, as Dynamics 365 does it: the subject's words (after the noise-word expression
strips prefixes such as RE: and FW:, and the tracking token is removed) and the participants'
addresses are hashed; an earlier email matches when its subject hashes are the same (subject delta
0) and at least HashMinAddressCount participant hashes are shared. At most HashMaxCount hashes of
each kind are kept per email.

Every expression here runs on untrusted text, so each is linear: the subject arrives normalised
and at most SUBJECT_MAX_CHARS long (mime/parse.py), the built-in expressions have no two
quantifiers that can match the same characters in turn, and the tenant's noise-word expression
runs under the `regex` engine with a time limit (an expression that exceeds it is replaced by the
default for that message).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import regex

from emailrouter.mime.parse import SUBJECT_MAX_CHARS
from emailrouter.observability import logger
from emailrouter.tenancy.models import DEFAULT_NOISE_REGEX

if TYPE_CHECKING:
    from collections.abc import Iterable

    from emailrouter.crm.tracking_token import TrackingTokenFormat
    from emailrouter.tenancy.models import CorrelationConfig

_WORD = re.compile(r"\w+", re.UNICODE)
_FORWARD = re.compile(r"\s*(?:fw|fwd|wg|tr|rv|enc|vs|doorst)\s*(?:\[\d+\]\s*)?:", re.IGNORECASE)
NOISE_TIMEOUT_SECONDS = 0.05  # a tenant's expression gets this much CPU per subject


@lru_cache(maxsize=32)
def _noise(expression: str) -> regex.Pattern[str]:
    return regex.compile(expression, regex.IGNORECASE | regex.VERSION0)


def strip_noise(subject: str, expression: str) -> str:
    """`subject` without what the noise-word expression matches; the default expression is used
    when the tenant's takes longer than NOISE_TIMEOUT_SECONDS."""
    try:
        return _noise(expression).sub("", subject, timeout=NOISE_TIMEOUT_SECONDS)
    except TimeoutError:
        logger.warning(
            "noise-word expression timed out; the default was used", extra={"length": len(subject)}
        )
        return _noise(DEFAULT_NOISE_REGEX).sub("", subject)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What smart matching compares: one key for the subject's word hashes, and participant hashes."""

    subject_hash: str
    addresses: tuple[str, ...]


def is_forward(subject: str) -> bool:
    """FW:, Fwd:, WG:, TR:, RV:, ENC:, VS:, Doorst: — a forward, not a reply."""
    return bool(_FORWARD.match(subject[:SUBJECT_MAX_CHARS]))


def fingerprint(
    subject: str,
    addresses: Iterable[str],
    settings: CorrelationConfig,
    token_format: TrackingTokenFormat | None = None,
) -> Fingerprint | None:
    """None when nothing of the subject is left to match on."""
    subject = subject[:SUBJECT_MAX_CHARS]
    if token_format is not None:
        token = token_format.find(subject)
        if token:
            subject = subject.replace(token, " ")
    subject = strip_noise(subject, settings.hash_filter_keywords)
    words = [w.casefold() for w in _WORD.findall(subject)][: settings.hash_max_count]
    if not words:
        return None
    # Subject delta 0: the same words make the same key, so candidates are one lookup away.
    subject_hash = _hash(" ".join(sorted({_hash(w) for w in words})))
    participants = sorted({_hash(a.strip().lower()) for a in addresses if a})[: settings.hash_max_count]
    return Fingerprint(subject_hash, tuple(participants))


def shares_enough(candidate: Iterable[str], incoming: Fingerprint, min_address_count: int) -> bool:
    return len(set(candidate) & set(incoming.addresses)) >= min_address_count
