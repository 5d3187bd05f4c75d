from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.gpu.tasks import maintain_partitions


class Command(BaseCommand):
    help = "Create gpu_metric_point's daily partitions ahead of time and drop those past METRIC_RETENTION_DAYS."

    def handle(self, *args: Any, **options: Any) -> None:
        result = maintain_partitions()
        self.stdout.write(f"created {result['created']} partitions, dropped {result['dropped']}")
