"""manage.py rollup --since ISO [--until ISO] [--project ID ...] [--workers N]: rebuild hourly rollups."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.rollups.runner import rollup_range
from observatory.moments import command_moment


class Command(BaseCommand):
    help = "Rebuild the hourly rollups of every hour that overlaps [--since, --until) from the raw spans."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="start (inclusive), ISO date or date-time; UTC if no zone")
        parser.add_argument("--until", help="end (exclusive), ISO date or date-time; UTC if no zone (default: now)")
        parser.add_argument("--project", type=int, action="append", help="only this project id (repeatable)")
        parser.add_argument("--workers", type=int, default=1, help="day chunks rebuilt at once, one connection each")

    def handle(self, *args: Any, **options: Any) -> None:
        since = command_moment(options["since"])
        until = command_moment(options["until"]) if options["until"] else timezone.now()
        if until <= since:
            raise CommandError("--until must be after --since")
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        written = rollup_range(since, until, project_ids=options["project"], workers=options["workers"])
        self.stdout.write(f"Rolled up {since.isoformat()} to {until.isoformat()}: {written} rows.")
