"""Subjects are untrusted text: whatever arrives, parsing and smart matching cost about what an
ordinary subject costs, and a tenant's noise-word expression cannot take a worker's CPU."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from emailrouter.mime.parse import SUBJECT_MAX_CHARS, parse_message
from emailrouter.routing.smart_match import fingerprint, is_forward
from emailrouter.tenancy.models import CorrelationConfig

SPACES = [" ", "\t", "\u00a0", "\u2003", "\u3000", "\u2009", "\u202f", "\r\n "]
PREFIXES = ["RE", "Fw", "FWD", "AW", "WG", "re [2]", "Doorst", "r", ""]


def _cost(subject: str, settings_: CorrelationConfig) -> float:
    raw = f"From: a@x.example\r\nSubject: {subject}\r\n\r\nbody".encode()
    started = time.process_time()
    parsed = parse_message(raw)
    is_forward(parsed.subject)
    fingerprint(parsed.subject, ["a@x.example"], settings_)
    return time.process_time() - started


def _baseline(subject: str) -> float:
    """The cost of an ordinary subject of as many UTF-8 bytes and folded lines (the least of
    three runs): the feed parser's work per line is not the expressions' to answer for."""
    folds = subject.count("\r\n")
    size = len(subject.encode()) - 3 * folds
    ordinary = "Figures\r\n " * folds
    ordinary += ("RE: Quarterly figures, Müller " * (size // 30 + 1)).encode()[:size].decode(errors="ignore")
    return min(_cost(ordinary, CorrelationConfig()) for _ in range(3))


@st.composite
def pathological_subjects(draw: st.DrawFn) -> str:
    """Prefixes and colons between long runs of (Unicode) spaces: the shapes that made the
    forward and noise expressions backtrack."""
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        pieces.append(draw(st.sampled_from(PREFIXES)))
        pieces.append(draw(st.sampled_from(SPACES)) * draw(st.integers(1, 30_000)))
        pieces.append(draw(st.sampled_from(["", ":", "[", "[1", "[12]", "x"])))
    return "".join(pieces)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pathological_subjects())
def test_pathological_subject_costs_about_what_an_ordinary_one_does(subject: str) -> None:
    cost = _cost(subject, CorrelationConfig())
    baseline = _baseline(subject)
    assert cost < 5 * baseline + 0.02, (cost, baseline)


def test_subject_is_normalised_and_cut_right_after_parsing() -> None:
    raw = ("Subject: RE:\u00a0\u00a0 Figures\u3000\u2003Q3 " + "x" * 300_000 + "\r\n\r\nbody").encode()
    parsed = parse_message(raw)
    assert parsed.subject.startswith("RE: Figures Q3 x")
    assert len(parsed.subject) == SUBJECT_MAX_CHARS
    assert any(d.startswith("subject-truncated:") for d in parsed.defects)


def test_a_catastrophic_tenant_expression_is_cut_short() -> None:
    """`((a+)(a+))+\\1b` backtracks without end on a run of a's; the tenant's expression runs under a time limit and
    the default expression takes over, so the subject is still matched."""
    evil = CorrelationConfig(hash_filter_keywords=r"^((a+)(a+))+\1b")
    subject = "a" * 2000 + " figures"
    started = time.process_time()
    found = fingerprint(subject, ["a@x.example", "b@x.example"], evil)
    assert time.process_time() - started < 2
    assert found == fingerprint(subject, ["a@x.example", "b@x.example"], CorrelationConfig())


def test_tenant_expression_over_the_length_bound_is_refused_at_import() -> None:
    with pytest.raises(ValidationError, match="at most 200 characters"):
        CorrelationConfig(hash_filter_keywords="^(re|" + "x|" * 200 + "fw):")
