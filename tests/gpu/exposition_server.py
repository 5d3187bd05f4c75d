"""A real HTTP server on loopback serving recorded /metrics text, one body per request in turn."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class ExpositionServer:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.bodies: list[tuple[int, str]] = []
        self.requests = 0

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    def serve(self, *bodies: str, status: int = 200) -> None:
        """The next requests get these bodies in order; the last one repeats."""
        self.bodies = [(status, body) for body in bodies]

    def next_body(self) -> tuple[int, str]:
        self.requests += 1
        return self.bodies.pop(0) if len(self.bodies) > 1 else self.bodies[0]


@contextmanager
def exposition_server() -> Iterator[ExpositionServer]:
    holder: dict[str, ExpositionServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = holder["server"].next_body()
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["server"] = ExpositionServer(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["server"]
    finally:
        server.shutdown()
        server.server_close()
