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


def _finding(project: Project, title: str, *, tenant: str, severity: str, kind: str = "drift",
             first_seen: datetime, status: str = "open", ended: datetime | None = None,
             slice_: dict[str, str] | None = None) -> Any:  # fmt: skip
    from apps.insights.models import Finding

    return Finding.objects.create(
        project=project, kind=kind, metric="latency_p99" if kind == "regression" else "output_tokens",
        slice=slice_ or {}, tenant=tenant, signature=f"{kind}:{title}", severity=severity, status=status,
        title=title, evidence={"unit": "ms"}, started_at=first_seen - timedelta(hours=2), first_seen_at=first_seen,
        last_seen_at=ended or NOW, resolved_at=ended if status == "resolved" else None,
        accepted_at=ended if status == "accepted" else None,
    )  # fmt: skip


def _episode(state: Any, *events: tuple[str, str, datetime], channel: Any = None, failed: int = 0) -> None:
    """Notifications of one episode of `state`: (event, level, when); deliveries for the first."""
    from apps.alerts.models import Delivery, Notification

    state.episode += 1
    state.save()
    for sequence, (event, level, when) in enumerate(events):
        notification = Notification.objects.create(
            state=state, rule=state.rule, episode=state.episode, event=event, level=level, sequence=sequence,
            tenant=state.tenant, title=f"[{level.upper()}] {state.rule.name} ({state.group_label})",
            text="p99 above the level", created_at=when,
        )  # fmt: skip
        if channel is not None and sequence == 0:
            for n in range(1 + failed):
                Delivery.objects.create(notification=notification, channel=channel, attempt=n + 1, created_at=when,
                                        target="ops@example.com", payload_sha256="0" * 64,
                                        result="failed" if n < failed else "sent")  # fmt: skip


@dataclass
class WeekEventRows:
    """The names of what week_events_rows made, for the tests to look for."""

    acme_regression: Any
    globex_drift: Any
    shared_drift: Any


def week_events_rows(project: Project, week: ReviewWeek = WEEK) -> WeekEventRows:
    """Findings and alert episodes around the reviewed week, for acme, globex and no one tenant.

    In the week: acme's critical p99 regression (new, open), globex's warning drift (seen the
    week before, resolved on Wednesday), a drift seen across tenants (tenant ''); acme's alert
    (fired, escalated, resolved), globex's alert (fired the week before, still firing) and a
    whole-slice alert (tenant ''). Outside it: a finding resolved before the week, one accepted
    before it, one first seen after it, an alert episode over before the week.
    """
    from apps.alerts.models import AlertRule, AlertState, Channel

    start = week.start
    acme = _finding(project, "p99 latency of support-chat on claude-sonnet-4-5 rose 80% (acme)", tenant="acme",
                    severity="critical", kind="regression", first_seen=start + timedelta(days=1, hours=6),
                    slice_={"feature": "support-chat", "model": "claude-sonnet-4-5"})  # fmt: skip
    globex = _finding(project, "Output length of search on gpt-4o-mini shifted (globex)", tenant="globex",
                      severity="warning", first_seen=start - timedelta(days=3), status="resolved",
                      ended=start + timedelta(days=2, hours=9), slice_={"feature": "search"})  # fmt: skip
    shared = _finding(project, "New system fingerprint on gpt-4o-mini across tenants", tenant="",
                      severity="warning", first_seen=start + timedelta(days=3),
                      slice_={"model": "gpt-4o-mini"})  # fmt: skip
    _finding(project, "Old resolved drift (globex)", tenant="globex", severity="critical",
             first_seen=start - timedelta(days=10), status="resolved", ended=start - timedelta(hours=1))  # fmt: skip
    _finding(project, "Old accepted drift (globex)", tenant="globex", severity="critical",
             first_seen=start - timedelta(days=10), status="accepted", ended=start - timedelta(days=2))  # fmt: skip
    _finding(project, "Next week's drift (globex)", tenant="globex", severity="critical",
             first_seen=week.end + timedelta(hours=1))  # fmt: skip

    channel = Channel.objects.create(name="ops mail", kind="email", config={"to": ["ops@example.com"]})
    per_tenant = AlertRule.objects.create(name="p99 per tenant", kind="latency", group_by=["tenant"],
                                          critical_threshold=2000, warning_threshold=1000)  # fmt: skip
    whole = AlertRule.objects.create(name="Error rate everywhere", kind="error_rate", critical_threshold=0.1)
    acme_state = AlertState.objects.create(rule=per_tenant, group_key='{"tenant":"acme"}', group={"tenant": "acme"},
                                           tenant="acme")  # fmt: skip
    globex_state = AlertState.objects.create(rule=per_tenant, group_key='{"tenant":"globex"}',
                                             group={"tenant": "globex"}, tenant="globex")  # fmt: skip
    whole_state = AlertState.objects.create(rule=whole, group_key="{}", group={}, tenant="")
    _episode(globex_state, ("fired", "warning", start - timedelta(days=9)),
             ("resolved", "warning", start - timedelta(days=8)))  # fmt: skip
    _episode(acme_state, ("fired", "warning", start + timedelta(days=1, hours=7)),
             ("escalated", "critical", start + timedelta(days=1, hours=8)),
             ("resolved", "critical", start + timedelta(days=1, hours=12)), channel=channel, failed=1)  # fmt: skip
    _episode(globex_state, ("fired", "warning", start - timedelta(days=2)),
             ("repeated", "warning", start + timedelta(days=2)), channel=channel)  # fmt: skip
    _episode(whole_state, ("fired", "critical", start + timedelta(days=4)), channel=channel)
    return WeekEventRows(acme, globex, shared)


@pytest.fixture
def week_events(project: Project) -> WeekEventRows:
    return week_events_rows(project)


def self_hosted_traffic(project: Project, week: ReviewWeek = WEEK) -> None:
    """vLLM calls with GPU cost attributed (as apps.gpu.attribution writes it on the call), for
    acme and globex, both weeks, and idle GPU cost intervals (no tenant's)."""
    from apps.gpu.models import CostInterval

    spans: list[Any] = []
    for when, count, cost in ((week.previous.start, 4, "0.02"), (week.start, 8, "0.03")):
        for n in range(count):
            for tenant in ("acme", "globex"):
                spans += _call(when + timedelta(hours=3 + 9 * n), tenant, "summarize", "llama-3.1-8b", cost,
                               provider="vllm")  # fmt: skip
    insert_spans(project.pk, spans)
    for when, idle in ((week.previous.start, "0.50"), (week.start, "0.40"), (week.start + timedelta(days=3), "0.35"),
                       (week.end, "9.00")):  # fmt: skip
        CostInterval.objects.create(project=project, gpu_instance="vllm-0", start=when, seconds=300, gpus=1,
                                    gpu_cost_usd=Decimal(idle) + 1, attributed_usd=Decimal(1), idle_usd=Decimal(idle),
                                    requests=3, computed_at=NOW)  # fmt: skip
