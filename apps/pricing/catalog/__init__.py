"""The price catalog shipped with Observatory (prices.csv) and the code that loads it.

prices.csv is our own data file: one row per (provider, model pattern, effective period),
USD per million tokens, each with the pricing page it was read from and the day it was
confirmed. Loading is an idempotent upsert on the natural key (provider, model_pattern,
effective_from): the data migration runs it on a fresh install, `manage.py load_prices`
after the file changes. Rows added in admin that the file does not know are left alone.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import models, transaction

from apps.pricing.providers import canonical_provider
from observatory.moments import parse_moment

CATALOG_PATH = Path(__file__).resolve().parent / "prices.csv"

COLUMNS = (
    "provider",
    "model_pattern",
    "effective_from",
    "effective_to",
    "input",
    "cached_input",
    "cache_write",
    "output",
    "reasoning",
    "source_url",
    "retrieved_on",
    "notes",
)


class CatalogError(ValueError):
    """The catalog file cannot be loaded; the message names the line and the problem."""


@dataclass(frozen=True, slots=True)
class CatalogRow:
    provider: str
    model_pattern: str
    effective_from: datetime
    effective_to: datetime | None
    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None
    cache_write_per_mtok: Decimal | None
    output_per_mtok: Decimal
    reasoning_per_mtok: Decimal | None
    source_url: str
    retrieved_on: date | None
    notes: str

    @property
    def natural_key(self) -> tuple[str, str, datetime]:
        return (self.provider, self.model_pattern, self.effective_from)

    def field_values(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    created: int
    updated: int
    unchanged: int


def _rate(text: str, column: str) -> Decimal | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"{column} is not a number: {text!r}") from exc
    if value < 0 or value != value.quantize(Decimal("0.000001")):
        raise ValueError(f"{column} must be >= 0 with at most 6 decimal places: {text!r}")
    return value


def _required_rate(text: str, column: str) -> Decimal:
    value = _rate(text, column)
    if value is None:
        raise ValueError(f"{column} is required")
    return value


def _parse_row(raw: dict[str, str]) -> CatalogRow:
    provider = canonical_provider(raw["provider"])
    if not provider:
        raise ValueError("provider is required")
    pattern = raw["model_pattern"].strip()
    if not pattern:
        raise ValueError("model_pattern is required")
    try:
        re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"model_pattern {pattern!r} does not compile: {exc}") from exc
    effective_from = parse_moment(raw["effective_from"])
    effective_to = parse_moment(raw["effective_to"]) if raw["effective_to"].strip() else None
    if effective_to is not None and effective_to <= effective_from:
        raise ValueError("effective_to must be after effective_from")
    retrieved = raw["retrieved_on"].strip()
    return CatalogRow(
        provider=provider,
        model_pattern=pattern,
        effective_from=effective_from,
        effective_to=effective_to,
        input_per_mtok=_required_rate(raw["input"], "input"),
        cached_input_per_mtok=_rate(raw["cached_input"], "cached_input"),
        cache_write_per_mtok=_rate(raw["cache_write"], "cache_write"),
        output_per_mtok=_required_rate(raw["output"], "output"),
        reasoning_per_mtok=_rate(raw["reasoning"], "reasoning"),
        source_url=raw["source_url"].strip(),
        retrieved_on=date.fromisoformat(retrieved) if retrieved else None,
        notes=raw["notes"].strip(),
    )


def read_catalog(path: Path = CATALOG_PATH) -> list[CatalogRow]:
    """Parse and check a catalog file; raise CatalogError naming the first bad line."""
    rows: list[CatalogRow] = []
    seen: dict[tuple[str, str, datetime], int] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise CatalogError(f"{path}: header must be {','.join(COLUMNS)}")
        for raw in reader:
            line = reader.line_num
            if None in raw or any(value is None for value in raw.values()):
                raise CatalogError(f"{path}:{line}: expected {len(COLUMNS)} columns")
            try:
                row = _parse_row(raw)
            except ValueError as exc:
                raise CatalogError(f"{path}:{line}: {exc}") from exc
            if row.natural_key in seen:
                first = seen[row.natural_key]
                raise CatalogError(f"{path}:{line}: same provider, pattern and effective_from as line {first}")
            seen[row.natural_key] = line
            rows.append(row)
    return rows


def upsert_prices(rows: list[CatalogRow], price_model: type[models.Model] | None = None) -> UpsertResult:
    """Insert new rows and update changed ones, matched on the natural key; one transaction.

    `price_model` is the historical model when a data migration calls this.
    """
    if price_model is None:
        from apps.pricing.models import Price

        price_model = Price
    # Any: the historical model a migration passes has no static type.
    manager: Any = price_model._default_manager
    created = updated = unchanged = 0
    with transaction.atomic():
        existing = {(p.provider, p.model_pattern, p.effective_from): p for p in manager.select_for_update()}
        for row in rows:
            values = row.field_values()
            current = existing.get(row.natural_key)
            if current is None:
                manager.create(**values)
                created += 1
                continue
            # Decimal and aware-datetime equality compare values, so 2.5 == 2.500000 from the
            # database and an unchanged row is not rewritten.
            changed = [name for name, value in values.items() if getattr(current, name) != value]
            if changed:
                for name in changed:
                    setattr(current, name, values[name])
                current.save(update_fields=changed)
                updated += 1
            else:
                unchanged += 1
    return UpsertResult(created=created, updated=updated, unchanged=unchanged)
