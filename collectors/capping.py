"""Make decoded attribute values storable: no NUL characters, and bounded in size.

A span's attributes and resource are stored as jsonb; whatever a client sent must neither
fail the COPY (NUL, NaN) nor let one chatty instrumentation fill the table.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

__all__ = ["MAX_JSON_DEPTH", "cap_attributes", "strip_nul"]

# Nesting beyond this is not telemetry; walking it would only risk the recursion limit.
MAX_JSON_DEPTH = 32


def strip_nul(text: str) -> str:
    # PostgreSQL refuses NUL in text and jsonb; one such value would fail the whole COPY.
    return text.replace("\x00", "") if "\x00" in text else text


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
