"""Real receivers on loopback for alert deliveries: an SMTP server (aiosmtpd) and an HTTP
server that records webhook requests and answers with the status a test sets."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from apps.accounts.models import Project
from apps.telemetry.store import insert_spans
from tests.rollups.helpers import STATUS_ERROR, Trace
from tests.support.servers import free_port
from tests.test_celery_e2e import broker_url  # noqa: F401 - the run's broker (REDIS_URL or a private Redis)


@dataclass
class SmtpInbox:
    host: str
    port: int
    messages: list[Message] = field(default_factory=list)
    envelopes: list[Any] = field(default_factory=list)
    # Answer RCPT with this reply instead of accepting (e.g. "450 try later", "550 no such user").
    refuse_with: str | None = None


class _Handler:
    def __init__(self, inbox: SmtpInbox) -> None:
        self.inbox = inbox

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.inbox.refuse_with:
            return self.inbox.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.inbox.envelopes.append(envelope)
        self.inbox.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_inbox(settings: Any) -> Iterator[SmtpInbox]:
    """A real SMTP server on loopback; Django's mail framework is pointed at it."""
    port = free_port()
    inbox = SmtpInbox("127.0.0.1", port)
    controller = Controller(_Handler(inbox), hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    try:
        yield inbox
    finally:
        controller.stop()


@dataclass
class WebhookReceiver:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    # Statuses to answer with, in order; the last one repeats.
    statuses: list[int] = field(default_factory=lambda: [200])
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request["body"]) for request in self.requests]


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """An HTTP server on loopback recording each POST (headers, raw body)."""
    receiver = WebhookReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status < 300 else b"nope")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# A fixed "now" for evaluation tests: spans sit in the 15 minutes before it.
NOW = datetime(2026, 11, 20, 10, 30, tzinfo=UTC)


def store_calls(
    project: Project,
    latencies_ms: list[float],
    *,
    end: datetime = NOW,
    tenant: str = "acme",
    feature: str = "checkout",
    errors: int = 0,
    cost_usd: Any = None,
    model: str = "gpt-4o-mini",
    cache_read_tokens: int | None = None,
    span_minutes: float = 10,
) -> None:
    """One trace per latency: a root (tenant, feature) with one LLM call, spread over the
    `span_minutes` before `end`; the first `errors` calls fail."""
    traces = []
    step = timedelta(minutes=span_minutes) / max(len(latencies_ms), 1)
    for index, latency in enumerate(latencies_ms):
        trace = Trace(end - timedelta(minutes=span_minutes) + index * step)
        root = trace.root(tenant=tenant, feature=feature, duration_ms=latency + 50)
        trace.llm(
            parent=root,
            duration_ms=latency,
            status=STATUS_ERROR if index < errors else 0,
            error_type="timeout" if index < errors else None,
            cost_usd=cost_usd,
            request_model=model,
            cache_read_tokens=cache_read_tokens,
        )
        traces.append(trace)
    insert_spans(project.pk, [span for trace in traces for span in trace.spans])
