"""The wiring: spans leave through the stock OTLP/HTTP exporters and reach a real HTTP server."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collectors.simulator import simulate
from collectors.simulator.__main__ import main
from tests.simulator.conftest import END


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A stand-in for Observatory's /v1/traces: records each POST, answers as told."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    # Answer 503 + Retry-After to this many POSTs first, as the receiver does while its
    # database restarts.
    unavailable: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def of(self, path: str) -> list[Received]:
        return [request for request in self.requests if request.path == path]

    def protobuf_span_count(self) -> int:
        count = 0
        for request in self.of("/v1/traces"):
            message = ExportTraceServiceRequest.FromString(request.body)
            count += sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
        return count


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: Receiver

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if state.unavailable > 0:
                state.unavailable -= 1
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            # Header names are case-insensitive; the exporters send them lower-case.
            state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def test_protobuf_export_reaches_the_server_with_the_bearer_key(receiver: Receiver) -> None:
    summary = simulate(receiver.endpoint, "obs_test_key", END - timedelta(hours=6), END, requests=600, seed=3)
    assert receiver.requests
    # Spans, and the serving tier's GPU samples and vLLM series beside them.
    assert {request.path for request in receiver.requests} == {"/v1/traces", "/v1/metrics"}
    for request in receiver.requests:
        assert request.headers["authorization"] == "Bearer obs_test_key"
        assert request.headers["content-type"] == "application/x-protobuf"
        assert len(request.body) > 0
    assert receiver.protobuf_span_count() == summary.spans == summary.exported_spans
    assert summary.failed_spans == 0 and summary.metric_points > 0
    # Batches of at most 512 spans, as configured.
    assert len(receiver.of("/v1/traces")) >= summary.spans / 512


def test_json_export_with_gzip(receiver: Receiver) -> None:
    summary = simulate(
        receiver.endpoint + "/", "k", END - timedelta(hours=1), END, requests=100, protocol="json", seed=3, gzip=True
    )
    spans = 0
    for request in receiver.of("/v1/traces"):
        assert request.headers["content-type"] == "application/json"
        assert request.headers["content-encoding"] == "gzip"
        payload = json.loads(request.body)
        spans += sum(len(ss["spans"]) for rs in payload["resourceSpans"] for ss in rs["scopeSpans"])
    assert spans == summary.spans > 100


def test_a_receiver_answering_503_with_retry_after_is_retried_not_dropped(receiver: Receiver) -> None:
    receiver.unavailable = 3
    summary = simulate(receiver.endpoint, "k", END - timedelta(hours=1), END, requests=100, seed=3)
    assert receiver.unavailable == 0
    assert summary.failed_spans == 0
    assert receiver.protobuf_span_count() == summary.spans


def test_cli_backfill(receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--endpoint", receiver.endpoint, "--key", "cli_key", "--backfill-days", "0.1",
            "--requests-per-day", "2000", "--seed", "5", "--incident", "cost-spike:acme@-1h", "--quiet", "--json",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["traces"] >= 200
    assert summary["seed"] == 5
    assert summary["exported_spans"] == summary["spans"] == receiver.protobuf_span_count()
    assert summary["incident_hits"]["cost-spike:acme@-1h"] > 0
    assert {r.headers["authorization"] for r in receiver.requests} == {"Bearer cli_key"}


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--key", "k"], ["--backfill-days", "1", "--incident", "nope:x@-1d"], ["--backfill-days", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert main(["--list-incidents"]) == 0
    assert "silent-model-change:FEATURE@START" in capsys.readouterr().out


def test_live_mode_emits_current_traffic_until_stopped(receiver: Receiver) -> None:
    from collectors.simulator import run_live

    summary = run_live(receiver.endpoint, "k", rate_per_min=6000, seed=1, duration_s=0.5)
    assert summary.traces > 5
    assert receiver.protobuf_span_count() == summary.spans
