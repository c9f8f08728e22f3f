"""Attachments the organization refuses to store: Dynamics' blocked file extensions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from emailrouter.mime.models import Attachment, ParsedMessage

# Dynamics 365's default "blocked file extensions for attachments" (System Settings → General).
DEFAULT_BLOCKED_EXTENSIONS = frozenset(
    [
        "ade",
        "adp",
        "app",
        "asa",
        "ashx",
        "asmx",
        "asp",
        "bas",
        "bat",
        "cdx",
        "cer",
        "chm",
        "class",
        "cmd",
        "com",
        "config",
        "cpl",
        "crt",
        "csh",
        "dll",
        "exe",
        "fxp",
        "hlp",
        "hta",
        "htr",
        "htw",
        "ida",
        "idc",
        "idq",
        "inf",
        "ins",
        "isp",
        "its",
        "jar",
        "js",
        "jse",
        "ksh",
        "lnk",
        "mad",
        "maf",
        "mag",
        "mam",
        "maq",
        "mar",
        "mas",
        "mat",
        "mau",
        "mav",
        "maw",
        "mda",
        "mdb",
        "mde",
        "mdt",
        "mdw",
        "mdz",
        "msc",
        "msh",
        "msh1",
        "msh1xml",
        "msh2",
        "msh2xml",
        "mshxml",
        "msi",
        "msp",
        "mst",
        "ops",
        "pcd",
        "pif",
        "prf",
        "prg",
        "printer",
        "pst",
        "reg",
        "rem",
        "scf",
        "scr",
        "sct",
        "shb",
        "shs",
        "shtm",
        "shtml",
        "soap",
        "stm",
        "tmp",
        "url",
        "vb",
        "vbe",
        "vbs",
        "vsmacros",
        "vss",
        "vst",
        "vsw",
        "ws",
        "wsc",
        "wsf",
        "wsh",
    ]
)


def extension_of(filename: str) -> str:
    name = filename.strip().rstrip(". ").lower()
    return name.rsplit(".", 1)[1] if "." in name else ""


def drop_blocked_attachments(message: ParsedMessage, blocked: Iterable[str] | None) -> list[str]:
    """Remove attachments whose extension is blocked; returns the dropped file names (the
    email's `notifications` then says not every attachment was saved)."""
    refused = (
        DEFAULT_BLOCKED_EXTENSIONS if blocked is None else frozenset(e.lower().lstrip(".") for e in blocked)
    )
    kept: list[Attachment] = []
    dropped: list[Attachment] = []
    for attachment in message.attachments:
        (dropped if extension_of(attachment.filename) in refused else kept).append(attachment)
    message.attachments = kept
    return [a.filename for a in dropped]
