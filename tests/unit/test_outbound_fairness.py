"""Round-robin interleaving of send jobs across tenants, and the dispatch settings' bounds (no I/O)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from emailrouter.outbound.dispatch import interleave
from emailrouter.tenancy.models import OutboundConfig


def test_interleave_takes_each_groups_next_item_in_turn() -> None:
    groups = [["a1", "a2", "a3", "a4"], ["b1"], ["c1", "c2"]]

    assert interleave(groups) == ["a1", "b1", "c1", "a2", "c2", "a3", "a4"]


def test_interleave_puts_every_groups_first_item_ahead_of_any_second_item() -> None:
    backlog = [f"big-{n}" for n in range(800)]
    small = [[f"s{t}-{n}" for n in range(3)] for t in range(19)]

    order = interleave([backlog, *small])

    firsts = [order.index(group[0]) for group in [backlog, *small]]
    assert max(firsts) == 19  # 20 groups: each first item within the first 20 positions
    assert order.index("big-1") == 20
    assert max(order.index(f"s{t}-2") for t in range(19)) < 60


def test_interleave_keeps_every_item_once_and_each_groups_order() -> None:
    groups = [[1, 2, 3], [], [10, 20], [100]]

    order = interleave(groups)

    assert sorted(order) == sorted(item for group in groups for item in group)
    for group in groups:
        assert [item for item in order if item in group] == group


def test_interleave_of_nothing_is_empty() -> None:
    assert interleave([]) == []
    assert interleave([[], []]) == []


def test_outbound_dispatch_settings_default_to_a_capped_router_mailbox_dispatch() -> None:
    config = OutboundConfig()

    assert config.max_jobs_per_dispatch == 100
    # Only mail of mailboxes that deliver through the router, so an organization that also
    # runs server-side sync never has an email sent by both.
    assert config.only_router_mailboxes is True


@pytest.mark.parametrize("cap", [0, -1, 1001])
def test_max_jobs_per_dispatch_out_of_bounds_is_refused(cap: int) -> None:
    with pytest.raises(ValidationError, match="max_jobs_per_dispatch"):
        OutboundConfig(max_jobs_per_dispatch=cap)
