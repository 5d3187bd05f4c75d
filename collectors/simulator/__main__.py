"""`python -m collectors.simulator`: backfill history and/or stream live traffic to Observatory."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import NoReturn

from collectors.simulator.incidents import describe_incidents
from collectors.simulator.runner import (
    DEFAULT_ENDPOINT,
    DEFAULT_FULL_RATE_DAYS,
    DEFAULT_LIVE_RATE_PER_MIN,
    DEFAULT_REQUESTS_PER_DAY,
    PROTOCOLS,
    Simulator,
)
from collectors.simulator.serving import DEFAULT_SAMPLE_S


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m collectors.simulator",
        description="Send simulated LLM traffic (tenants, features, OpenAI/Anthropic/Gemini/Mistral/vLLM calls) "
        "as OpenTelemetry spans to an OTLP/HTTP endpoint.",
        epilog="incidents (repeat --incident; times: now, -2d, -6h30m, +10m or ISO 8601):\n" + describe_incidents(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--endpoint", default=DEFAULT_ENDPOINT, help="OTLP/HTTP base URL; spans go to ENDPOINT/v1/traces"
    )
    parser.add_argument("--key", help="ingest key, sent as 'Authorization: Bearer KEY'")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="protobuf", help="OTLP encoding (default protobuf)")
    parser.add_argument("--gzip", action="store_true", help="gzip the request bodies")
    parser.add_argument("--backfill-days", type=float, metavar="N", help="first send N days of history ending now")
    parser.add_argument("--live", action="store_true", help="then keep sending in real time until Ctrl-C")
    parser.add_argument(
        "--shaped",
        action="store_true",
        help="live: --rate is the weekly average and follows the tenants' daily and weekly load, "
        "like a backfill (give --rate as backfill requests per day / 1440 to continue it evenly)",
    )
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_LIVE_RATE_PER_MIN, help="live requests per minute (default %(default)s)"
    )
    parser.add_argument(
        "--requests-per-day",
        type=float,
        default=DEFAULT_REQUESTS_PER_DAY,
        help="backfill requests per day across all tenants (default %(default)s)",
    )
    parser.add_argument(
        "--older-requests-per-day", type=float, metavar="R",
        help="backfill days more than --full-rate-days before now get R requests per day instead "
        "(quick weeks of baseline history)",
    )  # fmt: skip
    parser.add_argument(
        "--full-rate-days", type=float, default=DEFAULT_FULL_RATE_DAYS, metavar="D",
        help="with --older-requests-per-day: the last D days keep --requests-per-day (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--no-serving-metrics", action="store_true",
        help="send spans only: no simulated GPU samples or vLLM series to ENDPOINT/v1/metrics",
    )  # fmt: skip
    parser.add_argument(
        "--sample-seconds", type=int, default=DEFAULT_SAMPLE_S, metavar="S",
        help=f"seconds between simulated GPU and vLLM samples (default {DEFAULT_SAMPLE_S})",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, help="seed the random draws (default: random; printed in the summary)")
    parser.add_argument(
        "--incident", action="append", default=[], metavar="SPEC", help="NAME:TARGET@START[..END], repeatable"
    )
    parser.add_argument("--list-incidents", action="store_true", help="describe the incident scenarios and exit")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    # The demo launcher stops its children with SIGTERM: take the Ctrl-C path, which flushes.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_incidents:
        print(describe_incidents())
        return 0
    if args.backfill_days is None and not args.live:
        parser.error("nothing to do: give --backfill-days N, --live, or both")
    if args.backfill_days is not None and args.backfill_days <= 0:
        parser.error("--backfill-days must be positive")
    if args.older_requests_per_day is not None and args.older_requests_per_day < 0:
        parser.error("--older-requests-per-day must not be negative")
    if args.full_rate_days < 0:
        parser.error("--full-rate-days must not be negative")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if args.sample_seconds < 1:
        parser.error("--sample-seconds must be at least 1")
    if not args.key:
        print("warning: no --key given; the receiver will likely answer 401", file=sys.stderr)
    # The exporter logs each retry (503 + Retry-After) and each dropped batch: worth seeing.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    now = datetime.now(UTC)
    try:
        sim = Simulator(
            args.endpoint, args.key, protocol=args.protocol, seed=args.seed, incidents=args.incident, now=now,
            gzip=args.gzip, serving_metrics=not args.no_serving_metrics, sample_s=args.sample_seconds,
        )  # fmt: skip
    except ValueError as error:
        parser.error(str(error))
    progress = not args.quiet
    try:
        if args.backfill_days is not None:
            sim.backfill(
                now - timedelta(days=args.backfill_days),
                now,
                requests_per_day=args.requests_per_day,
                progress=progress,
                older_requests_per_day=args.older_requests_per_day,
                full_rate_days=args.full_rate_days,
            )
            sim.flush()
            if args.live:
                print(f"backfill done: {sim.summary.traces:,} traces; going live", file=sys.stderr)
        if args.live:
            print(f"live at {args.rate:g} requests/min; Ctrl-C to stop", file=sys.stderr)
            sim.live(args.rate, progress=progress, shaped=args.shaped)
    except KeyboardInterrupt:
        print("\nstopping: flushing what was generated", file=sys.stderr)
    finally:
        summary = sim.close()
    print(json.dumps(summary.as_dict(), indent=2) if args.json else summary.format())
    return 1 if summary.failed_spans or summary.failed_metric_exports else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sys.exit(main())
