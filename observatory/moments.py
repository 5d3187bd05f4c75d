"""Reading a moment a person or a file wrote: an ISO 8601 date or date-time.

One rule everywhere (price catalog, management commands, page and API parameters): a bare
date is midnight UTC, a date-time without an offset is UTC, and the result is in UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from django.core.management.base import CommandError


def parse_moment(text: str) -> datetime:
    """The moment `text` names; ValueError when it is no ISO date or date-time."""
    text = text.strip()
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    moment = datetime.fromisoformat(text)
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def command_moment(text: str) -> datetime:
    """parse_moment for management command options: a bad value is a CommandError."""
    try:
        return parse_moment(text)
    except ValueError as exc:
        raise CommandError(f"Not an ISO date or date-time: {text!r}") from exc
