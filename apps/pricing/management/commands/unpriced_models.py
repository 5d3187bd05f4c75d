"""manage.py unpriced_models [--days N]: models on LLM spans that no price row covers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from apps.pricing.services import unpriced_models


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


class Command(BaseCommand):
    help = "List (provider, model) pairs whose spans have an unknown cost because no price row matches them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=7, help="look back this many days (default 7; 0 = all time)")

    def handle(self, *args: Any, **options: Any) -> None:
        days: int = options["days"]
        since = timezone.now() - timedelta(days=days) if days > 0 else None
        rows = unpriced_models(since)
        window = f"in the last {days} days" if since else "ever"
        if not rows:
            self.stdout.write(f"Every LLM span {window} has a price (self-hosted spans aside).")
            return
        self.stdout.write(f"Models without a price {window}: add a row in admin (Pricing > Prices), then re-price.")
        header = ("provider", "model", "spans", "first seen", "last seen", "input tokens", "output tokens")
        lines = [header] + [
            (
                row.provider or "(none)",
                row.model or "(none)",
                f"{row.spans:,}",
                row.first_seen.strftime("%Y-%m-%d %H:%M"),
                row.last_seen.strftime("%Y-%m-%d %H:%M"),
                _count(row.input_tokens),
                _count(row.output_tokens),
            )
            for row in rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
