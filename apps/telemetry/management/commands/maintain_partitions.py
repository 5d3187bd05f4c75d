from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.telemetry.partitions import maintain_partitions


class Command(BaseCommand):
    help = "Create the span table's daily partitions ahead of time and drop those past SPAN_RETENTION_DAYS."

    def handle(self, *args: Any, **options: Any) -> None:
        created, dropped = maintain_partitions()
        self.stdout.write(f"created {len(created)} partitions, dropped {len(dropped)}")
