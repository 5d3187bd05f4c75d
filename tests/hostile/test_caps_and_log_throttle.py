"""The byte caps and the log throttle on their own (pure functions and a fake clock)."""

from __future__ import annotations

import logging

import pytest

from collectors.capping import MAX_FINISH_REASONS, TEXT_FIELD_MAX_BYTES, cap_text_fields, cap_utf8
from observatory.logthrottle import ThrottledLog


@pytest.mark.parametrize(
    ("text", "limit", "expected", "cut"),
    [
        ("acme", 256, "acme", False),
        ("a" * 300, 256, "a" * 256, True),
        ("\U0001d11e" * 1024, 256, "\U0001d11e" * 64, True),  # four-byte characters
        ("é" * 200, 255, "é" * 127, True),  # 2-byte characters, odd limit: no half character
        ("x" + "€" * 100, 10, "x€€€", True),  # 1 + 3 x 3 bytes
        ("a\x00b", 256, "ab", False),  # NUL removed, not a cut
        ("\x00" * 10, 4, "", False),
        ("\ud800lone", 256, "?lone", False),  # a lone surrogate is not UTF-8
    ],
)
def test_cap_utf8_cuts_on_a_character_boundary(text: str, limit: int, expected: str, cut: bool) -> None:
    capped, was_cut = cap_utf8(text, limit)
    assert (capped, was_cut) == (expected, cut)
    assert len(capped.encode("utf-8")) <= limit


def test_rollup_dimensions_fit_the_btree_limit_together() -> None:
    # rollup_hour_identity indexes tenant, feature, provider, model, service plus fixed-size
    # columns; PostgreSQL's btree refuses an entry over 2704 bytes.
    dimensions = ("tenant", "feature", "provider", "request_model", "service_name")
    assert sum(TEXT_FIELD_MAX_BYTES[name] for name in dimensions) + 64 < 2704 // 2
    assert TEXT_FIELD_MAX_BYTES["response_model"] == TEXT_FIELD_MAX_BYTES["request_model"]


def test_cap_text_fields_reports_what_it_cut() -> None:
    values = {
        "tenant": "t" * 1000,
        "feature": "ok",
        "name": "n\x00ame",
        "input_tokens": 5,
        "finish_reasons": ["stop"] * 40,
    }
    assert cap_text_fields(values) == ["tenant", "finish_reasons"]
    assert values == {
        "tenant": "t" * 256,
        "feature": "ok",
        "name": "name",
        "input_tokens": 5,
        "finish_reasons": ["stop"] * MAX_FINISH_REASONS,
    }


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttled_log_counts_repeats_and_summarises_after_the_window(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.throttle")
    clock = _Clock()
    throttle = ThrottledLog(logging.getLogger("test.throttle"), window_seconds=60, clock=clock)
    assert throttle.warning(("401", "10.0.0.1"), "rejected %s", "a")
    for _ in range(25):
        clock.now += 1
        assert not throttle.warning(("401", "10.0.0.1"), "rejected %s", "a")
    assert throttle.warning(("401", "10.0.0.2"), "rejected %s", "b")  # another client
    assert [r.getMessage() for r in caplog.records] == ["rejected a", "rejected b"]
    clock.now += 60
    assert throttle.warning(("400", "10.0.0.1"), "bad body")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[2:] == ["25 more like this in the last 60 s: rejected a", "bad body"]
    # The window has closed: the same kind is logged afresh.
    assert throttle.warning(("401", "10.0.0.1"), "rejected %s", "a")


def test_throttled_log_memory_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.throttle")
    throttle = ThrottledLog(logging.getLogger("test.throttle"), max_kinds=100, clock=_Clock())
    for client in range(10_000):
        throttle.warning(("401", f"10.0.{client // 256}.{client % 256}"), "rejected")
        throttle.warning(("401", f"10.0.{client // 256}.{client % 256}"), "rejected")
    assert len(throttle._kinds) == 100
    # Each client pushed out of memory had its repeat summarised on the way out.
    assert sum("1 more like this" in r.getMessage() for r in caplog.records) == 9_900
