from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.reports.demo import send_demo_review


class Command(BaseCommand):
    help = (
        "`run.py demo`: send the demo user (given a demo@localhost address if it has none) the "
        "review of the last complete week, again if it was sent, so the archive and preview show one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", default="demo")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(send_demo_review(options["user"]))
