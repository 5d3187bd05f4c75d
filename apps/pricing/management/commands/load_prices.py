"""manage.py load_prices [--file F]: upsert a price catalog file; running it twice changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.pricing.catalog import CATALOG_PATH, CatalogError, read_catalog, upsert_prices


class Command(BaseCommand):
    help = "Load (insert or update) price rows from a catalog CSV, matched on provider + pattern + effective_from."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--file", type=Path, default=CATALOG_PATH, help=f"catalog CSV (default: {CATALOG_PATH})")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        try:
            rows = read_catalog(path)
        except CatalogError as exc:
            raise CommandError(str(exc)) from exc
        result = upsert_prices(rows)
        self.stdout.write(
            f"{path}: {len(rows)} rows; {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged."
        )
        if result.created or result.updated:
            self.stdout.write(
                self.style.WARNING(
                    "Stored spans keep their old cost until re-priced: "
                    "run manage.py reprice --since ... --until ... for the periods that changed."
                )
            )
