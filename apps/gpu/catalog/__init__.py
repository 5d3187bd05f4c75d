"""The GPU price catalog shipped with Observatory (gpu_prices.csv) and the code that loads it.

One row per (provider, GPU model pattern, effective period), USD per GPU-hour, each with the
page it comes from, the day it was confirmed (empty where it could not be) and notes saying
how sure the figure is. Loading is an idempotent upsert on (provider, gpu_model_pattern,
effective_from): the data migration runs it on a fresh install, `manage.py load_gpu_prices`
after the file changes. Rows added in admin (an `on-prem` figure, a negotiated rate) stay.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction

from observatory.moments import parse_moment

CATALOG_PATH = Path(__file__).resolve().parent / "gpu_prices.csv"
COLUMNS = (
    "provider", "gpu_model_pattern", "effective_from", "effective_to", "usd_per_gpu_hour", "source_url",
    "retrieved_on", "notes",
)  # fmt: skip


class CatalogError(ValueError):
    """The file cannot be loaded; the message names the line and the problem."""


@dataclass(frozen=True, slots=True)
class GpuCatalogRow:
    provider: str
    gpu_model_pattern: str
    effective_from: datetime
    effective_to: datetime | None
    usd_per_gpu_hour: Decimal
    source_url: str
    retrieved_on: date | None
    notes: str


def read_catalog(path: Path = CATALOG_PATH) -> list[GpuCatalogRow]:
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise CatalogError(f"{path.name}: header must be {','.join(COLUMNS)}")
        for line, raw in enumerate(reader, start=2):
            try:
                rows.append(_row(raw))
            except (ValueError, InvalidOperation, re.error) as exc:
                raise CatalogError(f"{path.name} line {line}: {exc}") from None
    return rows


def _row(raw: dict[str, str]) -> GpuCatalogRow:
    pattern = raw["gpu_model_pattern"].strip()
    re.compile(pattern, re.IGNORECASE)
    price = Decimal(raw["usd_per_gpu_hour"].strip())
    if price < 0:
        raise ValueError("usd_per_gpu_hour is negative")
    start = parse_moment(raw["effective_from"].strip())
    end = parse_moment(raw["effective_to"].strip()) if raw["effective_to"].strip() else None
    if end is not None and end <= start:
        raise ValueError("effective_to is not after effective_from")
    retrieved = raw["retrieved_on"].strip()
    return GpuCatalogRow(
        provider=raw["provider"].strip().lower(),
        gpu_model_pattern=pattern,
        effective_from=start,
        effective_to=end,
        usd_per_gpu_hour=price,
        source_url=raw["source_url"].strip(),
        retrieved_on=date.fromisoformat(retrieved) if retrieved else None,
        notes=raw["notes"].strip(),
    )


def upsert_gpu_prices(rows: list[GpuCatalogRow], price_model: Any = None) -> tuple[int, int]:
    """(created, updated). `price_model` lets the data migration pass its historical model."""
    if price_model is None:
        from apps.gpu.models import GpuPrice as price_model
    created = updated = 0
    with transaction.atomic():
        for row in rows:
            _, was_created = price_model.objects.update_or_create(
                provider=row.provider,
                gpu_model_pattern=row.gpu_model_pattern,
                effective_from=row.effective_from,
                defaults={
                    "effective_to": row.effective_to,
                    "usd_per_gpu_hour": row.usd_per_gpu_hour,
                    "source_url": row.source_url,
                    "retrieved_on": row.retrieved_on,
                    "notes": row.notes,
                },
            )
            created += was_created
            updated += not was_created
    return created, updated
