"""manage.py detect_insights: run every detector family once now (what `insights.detect` does)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.insights.tasks import detect_all


class Command(BaseCommand):
    help = "Run the drift and regression detectors over every project once, now; prints the open findings written."

    def handle(self, *args: Any, **options: Any) -> None:
        written = detect_all()
        self.stdout.write(", ".join(f"{family}: {count}" for family, count in written.items()))
