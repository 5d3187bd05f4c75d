"""manage.py reprice --since ISO --until ISO [--provider P] [--model M]: re-price stored spans."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.pricing.services import reprice_range
from observatory.moments import command_moment


class Command(BaseCommand):
    help = "Re-price LLM spans that started in [--since, --until) with the price catalog as it is now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="start (inclusive), ISO date or date-time; UTC if no zone")
        parser.add_argument("--until", help="end (exclusive), ISO date or date-time; UTC if no zone (default: now)")
        parser.add_argument("--provider", help="only this provider (gen_ai.provider.name; aliases accepted)")
        parser.add_argument("--model", help="only this model name (response model, else request model)")

    def handle(self, *args: Any, **options: Any) -> None:
        since = command_moment(options["since"])
        until = command_moment(options["until"]) if options["until"] else timezone.now()
        if until <= since:
            raise CommandError("--until must be after --since")
        changed = reprice_range(since, until, provider=options["provider"], model=options["model"])
        self.stdout.write(f"Re-priced {changed} spans between {since.isoformat()} and {until.isoformat()}.")
