"""Turning query results into JSON values and CSV cells, the same way for both.

Values: datetimes are ISO 8601 in UTC with a "Z"; Decimals (USD amounts) are strings holding
the fixed-point decimal on the query layer's one money scale ("0.0012340000", 10 decimals:
apps/metrics/catalog.quantize_money), so no client loses cents to binary floats; counts are
integers; ratios and percentiles are numbers; a value that cannot be computed or is not
known (no samples, a zero denominator, a cost over calls none of which is priced) is null.
In CSV, null is an empty cell and a JSON object (errors_by_type) is its JSON text.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np

from observatory.csv_export import text_cell


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):  # a percentile or count straight from the sketch code
        value = value.item()
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def csv_cell(value: Any) -> str:
    """The CSV text of a JSON value (as `jsonable` returns it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def columns_for(expected: Sequence[str], rows: Iterable[dict[str, Any]]) -> list[str]:
    """The expected columns, then any other key a row carries (nothing is dropped)."""
    columns = list(expected)
    known = set(columns)
    for row in rows:
        for key in row:
            if key not in known:
                known.add(key)
                columns.append(key)
    return columns


def to_csv(columns: Sequence[str], rows: Iterable[dict[str, Any]], text_columns: frozenset[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            cell = csv_cell(row.get(column))
            cells.append(text_cell(cell) if column in text_columns else cell)
        writer.writerow(cells)
    return buffer.getvalue()
