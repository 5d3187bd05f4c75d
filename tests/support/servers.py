"""Real server processes for tests: gunicorn serving Observatory against a test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url(settings_dict: dict[str, Any]) -> str:
    """A DATABASE_URL for another process, naming the database this connection uses."""
    user = urllib.parse.quote(settings_dict.get("USER") or "", safe="")
    password = urllib.parse.quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else f"{user}@" if user else ""
    name = urllib.parse.quote(settings_dict["NAME"], safe="")
    host, port = settings_dict.get("HOST") or "", settings_dict.get("PORT") or ""
    if host.startswith("/"):  # a Unix socket directory (the embedded PostgreSQL)
        query = urllib.parse.urlencode({"host": host, **({"port": port} if port else {})})
        return f"postgresql://{credentials}/{name}?{query}"
    return f"postgresql://{credentials}{host}{f':{port}' if port else ''}/{name}"


def wait_for_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def gunicorn(database: str, log_path: Path, *, threads: int = 4, workers: int = 1, **env: str) -> Iterator[str]:
    """Observatory's production web process on a free port; yields its base URL. With
    `workers` > 1, requests are spread over that many processes (per-process state is not
    shared)."""
    port = free_port()
    environment = {**os.environ, "DATABASE_URL": database, **env}
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "observatory.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "--threads", str(threads), "--access-logfile", "-"],
            cwd=ROOT, env=environment, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz")
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=15)
