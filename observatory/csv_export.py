"""The one CSV writer for every download (pages, traces, the API): spreadsheet-safe cells.

Tenant, feature, service and span names come from telemetry that any instrumented app can
send, so a text cell that a spreadsheet would run as a formula is neutralised (OWASP CSV
injection advice: prefix a single quote). Only text: numbers keep their sign.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any

from django.http import HttpResponse
from django.utils.text import slugify

# A cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and
# Google Sheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: str) -> str:
    """A text value as a cell no spreadsheet evaluates."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def cell(value: Any) -> Any:
    """Any value as a cell: None is empty, text is neutralised, numbers are left alone."""
    if value is None:
        return ""
    if isinstance(value, str):
        return text_cell(value)
    return value


def csv_response(header: Sequence[str], rows: Iterable[Sequence[Any]], filename: str) -> HttpResponse:
    """An attachment `<slugified filename>.csv` with a header row and one row per item."""
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{slugify(filename) or "observatory"}.csv"'
    writer = csv.writer(response, lineterminator="\r\n")
    writer.writerow([cell(name) for name in header])
    for row in rows:
        writer.writerow([cell(value) for value in row])
    return response
