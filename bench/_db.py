"""The database a benchmark runs on: its own, beside the server's others, never the demo's."""

from __future__ import annotations

import os
import urllib.parse

import psycopg
from psycopg import sql


def bench_database(name: str, reuse: bool = False) -> tuple[str, bool]:
    """The URL of database `name` on the server DATABASE_URL names (else the embedded one),
    created afresh unless `reuse` and it exists; and whether it was created."""
    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        from observatory import embedded

        base_url = embedded.postgres_url()
    bench_url = urllib.parse.urlsplit(base_url)._replace(path=f"/{name}").geturl()
    with psycopg.connect(base_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if reuse and exists:
            return bench_url, False
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return bench_url, True
