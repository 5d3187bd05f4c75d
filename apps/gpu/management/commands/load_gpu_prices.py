from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.gpu.catalog import CatalogError, read_catalog, upsert_gpu_prices


class Command(BaseCommand):
    help = "Load apps/gpu/catalog/gpu_prices.csv into the GPU price table (idempotent upsert)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rows = read_catalog()
        except CatalogError as exc:
            raise CommandError(str(exc)) from exc
        created, updated = upsert_gpu_prices(rows)
        self.stdout.write(f"GPU prices: {created} created, {updated} updated ({len(rows)} rows in the file)")
