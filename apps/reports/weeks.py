"""Review weeks: Monday 00:00 to the next Monday 00:00 in the reader's time zone.

A week is named by the ISO week of its Monday ("2026-W48"); its bounds are aware datetimes
in UTC, so the query layer (UTC hours) reads exactly the reader's week. A zone with a
half-hour offset gives bounds inside an hour: the query layer reads those edges from raw
spans, still exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

WEEK_LABEL = re.compile(r"^(?P<year>\d{4})-W(?P<week>\d{2})$")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone (use an IANA name such as Europe/Paris)") from None


def timezone_names() -> list[str]:
    return sorted(available_timezones())


@dataclass(frozen=True)
class ReviewWeek:
    monday: date  # the local Monday the week starts on
    timezone: str

    @property
    def label(self) -> str:
        year, week, _ = self.monday.isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def start(self) -> datetime:
        return _local_midnight(self.monday, self.timezone)

    @property
    def end(self) -> datetime:
        return _local_midnight(self.monday + timedelta(days=7), self.timezone)

    @property
    def previous(self) -> ReviewWeek:
        return ReviewWeek(self.monday - timedelta(days=7), self.timezone)

    def days(self) -> list[date]:
        return [self.monday + timedelta(days=n) for n in range(7)]

    def describe(self) -> str:
        """'23-29 Nov 2026' or '30 Nov - 6 Dec 2026'."""
        last = self.monday + timedelta(days=6)
        if last.month == self.monday.month:
            return f"{self.monday.day}-{last.day} {last:%b %Y}"
        if last.year == self.monday.year:
            return f"{self.monday.day} {self.monday:%b} - {last.day} {last:%b %Y}"
        return f"{self.monday.day} {self.monday:%b %Y} - {last.day} {last:%b %Y}"

    @classmethod
    def parse(cls, label: str, timezone: str = "UTC") -> ReviewWeek:
        """'2026-W48' -> that ISO week in the given zone."""
        match = WEEK_LABEL.match(label.strip())
        if not match:
            raise ValueError(f"{label!r} is not an ISO week (use YYYY-Www, e.g. 2026-W48)")
        try:
            monday = date.fromisocalendar(int(match["year"]), int(match["week"]), 1)
        except ValueError:
            raise ValueError(f"{label!r} is not a week of that year") from None
        zone(timezone)
        return cls(monday, timezone)

    @classmethod
    def last_complete(cls, at: datetime, timezone: str = "UTC") -> ReviewWeek:
        """The last week that had ended by `at`, in the zone's own calendar."""
        local_day = at.astimezone(zone(timezone)).date()
        this_monday = local_day - timedelta(days=local_day.weekday())
        return cls(this_monday - timedelta(days=7), timezone)


def _local_midnight(day: date, timezone: str) -> datetime:
    # A zone whose clocks skip midnight (a DST change at 00:00) lands on the first moment
    # after the gap: zoneinfo resolves the nonexistent local time forwards with fold=0.
    return datetime.combine(day, time(0), tzinfo=zone(timezone)).astimezone(UTC)


def next_send_time(after: datetime, weekday: int, hour: int, timezone: str) -> datetime:
    """The first local `weekday` at `hour`:00 strictly after `after`, in UTC."""
    tz = zone(timezone)
    local = after.astimezone(tz)
    day = local.date() + timedelta(days=(weekday - local.weekday()) % 7)
    for _ in range(3):
        candidate = datetime.combine(day, time(hour), tzinfo=tz).astimezone(UTC)
        if candidate > after:
            return candidate
        day += timedelta(days=7)
    raise AssertionError("unreachable: a week later is always after")
