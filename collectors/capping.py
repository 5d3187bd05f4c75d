"""Make decoded values storable: no NUL characters, and bounded in size.

A span's attributes and resource are stored as jsonb; whatever a client sent must neither
fail the COPY (NUL, NaN) nor let one chatty instrumentation fill the table.

Canonical text fields (tenant, model, span name, ...) are capped in bytes of UTF-8, not
characters: several of them become rollup keys, and PostgreSQL refuses a btree index entry
over 2704 bytes (`rollup_hour_identity` indexes tenant, feature, provider, model and service
together). One such row fails the whole rollup statement and with it every hour behind it,
so the limits below keep the five dimensions together at 5 x 256 = 1,280 bytes, about half
of what the index allows even uncompressed. README "Limits" lists them.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

__all__ = [
    "MAX_FINISH_REASONS",
    "MAX_JSON_DEPTH",
    "TEXT_FIELD_MAX_BYTES",
    "TRUNCATED_ATTRIBUTE",
    "cap_attributes",
    "cap_text_fields",
    "cap_utf8",
    "strip_nul",
]

# Nesting beyond this is not telemetry; walking it would only risk the recursion limit.
MAX_JSON_DEPTH = 32


# Per canonical text field, the most UTF-8 bytes stored. The five rollup dimensions (tenant,
# feature, provider, model = request or response model, service) share the btree budget
# above; task_id is in the telemetry_span_task index; error_type becomes a JSON key of
# errors_by_type; the rest are shown on pages and need no more to be recognised.
TEXT_FIELD_MAX_BYTES: dict[str, int] = {
    "tenant": 256,
    "feature": 256,
    "provider": 256,
    "request_model": 256,
    "response_model": 256,
    "service_name": 256,
    "name": 512,
    "status_message": 1024,
    "error_type": 256,
    "operation": 128,
    "scope_name": 256,
    "user_id": 256,
    "session_id": 256,
    "task_id": 256,
    "system_fingerprint": 256,
    "service_tier": 128,
    "response_id": 256,
}
# finish_reasons is a text[]: one reason per choice, and nobody asks for thousands of choices.
MAX_FINISH_REASONS = 16
FINISH_REASON_MAX_BYTES = 64
# The attribute that lists the canonical fields cut by cap_text_fields.
TRUNCATED_ATTRIBUTE = "observatory.truncated"


def strip_nul(text: str) -> str:
    # PostgreSQL refuses NUL in text and jsonb; one such value would fail the whole COPY.
    return text.replace("\x00", "") if "\x00" in text else text


def cap_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """`text` without NUL characters, in at most `max_bytes` of UTF-8 cut on a character
    boundary; and whether anything but NUL was cut."""
    text = strip_nul(text)
    # isascii() is a flag lookup in CPython: the common short ASCII value costs no encoding.
    if text.isascii():
        return (text, False) if len(text) <= max_bytes else (text[:max_bytes], True)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8, and PostgreSQL would refuse it
        encoded = text.encode("utf-8", "replace")
        text = encoded.decode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    # Dropping the bytes of a character cut in two leaves whole characters only.
    return encoded[:max_bytes].decode("utf-8", "ignore"), True


def cap_text_fields(values: dict[str, Any]) -> list[str]:
    """Cap the canonical text fields in `values` in place (TEXT_FIELD_MAX_BYTES, finish
    reasons); returns the names of the fields that were cut, for TRUNCATED_ATTRIBUTE."""
    cut: list[str] = []
    limit_of = TEXT_FIELD_MAX_BYTES.get
    # Over the values present (a dozen or so) rather than every limit, with the common case
    # (short ASCII, no NUL) decided inline: this runs for every span ingested.
    for field_name, value in values.items():
        limit = limit_of(field_name)
        if limit is None or type(value) is not str:
            continue
        if value.isascii() and len(value) <= limit and "\x00" not in value:
            continue
        capped, was_cut = cap_utf8(value, limit)
        if was_cut:
            cut.append(field_name)
        # Replacing the value of a key while iterating is allowed: the dict's size is unchanged.
        values[field_name] = capped
    reasons = values.get("finish_reasons")
    if reasons and (
        len(reasons) > MAX_FINISH_REASONS
        or not all(r.isascii() and len(r) <= FINISH_REASON_MAX_BYTES and "\x00" not in r for r in reasons)
    ):
        kept = []
        reasons_cut = len(reasons) > MAX_FINISH_REASONS
        for reason in reasons[:MAX_FINISH_REASONS]:
            capped, was_cut = cap_utf8(reason, FINISH_REASON_MAX_BYTES)
            reasons_cut = reasons_cut or was_cut
            if capped:
                kept.append(capped)
        values["finish_reasons"] = kept or None
        if reasons_cut:
            cut.append("finish_reasons")
    return cut


def cap_attributes(attributes: dict[str, Any], max_value_chars: int, max_total_chars: int) -> dict[str, Any]:
    """Cap each string, then the whole dict; what was cut is marked `_truncated: true`.

    Size is key plus value characters; numbers and booleans count 8, lists and dicts
    their JSON length. Non-finite floats become strings: JSON (and jsonb) has no NaN.
    """
    # Nearly every span is small and flat: check that in one pass and copy.
    total = 0
    for key, value in attributes.items():
        kind = type(value)
        if "\x00" in key:
            break
        if kind is str:
            if len(value) > max_value_chars or "\x00" in value:
                break
            total += len(key) + len(value)
        elif kind is int or kind is bool or (kind is float and math.isfinite(value)):
            total += len(key) + 8
        else:
            break
    else:
        if total <= max_total_chars:
            return dict(attributes)
    return _cap_slowly(attributes, max_value_chars, max_total_chars)


def _cap_slowly(attributes: dict[str, Any], max_value_chars: int, max_total_chars: int) -> dict[str, Any]:
    capped: dict[str, Any] = {}
    sizes: list[tuple[int, str]] = []
    total = 0
    truncated = False
    for key, value in attributes.items():
        key = strip_nul(key)
        if (type(value) is list or type(value) is dict) and 2 * len(value) > max_total_chars:
            # Its JSON takes at least two characters an item: it could never be kept, so it
            # is dropped without walking a client's million-item array.
            truncated = True
            continue
        if len(key) > max_total_chars:
            truncated = True
            continue
        value, cut = _cap_nested(value, max_value_chars, 0)
        truncated = truncated or cut
        kind = type(value)
        if kind is str:
            size = len(value)
        elif kind is list or kind is dict:
            size = _json_size(value)
        else:
            size = 8
        size += len(key)
        total += size
        sizes.append((size, key))
        capped[key] = value
    if total > max_total_chars:
        sizes.sort(reverse=True)
        for size, key in sizes:
            del capped[key]
            total -= size
            if total <= max_total_chars:
                break
        truncated = True
    if truncated:
        capped["_truncated"] = True
    return capped


def _json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value, default=str))
    except TypeError:  # integers beyond 64 bits, from a RawSpan not built by our decoders
        return len(str(value))


def _cap_nested(value: Any, max_value_chars: int, depth: int) -> tuple[Any, bool]:
    if depth > MAX_JSON_DEPTH:
        return None, True
    kind = type(value)
    if kind is str:
        value = strip_nul(value)
        return (value[:max_value_chars], True) if len(value) > max_value_chars else (value, False)
    if kind is float:
        return (value, False) if math.isfinite(value) else (str(value), False)
    if kind is list:
        cut = False
        items = []
        for item in value:
            capped_item, item_cut = _cap_nested(item, max_value_chars, depth + 1)
            items.append(capped_item)
            cut = cut or item_cut
        return items, cut
    if kind is dict:
        cut = False
        mapping = {}
        for key, item in value.items():
            capped_item, item_cut = _cap_nested(item, max_value_chars, depth + 1)
            mapping[strip_nul(str(key)[:max_value_chars])] = capped_item
            cut = cut or item_cut
        return mapping, cut
    return value, False
