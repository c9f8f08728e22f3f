"""Blocked attachment extensions, as Dynamics' System Settings list them."""

from __future__ import annotations

from emailrouter.mime.models import Address, Attachment, ParsedMessage
from emailrouter.routing.attachments import drop_blocked_attachments


def _message(*names: str) -> ParsedMessage:
    return ParsedMessage(
        message_id="<m@x>",
        subject="s",
        sender=Address("a@b.example"),
        attachments=[Attachment(name, "application/octet-stream", b"x") for name in names],
    )


def test_default_list_drops_executables_whatever_the_case_or_trailing_dots() -> None:
    message = _message("invoice.pdf", "setup.EXE", "macro.vbs.", "photo.jpg", "noextension")

    dropped = drop_blocked_attachments(message, None)

    assert dropped == ["setup.EXE", "macro.vbs."]
    assert [a.filename for a in message.attachments] == ["invoice.pdf", "photo.jpg", "noextension"]


def test_tenant_list_replaces_the_default_and_empty_blocks_nothing() -> None:
    custom = _message("a.exe", "b.zip")
    assert drop_blocked_attachments(custom, [".ZIP"]) == ["b.zip"]
    assert [a.filename for a in custom.attachments] == ["a.exe"]

    open_list = _message("a.exe")
    assert drop_blocked_attachments(open_list, []) == []
    assert len(open_list.attachments) == 1
