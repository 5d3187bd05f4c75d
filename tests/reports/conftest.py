"""Weekly review fixtures: two weeks of hand-made traffic for tenants acme and globex, a real
SMTP server on loopback (aiosmtpd) that keeps what it receives, and the mail settings that
point Django's SMTP backend at it."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller

from apps.accounts.models import Project
from apps.reports.weeks import ReviewWeek
from apps.telemetry.store import insert_spans
from collectors.records import STATUS_ERROR, STATUS_OK
from tests.rollups.helpers import Trace

# The reviewed week (Mon 16 Nov 2026 to Mon 23 Nov, UTC) and "now": Monday 09:00 after it.
WEEK = ReviewWeek.parse("2026-W47")
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
PUBLIC_URL = "https://observatory.example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class Sink:
    """What the SMTP server received; `refuse` answers the next N messages with a 4xx."""

    received: list[Received] = field(default_factory=list)
    refuse: int = 0
    refuse_with: str = "451 4.3.0 try again later"
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.refuse:
                self.refuse -= 1
                return self.refuse_with
            message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [item.message for item in self.received if address in item.rcpt_tos]


@pytest.fixture
def smtp(settings: Any) -> Iterator[Sink]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 10
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture(autouse=True)
def _review_settings(settings: Any) -> None:
    settings.PUBLIC_URL = PUBLIC_URL
    settings.DEFAULT_FROM_EMAIL = "Observatory <reviews@observatory.example.com>"
    # Charts as HTML bars unless a test turns images on (Chromium takes seconds to start).
    settings.REVIEW_CHART_IMAGES = False


@pytest.fixture
def at_now() -> Iterator[Any]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def _call(
    start: datetime,
    tenant: str,
    feature: str,
    model: str,
    cost: str | None,
    *,
    provider: str = "openai",
    failed: bool = False,
    latency_ms: float = 800,
) -> list[Any]:
    trace = Trace(start)
    root = trace.root(tenant=tenant, feature=feature, status=STATUS_ERROR if failed else STATUS_OK)
    trace.llm(
        parent=root,
        provider=provider,
        request_model=model,
        response_model=model,
        cost_usd=Decimal(cost) if cost is not None else None,
        duration_ms=latency_ms,
        ttft_ms=latency_ms / 4,
        cache_read_tokens=400,
        status=STATUS_ERROR if failed else STATUS_OK,
    )
    return trace.spans


def two_weeks_of_traffic(project: Project, week: ReviewWeek = WEEK) -> None:
    """The week before: acme's support-chat on gpt-4o-mini, globex's search. This week: acme's
    support-chat moves to claude-sonnet-4-5 on Tuesday and costs more; globex's search grows a
    little, with one unpriced call and one failure."""
    spans: list[Any] = []
    before = week.previous.start
    for n in range(10):
        spans += _call(before + timedelta(hours=10 + 14 * n), "acme", "support-chat", "gpt-4o-mini", "0.10")
    for n in range(5):
        spans += _call(before + timedelta(hours=11 + 30 * n), "globex", "search", "gpt-4o-mini", "0.05")
    start = week.start
    for n in range(4):
        spans += _call(start + timedelta(hours=1 + 5 * n), "acme", "support-chat", "gpt-4o-mini", "0.10")
    for n in range(10):
        spans += _call(start + timedelta(days=1, hours=3 + 12 * n), "acme", "support-chat", "claude-sonnet-4-5",
                       "0.30", provider="anthropic", latency_ms=1600)  # fmt: skip
    for n in range(6):
        spans += _call(start + timedelta(hours=2 + 25 * n), "globex", "search", "gpt-4o-mini", "0.05")
    spans += _call(start + timedelta(days=4, hours=5), "globex", "search", "mystery-model", None)
    spans += _call(start + timedelta(days=5, hours=5), "globex", "search", "gpt-4o-mini", "0.05", failed=True)
    insert_spans(project.pk, spans)


@pytest.fixture
def traffic(project: Project) -> None:
    two_weeks_of_traffic(project)
