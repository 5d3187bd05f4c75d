"""manage.py demo_settle: what `run.py demo` runs once its history is loaded (observatory/demo.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from observatory.demo import settle


class Command(BaseCommand):
    help = (
        "After the demo backfill: wait for the rollups, let GPU cost attribution catch up, run the "
        "detectors and alert rules once and send the demo user's weekly review. A failing step is "
        "reported and the rest still run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rollup-timeout", type=float, default=300, help="seconds to wait for the rollups")
        parser.add_argument(
            "--after-backfill", action="store_true", help="a backfill just ran: attribute GPU costs from its start"
        )
        parser.add_argument("--gpu-budget", type=float, default=90, help="seconds to spend on GPU cost attribution")

    def handle(self, *args: Any, **options: Any) -> None:
        done = settle(
            options["rollup_timeout"], options["gpu_budget"], say=self.stdout.write,
            after_backfill=options["after_backfill"],
        )  # fmt: skip
        failed = [name for name, ok in done.items() if not ok]
        if failed:
            self.stdout.write(f"demo steps that failed: {', '.join(failed)}")
