"""An OpenAI-compatible (and minimal Anthropic-compatible) HTTP server for tests.

Real client SDKs and the real instrumentations around them talk to this server over
HTTP on 127.0.0.1, so what they put on their spans is what they would put there against
the real API. Responses are deterministic: the usage numbers are the ones in
CONVENTIONS.md ("Seen from real instrumentations") unless a test sets others.

Endpoints:
- POST /v1/chat/completions, plain and streamed (SSE). As OpenAI does, a streamed
  response carries usage only in one last chunk, and only when the request asked for it
  with `stream_options.include_usage`.
- POST /v1/messages, Anthropic style, plain and streamed.

Every request is recorded (method, path, headers with lower-cased names, JSON body) so a
test can check what the client sent, `traceparent` included.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

COMPLETION_TEXT = "Observatory counts every token twice so you never pay twice."

# A request for an alias answers with a dated snapshot, as the real API does; the pricing
# catalog must resolve the snapshot back to the alias's price row.
MODEL_SNAPSHOTS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
}
SYSTEM_FINGERPRINT = "fp_0ba0d124f1"
SERVICE_TIER = "default"


def snapshot_of(model: str) -> str:
    return MODEL_SNAPSHOTS.get(model, model)


@dataclass(frozen=True)
class ChatUsage:
    """OpenAI usage: prompt_tokens includes cached_tokens; completion_tokens includes reasoning_tokens."""

    prompt_tokens: int = 1200
    cached_tokens: int = 1000
    completion_tokens: int = 300
    reasoning_tokens: int = 100

    def as_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


@dataclass(frozen=True)
class MessagesUsage:
    """Anthropic usage: input_tokens EXCLUDES the cache reads and writes."""

    input_tokens: int = 200
    cache_read_input_tokens: int = 1000
    cache_creation_input_tokens: int = 50
    output_tokens: int = 300

    def as_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "output_tokens": self.output_tokens,
            "service_tier": "standard",
        }


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(frozen=True)
class Failure:
    status: int
    retry_after: int | None = None


@dataclass
class OpenAITestServer:
    """Configure it from a test (usage, completion text, failures); read `requests` after."""

    chat_usage: ChatUsage = field(default_factory=ChatUsage)
    messages_usage: MessagesUsage = field(default_factory=MessagesUsage)
    completion_text: str = COMPLETION_TEXT
    requests: list[RecordedRequest] = field(default_factory=list)
    _failures: list[Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counter: int = 0
    _http: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (ends in /v1)."""
        assert self._http is not None, "server not started"
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def root_url(self) -> str:
        """The base URL without /v1, as the Anthropic SDK takes it."""
        return self.base_url.removesuffix("/v1")

    def fail_next(self, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next `times` requests with an error status (429, 500, ...).

        Note that the OpenAI SDK retries 408/409/429/5xx itself (max_retries=2 by default)
        and honours Retry-After; give the client max_retries=0 to see a single failure.
        """
        with self._lock:
            self._failures.extend([Failure(status, retry_after)] * times)

    def start(self) -> OpenAITestServer:
        self._http = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.02}, name="openai-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- used by the handler thread --------------------------------------------------

    def _record(self, request: RecordedRequest) -> tuple[Failure | None, str]:
        with self._lock:
            self.requests.append(request)
            self._counter += 1
            failure = self._failures.pop(0) if self._failures else None
            return failure, f"{self._counter:06d}"

    def chat_completion(self, body: dict[str, Any], number: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-observatory{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": snapshot_of(str(body.get("model", ""))),
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "service_tier": SERVICE_TIER,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.completion_text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self.chat_usage.as_json(),
        }

    def chat_completion_chunks(self, body: dict[str, Any], number: str) -> Iterator[dict[str, Any]]:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-observatory{number}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": snapshot_of(str(body.get("model", ""))),
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "service_tier": SERVICE_TIER,
        }
        # With include_usage, OpenAI sends "usage": null on every chunk but the last.
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice], **extra}

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for word in _pieces(self.completion_text):
            yield chunk({"content": word})
        yield chunk({}, "stop")
        if include_usage:
            yield {**base, "choices": [], "usage": self.chat_usage.as_json()}

    def message(self, body: dict[str, Any], number: str) -> dict[str, Any]:
        return {
            "id": f"msg_observatory{number}",
            "type": "message",
            "role": "assistant",
            "model": snapshot_of(str(body.get("model", ""))),
            "content": [{"type": "text", "text": self.completion_text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": self.messages_usage.as_json(),
        }

    def message_events(self, body: dict[str, Any], number: str) -> Iterator[tuple[str, dict[str, Any]]]:
        usage = self.messages_usage.as_json()
        start = self.message(body, number) | {"content": [], "stop_reason": None, "usage": usage | {"output_tokens": 1}}
        yield "message_start", {"type": "message_start", "message": start}
        yield "content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}  # fmt: skip
        for word in _pieces(self.completion_text):
            yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": word}}  # fmt: skip
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
        yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": self.messages_usage.output_tokens}}  # fmt: skip
        yield "message_stop", {"type": "message_stop"}


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [word if index == 0 else " " + word for index, word in enumerate(words)]


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing its idle keep-alive connection is normal, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(server: OpenAITestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 so the SDK's connection pool keeps connections alive, as against the real
        # API; every response therefore carries Content-Length or is chunked.
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                self._send_json(400, _error(400, "body is not JSON"))
                return
            path = self.path.split("?")[0]
            headers = {name.lower(): value for name, value in self.headers.items()}
            failure, number = server._record(RecordedRequest("POST", path, headers, body))
            if path not in ("/v1/chat/completions", "/v1/messages"):
                self._send_json(404, _error(404, f"no route {path}"))
                return
            if failure is not None:
                extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                self._send_json(failure.status, _error(failure.status, "injected failure", path), extra)
                return
            streamed = bool(body.get("stream"))
            if path == "/v1/chat/completions" and streamed:
                self._send_events((None, chunk) for chunk in server.chat_completion_chunks(body, number))
            elif path == "/v1/chat/completions":
                self._send_json(200, server.chat_completion(body, number))
            elif streamed:
                self._send_events(server.message_events(body, number), done=False)
            else:
                self._send_json(200, server.message(body, number))

        def _send_json(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_{time.monotonic_ns()}")
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_events(self, events: Iterator[tuple[str | None, dict[str, Any]]], *, done: bool = True) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event, payload in events:
                prefix = f"event: {event}\n" if event else ""
                self._write_chunk(f"{prefix}data: {json.dumps(payload)}\n\n".encode())
            if done:
                self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


def _error(status: int, message: str, path: str = "") -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    if path == "/v1/messages":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


@pytest.fixture
def openai_server() -> Iterator[OpenAITestServer]:
    """A fresh server per test, on a free port of 127.0.0.1."""
    server = OpenAITestServer().start()
    try:
        yield server
    finally:
        server.stop()
