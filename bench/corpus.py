"""A reproducible corpus of representative business mail for the benchmarks.

Median size 10–50 KB, a fifth with attachments, a third replies, some HTML-only — the mix the
inbound goals are stated against.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid

WORDS = [
    "order",
    "invoice",
    "delivery",
    "quote",
    "meeting",
    "contract",
    "support",
    "ticket",
    "please",
    "thanks",
    "regards",
    "update",
    "schedule",
    "payment",
    "shipment",
    "account",
    "renewal",
    "question",
    "issue",
    "resolved",
    "attached",
    "review",
    "signed",
]
SENDERS = ["carl@client.example", "office@client.example", "uma@acme.example", "stranger@mail.example"]


def _paragraphs(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return "\n".join(lines)


def build_corpus(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    messages: list[bytes] = []
    thread_ids: list[str] = []
    for index in range(count):
        message = EmailMessage()
        message["From"] = rng.choice(SENDERS)
        message["To"] = "help@acme.example"
        if rng.random() < 0.3:
            message["Cc"] = "uma@acme.example"
        reply = bool(thread_ids) and index % 3 == 0
        subject = f"{rng.choice(WORDS).title()} {rng.randint(1000, 9999)}"
        message["Subject"] = ("Re: " if reply else "") + subject
        message["Date"] = format_datetime(datetime(2026, 11, 20, 9, index % 60, tzinfo=UTC))
        message_id = make_msgid(domain="client.example")
        message["Message-ID"] = message_id
        if reply:
            parent = rng.choice(thread_ids)
            message["In-Reply-To"] = parent
            message["References"] = parent
        thread_ids.append(message_id)
        text = _paragraphs(rng, int(rng.lognormvariate(9.6, 0.5)))  # median ≈ 15 KB of text
        if index % 7 == 3:
            message.set_content(
                "<html><body><p>" + text.replace("\n", "</p><p>") + "</p></body></html>", subtype="html"
            )
        else:
            message.set_content(text)
            message.add_alternative("<html><body><pre>" + text + "</pre></body></html>", subtype="html")
        if index % 5 == 0:
            blob = rng.randbytes(rng.randint(8_000, 60_000))
            message.add_attachment(
                blob, maintype="application", subtype="pdf", filename=f"document-{index}.pdf"
            )
        messages.append(bytes(message))
    return messages


def size_distribution(messages: list[bytes]) -> dict[str, float]:
    sizes = sorted(len(m) for m in messages)

    def pct(p: float) -> float:
        return round(sizes[min(len(sizes) - 1, int(p * len(sizes)))] / 1024, 1)

    return {
        "corpus_messages": len(sizes),
        "corpus_size_p10_kb": pct(0.10),
        "corpus_size_median_kb": pct(0.50),
        "corpus_size_p90_kb": pct(0.90),
        "corpus_size_max_kb": round(sizes[-1] / 1024, 1),
    }


def corpus_shape(messages: list[bytes]) -> dict[str, float]:
    """Shares read back from the bytes (not from the generator's choices), so a change to either
    shows: with attachments, replies (In-Reply-To), HTML-only (no text/plain part)."""
    parser = BytesParser(policy=policy.default)
    attached = replies = html_only = 0
    for raw in messages:
        message = parser.parsebytes(raw)
        attached += any(True for _ in message.iter_attachments())
        replies += message["In-Reply-To"] is not None
        types = {part.get_content_type() for part in message.walk()}
        html_only += "text/html" in types and "text/plain" not in types
    count = len(messages)
    return {
        "corpus_share_with_attachments": round(attached / count, 3),
        "corpus_share_replies": round(replies / count, 3),
        "corpus_share_html_only": round(html_only / count, 3),
    }


def check_representative(figures: dict[str, float]) -> list[str]:
    """What keeps the corpus from the mix the inbound goals are stated against; empty when it fits."""
    wanted = {
        "corpus_size_median_kb": (10.0, 50.0),
        "corpus_share_with_attachments": (0.15, 0.25),
        "corpus_share_replies": (0.28, 0.38),
        "corpus_share_html_only": (0.05, 0.25),
    }
    return [
        f"{name} = {figures[name]} is outside [{low}, {high}]"
        for name, (low, high) in wanted.items()
        if not low <= figures[name] <= high
    ]
