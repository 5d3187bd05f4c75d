from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.reports.weeks import ReviewWeek, next_send_time


def test_a_week_is_monday_to_monday_in_the_readers_zone() -> None:
    week = ReviewWeek.parse("2026-W48", "America/New_York")
    assert week.label == "2026-W48"
    assert week.start == datetime(2026, 11, 23, 5, tzinfo=UTC)
    assert week.end == datetime(2026, 11, 30, 5, tzinfo=UTC)
    assert week.previous.label == "2026-W47"
    assert week.describe() == "23-29 Nov 2026"
    assert ReviewWeek.parse("2026-W49").describe() == "30 Nov - 6 Dec 2026"
    assert ReviewWeek.parse("2026-W53").describe() == "28 Dec 2026 - 3 Jan 2027"


def test_a_week_across_a_clock_change_is_168_hours_of_local_time() -> None:
    week = ReviewWeek.parse("2026-W13", "Europe/Paris")  # clocks go forward on Sunday 29 March
    assert (week.end - week.start).total_seconds() == 167 * 3600


def test_the_last_complete_week_depends_on_the_zone() -> None:
    # Sunday 22:00 UTC is already Monday in Sydney: its week has ended there, not in UTC.
    moment = datetime(2026, 11, 29, 22, tzinfo=UTC)
    assert ReviewWeek.last_complete(moment, "Australia/Sydney").label == "2026-W48"
    assert ReviewWeek.last_complete(moment, "UTC").label == "2026-W47"


@pytest.mark.parametrize("bad", ["2026-48", "2026-W54", "W48", "2026-W4"])
def test_a_bad_week_label_is_a_value_error_that_says_the_format(bad: str) -> None:
    with pytest.raises(ValueError, match=r"ISO week|not a week"):
        ReviewWeek.parse(bad)


def test_an_unknown_zone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a time zone"):
        ReviewWeek.parse("2026-W48", "Mars/Olympus")


def test_next_send_time_is_the_next_local_weekday_and_hour() -> None:
    monday_nine = datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert next_send_time(monday_nine, 0, 8, "UTC") == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert next_send_time(monday_nine, 0, 10, "UTC") == datetime(2026, 11, 23, 10, tzinfo=UTC)
    assert next_send_time(monday_nine, 2, 8, "Asia/Tokyo") == datetime(2026, 11, 24, 23, tzinfo=UTC)
