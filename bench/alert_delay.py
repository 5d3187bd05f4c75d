"""The delay from the first bad span to its alert notification, measured end to end with the
default schedule (issue 10: `alert_delay_s`, target < 120 s).

    python3 run.py bench alert_delay [--history-spans 300000] [--rules 1000] [--trials 3]

On a fresh database of its own (observatory_bench_alert_delay): `--history-spans` spans over
the last `--history-days` days up to now (bench/_spans.py, COPY, rolled up), so the rules
have data to judge; the 1,000 rules bench/alerts.py makes over that data's names; and one
probe rule: p99 end-to-end latency over 5 minutes above 4 s (warning) / 8 s (critical), at
least 20 samples, per feature, over the features `delay-probe-1` .. `-N` (no history), with a
signed JSON webhook channel to an HTTP server in this process. Then it starts what production
runs (as bench/soak.py does): gunicorn (the launcher's command), a Celery worker and beat on a
private Redis, with the default schedule (ALERTS_SWEEP_SECONDS, ALERTS_EVALUATE_EVERY_SECONDS
and INSIGHTS_SECONDS are removed from the children's environment: alerts every 30 s, rollups
every 15 s, insights every 300 s), and waits for two sweeps (a warm worker).

Each trial waits a random offset within the sweep period (beat's phase is not known to the
bench, so offsets sample every position in it), then at a recorded moment (wall clock, the
end time of every bad span) makes `--bad-spans` traces on feature `delay-probe-<trial>`, each
an LLM call of 30 s, with the real OpenTelemetry SDK, and exports them at once (one batch,
BatchSpanProcessor + force_flush) through the real OTLP/HTTP protobuf exporter to the
receiver; then waits for the webhook to receive the `fired` notification of that feature.
The delay is arrival minus the recorded moment. Printed per trial: the offset, when the
receiver acknowledged, when the evaluation that fired it started (the notification's
created_at), and the arrival.

The last lines are `alert_delay_median_s=<median>` and `alert_delay_s=<worst>`; the issue's
figure is the worst. bench/alerts.py prints the cycle (`alert_cycle_s`) and a computed
upper bound (`alert_delay_bound_s`).
"""

from __future__ import annotations

import argparse
import contextlib
import email
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._db import bench_database  # noqa: E402

DATABASE = "observatory_bench_alert_delay"
PROBE_RULE = "delay probe"
PROBE_FEATURE = "delay-probe-{}"
BAD_CALL_SECONDS = 30  # far above the probe rule's 8 s critical level
# The schedule under test is the default one: these would change it in the children.
SCHEDULE_VARIABLES = ("ALERTS_SWEEP_SECONDS", "ALERTS_EVALUATE_EVERY_SECONDS", "INSIGHTS_SECONDS")


# --------------------------------------------------------------------------- the sink


@dataclass
class Arrival:
    at: float  # wall clock (time.time()), the moment the request was read
    body: dict[str, Any]


class _Sink:
    """Arrivals noted by a server thread, waited for by the bench."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.changed = threading.Condition()

    def note(self, at: float, body: dict[str, Any]) -> None:
        with self.changed:
            self.arrivals.append(Arrival(at, body))
            self.changed.notify_all()

    def wait_for(self, matches: Callable[[dict[str, Any]], bool], timeout: float) -> Arrival | None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for arrival in self.arrivals:
                    if matches(arrival.body):
                        return arrival
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)


class WebhookSink(_Sink):
    """A JSON webhook receiver on loopback that notes when each notification arrives."""

    def __init__(self) -> None:
        super().__init__()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                at = time.time()
                self.send_response(204)
                self.end_headers()
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = {"unparsed": body[:200].decode(errors="replace")}
                sink.note(at, parsed)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_fired(self, feature: str, timeout: float) -> Arrival | None:
        """The first `fired` notification of the probe rule for `feature`, waiting up to
        `timeout` seconds for it."""
        return self.wait_for(lambda body: _is_probe_fired(body, feature), timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MailSink(_Sink):
    """An SMTP server on loopback (aiosmtpd) that notes when each message is received."""

    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        super().__init__()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                at = time.time()
                message = email.message_from_bytes(envelope.content)
                sink.note(at, {"subject": str(message.get("Subject", "")), "to": list(envelope.rcpt_tos)})
                return "250 Message accepted"

        self.port = port
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()

    def wait_fired(self, feature: str, timeout: float) -> Arrival | None:
        """The first mail about the probe rule's alert for `feature` (not a resolved notice)."""

        def matches(body: dict[str, Any]) -> bool:
            subject = body.get("subject", "")
            return PROBE_RULE in subject and feature in subject and "RESOLVED" not in subject

        return self.wait_for(matches, timeout)

    def close(self) -> None:
        self.controller.stop()


def _is_probe_fired(body: dict[str, Any], feature: str) -> bool:
    group = (body.get("details") or {}).get("group") or {}
    return (
        body.get("event") == "fired"
        and (body.get("rule") or {}).get("name") == PROBE_RULE
        and group.get("feature") == feature
    )


# --------------------------------------------------------------------------- rules and spans


def make_probe_rule(features: list[str], webhook_url: str, mail_to: str | None = None) -> Any:
    """The rule the bad traffic trips: one alert per probe feature, so each trial fires anew.
    It notifies a signed JSON webhook, and an email address when `mail_to` is given."""
    from apps.alerts.models import AlertRule, Channel

    channels = [Channel.objects.create(name="delay sink", kind=Channel.Kind.WEBHOOK, config={"url": webhook_url})]
    if mail_to:
        channels.append(Channel.objects.create(name="delay mail", kind=Channel.Kind.EMAIL, config={"to": [mail_to]}))
    rule = AlertRule.objects.create(
        name=PROBE_RULE,
        kind=AlertRule.Kind.LATENCY,
        distribution=AlertRule.Distribution.E2E,
        percentile="99",
        window_minutes=5,
        warning_threshold=4000,
        critical_threshold=8000,
        min_samples=20,
        features=features,
        group_by=["feature"],
    )
    rule.channels.add(*channels)
    return rule


def send_bad_spans(endpoint: str, key: str, feature: str, count: int) -> tuple[float, float]:
    """`count` traces on `feature`, each a root span and a 30 s LLM call that end now, exported
    in one batch by the real SDK and OTLP/HTTP protobuf exporter. Returns (the moment the
    spans end, the moment the receiver acknowledged the batch), wall clock."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind, set_span_in_context

    exporter = OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    provider = TracerProvider(resource=Resource.create({"service.name": "delay-bench", "tenant.id": "tenant-00"}))
    # One batch for all of them: the export is started by force_flush, not by the SDK's timer.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=max(512, 2 * count)))
    tracer = provider.get_tracer("bench.alert_delay")
    bad_at = time.time()
    end_ns = int(bad_at * 1e9)
    start_ns = end_ns - BAD_CALL_SECONDS * 1_000_000_000
    llm: dict[str, Any] = {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 900,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.response.finish_reasons": ["stop"],
    }
    for _ in range(count):
        root = tracer.start_span("POST /chat", kind=SpanKind.SERVER, start_time=start_ns,
                                 attributes={"app.feature": feature})  # fmt: skip
        call = tracer.start_span("chat gpt-4o-mini", context=set_span_in_context(root), kind=SpanKind.CLIENT,
                                 start_time=start_ns, attributes=llm)  # fmt: skip
        call.end(end_time=end_ns)
        root.end(end_time=end_ns)
    if not provider.force_flush(60_000):
        raise RuntimeError("the bad spans were not exported within 60 s")
    acknowledged_at = time.time()
    provider.shutdown()
    return bad_at, acknowledged_at


def _probe_sweeps(rule_id: int) -> Any:
    from apps.alerts.models import AlertRule

    return AlertRule.objects.filter(pk=rule_id).values_list("next_evaluation_at", flat=True).get()


def wait_for_sweeps(rule_id: int, sweeps: int, timeout: float) -> list[float]:
    """Wait until the probe rule has been claimed `sweeps` times (its next_evaluation_at moved);
    returns the wall-clock moments each claim was seen."""
    seen: list[float] = []
    last = _probe_sweeps(rule_id)
    deadline = time.monotonic() + timeout
    while len(seen) < sweeps:
        if time.monotonic() > deadline:
            raise SystemExit(f"the alerts sweep claimed the probe rule {len(seen)} times in {timeout:.0f} s")
        time.sleep(0.25)
        current = _probe_sweeps(rule_id)
        if current != last:
            seen.append(time.time())
            last = current
    return seen


# --------------------------------------------------------------------------- main


def _worker_summary(log: Path) -> None:
    """The sweeps' cycle times and the insights runs, from the worker's log (what shared the
    `alerts` queue with the sweeps while the trials ran)."""
    text = log.read_text(errors="replace")
    pattern = r"evaluated \d+ rules in \d+ shapes \(\d+ queries, ([\d.]+)s\)"
    cycles = [float(found) for found in re.findall(pattern, text)]
    insights = len(re.findall(r"Task insights\.detect\[[^]]+\] succeeded", text))
    if cycles:
        print(f"worker: {len(cycles)} sweeps evaluated the rules, cycle median {statistics.median(cycles):.2f} s, "
              f"slowest {max(cycles):.2f} s (the first: {cycles[0]:.2f} s); insights.detect ran {insights} "
              f"times")  # fmt: skip


def _report(trial: int, feature: str, offset: float, bad_spans: int, bad_at: float, acknowledged_at: float,
            arrival: Arrival, mailed: Arrival | None, probe_id: int) -> None:  # fmt: skip
    from apps.alerts.models import Notification

    fired = Notification.objects.filter(rule_id=probe_id, event="fired", state__group_key__contains=feature)
    evaluated = fired.values_list("created_at", flat=True).first()
    evaluated_s = f"+{evaluated.timestamp() - bad_at:.1f} s" if evaluated else "?"
    print(f"trial {trial} ({feature}, after a {offset:.1f} s offset): {bad_spans} bad traces acknowledged "
          f"+{acknowledged_at - bad_at:.2f} s, evaluation that fired started {evaluated_s}, notification "
          f"({arrival.body.get('level')}) at the webhook +{arrival.at - bad_at:.1f} s, by email "
          f"{f'+{mailed.at - bad_at:.1f} s' if mailed else 'never'}", flush=True)  # fmt: skip


def build_history(spans: int, days: int, seed: int) -> tuple[Any, Any]:
    """The project and the history: `spans` spans over the last `days` days, rolled up."""
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from apps.accounts.models import Project
    from apps.rollups import runner
    from apps.telemetry.partitions import ensure_partitions_for
    from bench._spans import load_spans

    call_command("migrate", verbosity=0)
    project = Project.objects.create(name="bench")
    now = timezone.now()
    connection.ensure_connection()
    began = time.perf_counter()
    start = now - timedelta(days=days)
    # Day-aligned partitions first: load_spans names its partitions by day but bounds them from
    # `start`, which here is not a midnight.
    ensure_partitions_for((start + timedelta(days=offset)).date() for offset in range(days + 2))
    load_spans(connection.connection, spans, days, seed, project_ids=(project.pk,), start=start)
    began_rollup = time.perf_counter()
    runner.rollup_range(now - timedelta(days=days + 1), now + timedelta(hours=1))
    print(f"history: {spans:,} spans over the last {days} days loaded in {began_rollup - began:.1f} s, "
          f"rolled up in {time.perf_counter() - began_rollup:.1f} s")  # fmt: skip
    return project, now


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history-spans", type=int, default=300_000)
    parser.add_argument("--history-days", type=int, default=2)
    parser.add_argument("--rules", type=int, default=1000, help="rules beside the probe (bench/alerts.py's mix)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--bad-spans", type=int, default=25, help="bad traces per trial (the rule needs 20)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--offset-seed", type=int, help="seed of the trials' offsets (default: a fresh draw)")
    parser.add_argument("--timeout", type=float, default=300, help="most seconds to wait for one notification")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()

    bench_url, _ = bench_database(DATABASE)
    os.environ.update(DATABASE_URL=bench_url, DJANGO_SETTINGS_MODULE="observatory.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    overridden = {name: os.environ.pop(name) for name in SCHEDULE_VARIABLES if name in os.environ}
    if overridden:
        print(f"ignoring {overridden}: the default schedule is measured")
    workdir = Path(tempfile.mkdtemp(prefix="obs-delay-", dir="/tmp"))  # short: a socket path
    print(f"database {DATABASE}; logs in {workdir}")

    import django

    django.setup()

    from django.conf import settings

    from apps.accounts.models import IngestKey
    from bench.alerts import make_rules
    from bench.ingest import _free_port
    from bench.soak import _private_broker, _start, _wait_http
    from observatory.celery import ALERTS_SWEEP_EVERY
    from observatory.launcher import _gunicorn, _stop_child

    sweep_s = ALERTS_SWEEP_EVERY.total_seconds()
    project, now = build_history(args.history_spans, args.history_days, args.seed)
    _, key = IngestKey.issue(project, "delay bench")
    rules = make_rules(args.rules, now, args.seed)
    features = [PROBE_FEATURE.format(trial) for trial in range(1, args.trials + 1)]
    sink = WebhookSink()
    mail = MailSink(_free_port())
    probe = make_probe_rule(features, sink.url, mail_to="lead@delay-bench.test")
    print(f"{len(rules)} rules + the probe rule (p99 e2e over 5 min > 8 s, per feature of {features})")
    print(f"schedule: alerts sweep every {sweep_s:.0f} s, rules due every {settings.ALERTS_EVALUATE_EVERY_SECONDS} s")

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen[bytes]] = []
    delays: list[float] = []
    mail_delays: list[float] = []
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(_private_broker(workdir))
        env = {**os.environ, "REDIS_URL": broker, "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(mail.port)}
        for name in ("EMAIL_BACKEND", "EMAIL_USE_TLS", "EMAIL_USE_SSL", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD"):
            env.pop(name, None)  # plain SMTP to the sink on loopback
        try:
            children.append(
                _start(_gunicorn([f"127.0.0.1:{port}"], workers=args.workers), env, workdir / "gunicorn.log")
            )
            _wait_http(f"{base}/healthz")
            children.append(_start([sys.executable, "-m", "celery", "-A", "observatory", "worker", "--concurrency", "2",
                                    "--hostname", f"delay-{port}@%h", "--loglevel", "INFO"], env,
                                   workdir / "worker.log"))  # fmt: skip
            children.append(_start([sys.executable, "-m", "celery", "-A", "observatory", "beat", "--schedule",
                                    str(workdir / "celerybeat-schedule"), "--loglevel", "INFO"], env,
                                   workdir / "beat.log"))  # fmt: skip
            print(f"gunicorn on {base}, Celery worker (2) and beat on {broker}; waiting for two sweeps ...", flush=True)
            claims = wait_for_sweeps(probe.pk, 2, timeout=4 * sweep_s + 120)
            print(f"warm: two sweeps claimed the rules, {claims[1] - claims[0]:.1f} s apart", flush=True)

            # Not seeded: the offsets count from the notification before (itself a cycle after a
            # sweep), so a fixed seed would put every run's trials at the same places in the period.
            rng = random.Random(args.offset_seed)
            for trial, feature in enumerate(features, start=1):
                offset = rng.uniform(0, sweep_s)
                time.sleep(offset)
                bad_at, acknowledged_at = send_bad_spans(f"{base}/v1/traces", key, feature, args.bad_spans)
                arrival = sink.wait_fired(feature, args.timeout)
                if arrival is None:
                    print(f"trial {trial}: no notification within {args.timeout:.0f} s")
                    return 1
                delays.append(arrival.at - bad_at)
                # Sent by its own `alerts.deliver` beside the webhook's: it comes within seconds or not at all.
                mailed = mail.wait_fired(feature, 60)
                if mailed is not None:
                    mail_delays.append(mailed.at - bad_at)
                _report(trial, feature, offset, args.bad_spans, bad_at, acknowledged_at, arrival, mailed, probe.pk)
        finally:
            for child in reversed(children):
                _stop_child(child)
            sink.close()
            mail.close()
    _worker_summary(workdir / "worker.log")

    shutil.rmtree(workdir, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} (1 min) at the end")
    if len(mail_delays) == len(delays):
        worst_mail = max(mail_delays)
        print(f"by email (SMTP on loopback): median {statistics.median(mail_delays):.1f} s, worst {worst_mail:.1f} s")
    else:
        print(f"by email: {len(delays) - len(mail_delays)} of {len(delays)} notifications never arrived")
    print(f"alert_delay_median_s={statistics.median(delays):.1f}")
    print(f"alert_delay_s={max(delays):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
