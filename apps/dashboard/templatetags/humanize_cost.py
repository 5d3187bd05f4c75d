"""How pages write figures. Money: cents from $1, four decimals below; a cost the query
layer could not know (no call priced) is "unknown", never $0, and a partly priced one says
how many calls it leaves out ("$12.30 + 14 unpriced calls")."""

from __future__ import annotations

from decimal import Decimal

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.filter
def usd(value: Decimal | float | None) -> str:
    if value is None:
        return "unknown"
    amount = float(value)
    if abs(amount) >= 100:
        return f"${amount:,.0f}"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    return f"${amount:.4f}"


def _calls(count: int) -> str:
    return f"{count:,} unpriced call{'' if count == 1 else 's'}"


@register.filter
def usd_known(value: Decimal | float | None, unknown_calls: int | None) -> SafeString:
    """A money sum with the calls of unknown cost it leaves out (cost_unknown_requests)."""
    unknown_calls = unknown_calls or 0
    if value is None:
        hint = f"None of these calls has a price ({_calls(unknown_calls)}): see the Prices page to add one."
        return format_html('<span class="unknown" title="{}">unknown</span>', hint)
    if unknown_calls:
        return format_html(
            '{} <span class="unknown" title="{}">+ {}</span>',
            usd(value),
            "Calls whose cost is unknown (no price row, or token counts missing) add nothing to the sum.",
            _calls(unknown_calls),
        )
    return format_html("{}", usd(value))


@register.filter
def usd_rate_known(value: Decimal | float | None, unknown_calls: int | None) -> SafeString:
    """A money ratio (per task, per 1,000 requests) with the calls of unknown cost it leaves out."""
    unknown_calls = unknown_calls or 0
    if value is None:
        return format_html('<span class="unknown" title="{}">{}</span>', "No call with a known cost", "unknown")
    if unknown_calls:
        return format_html('{} <span class="unknown">(excl. {})</span>', usd(value), _calls(unknown_calls))
    return format_html("{}", usd(value))


@register.filter
def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


@register.filter
def signed_percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f}%"


@register.filter
def ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:,.0f} ms"


@register.filter
def tokens(value: int | None) -> str:
    """A token count a span may not report: unknown, never 0."""
    return "?" if value is None else str(value)
