"""How the review writes numbers: money, percentages, changes, durations. "unknown" for None."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

UNKNOWN = "unknown"


def money(value: Decimal | float | None) -> str:
    """$1,210 from $100 up, $12.34 from 10 cents, $0.0123 below (per-task costs stay readable)."""
    if value is None:
        return UNKNOWN
    amount = Decimal(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount >= 100:
        return f"{sign}${amount.quantize(Decimal(1), ROUND_HALF_UP):,}"
    if amount >= Decimal("0.1") or amount == 0:
        return f"{sign}${amount.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    return f"{sign}${amount.quantize(Decimal('0.0001'), ROUND_HALF_UP)}"


def signed_money(value: Decimal | None) -> str:
    if value is None:
        return UNKNOWN
    return ("+" if value > 0 else "") + money(value) if value else "$0"


def percent(value: float | None, digits: int = 0) -> str:
    if value is None:
        return UNKNOWN
    return f"{value * 100:.{digits}f}%"


def signed_percent(value: float | None) -> str:
    """+34%, -5%, +0.4% (small changes keep one decimal so they do not read as 0%)."""
    if value is None:
        return "new"
    shown = value * 100
    text = f"{shown:+.1f}%" if abs(shown) < 1 else f"{shown:+.0f}%"
    return "0%" if text in ("+0.0%", "-0.0%") else text


def size(value: float) -> str:
    """An unsigned percentage for a sentence that already says which way: "rose 34%"."""
    shown = abs(value) * 100
    return f"{shown:.1f}%" if shown < 1 else f"{shown:.0f}%"


def plural(number: int, word: str) -> str:
    return f"{number:,} {word}{'' if number == 1 else 's'}"


def duration_ms(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def count(value: Any) -> str:
    return UNKNOWN if value is None else f"{int(value):,}"
