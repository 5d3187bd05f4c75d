from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import IngestKey, Project
from apps.pricing.services import PriceBook
from tests.support.openai_server import openai_server

__all__ = ["openai_server", "tracer_provider"]


@pytest.fixture
def tracer_provider(live_server: LiveServer, price_catalog: None) -> Iterator[TracerProvider]:
    """The application's own provider (not the global one), exporting with the real OTLP/protobuf
    exporter to the live receiver."""
    _, key = IngestKey.issue(Project.objects.create(name="instrumented-app"), "k")
    exporter = OTLPSpanExporter(
        endpoint=f"{live_server.url}/v1/traces",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "support-api"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    yield provider
    provider.shutdown()
    PriceBook.forget()
