"""Tracking tokens as CRM writes them: prefix, base, user digits, counter digits."""

from __future__ import annotations

from emailrouter.crm.tracking_token import TrackingTokenFormat


def test_default_format_matches_crm_examples() -> None:
    assert TrackingTokenFormat().format(user_number=1, counter=1) == "CRM:0001001"
    assert (
        TrackingTokenFormat(prefix="ACME", base=7, user_digits=2, counter_digits=4).format(3, 42)
        == "ACME:7030042"
    )


def test_counter_wraps_at_its_digit_count() -> None:
    assert TrackingTokenFormat().format(user_number=5, counter=1000) == "CRM:0005000"


def test_only_this_organizations_tokens_are_found() -> None:
    ours = TrackingTokenFormat(prefix="CRM", base=1)
    assert ours.find("RE: Quote CRM:1002017") == "CRM:1002017"
    assert ours.find("RE: Quote CRM:0002017") is None  # another deployment's base
    assert ours.find("RE: Quote XCRM:1002017") is None
    assert ours.find("RE: CRM:10020170 too long") is None
    assert ours.find("FW: CRM:1001001 RE: CRM:1002002") == "CRM:1002002"
