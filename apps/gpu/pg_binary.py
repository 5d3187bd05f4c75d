"""PostgreSQL binary values for the metric store: COPY rows and array parameters.

psycopg dumps a Python list as an array with its pure-Python list dumper, one element dumper
call per item: a histogram point's three arrays cost more than the rest of its row, and the
store's per-batch arrays of series ids and times as much again. These pack an int8[] /
float8[] / timestamptz[] with one precompiled struct per length. Times go in as unix
nanoseconds (what the decoder holds) and out as PostgreSQL's microseconds since 2000-01-01,
with no datetime made in between. Gauge and sum rows, most of every batch, are packed whole
(`number_rows`), one struct call a row.

Formats: PostgreSQL's array_send (ndim, has-null flag, element type, then per dimension its
length and lower bound, then per element its byte length and value) and timestamptz_send
(int8 microseconds since 2000-01-01 UTC).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

INT8_OID, FLOAT8_OID, TIMESTAMPTZ_OID = 20, 701, 1184
INT8_ARRAY_OID, FLOAT8_ARRAY_OID, TIMESTAMPTZ_ARRAY_OID = 1016, 1022, 1185

_PG_EPOCH_MICROSECONDS = 946_684_800 * 1_000_000
_INT8 = struct.Struct(">q")
# One struct per (element code, length): the same few bucket layouts recur in every batch.
_ARRAY_STRUCTS: dict[tuple[str, int], struct.Struct] = {}


def _pack_array(code: str, element_oid: int, values: list[Any]) -> bytes:
    count = len(values)
    if not count:
        return struct.pack(">iii", 0, 0, element_oid)
    packer = _ARRAY_STRUCTS.get((code, count))
    if packer is None:
        packer = _ARRAY_STRUCTS[(code, count)] = struct.Struct(">iiiii" + ("i" + code) * count)
    interleaved: list[Any] = [8, 0] * count
    interleaved[1::2] = values
    return packer.pack(1, 0, element_oid, count, 1, *interleaved)


class Int8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = INT8_ARRAY_OID

    def dump(self, obj: list[int]) -> bytes:
        return _pack_array("q", INT8_OID, obj)


class Float8ArrayDumper(Dumper):
    format = Format.BINARY
    oid = FLOAT8_ARRAY_OID

    def dump(self, obj: list[float]) -> bytes:
        return _pack_array("d", FLOAT8_OID, obj)


class NanosecondsTimestampDumper(Dumper):
    """A unix-nanosecond int as timestamptz, truncated to PostgreSQL's microseconds."""

    format = Format.BINARY
    oid = TIMESTAMPTZ_OID

    def dump(self, obj: int) -> bytes:
        return _INT8.pack(obj // 1000 - _PG_EPOCH_MICROSECONDS)


class Int8Array(list[int]):
    """A list of ints sent as one binary int8[] parameter."""


class NanosecondsArray(list[int]):
    """Unix-nanosecond ints sent as one binary timestamptz[] parameter."""


class NanosecondsArrayDumper(Dumper):
    format = Format.BINARY
    oid = TIMESTAMPTZ_ARRAY_OID

    def dump(self, obj: list[int]) -> bytes:
        return _pack_array("q", TIMESTAMPTZ_OID, [ns // 1000 - _PG_EPOCH_MICROSECONDS for ns in obj])


def use_binary_dumpers(adapters: AdaptersMap) -> None:
    """Register on one cursor's adapters. By type (None): only COPY's `set_types` looks
    dumpers up that way, so a datetime or a plain list parameter is dumped as before."""
    for dumper in (Int8ArrayDumper, Float8ArrayDumper, NanosecondsTimestampDumper):
        adapters.register_dumper(None, dumper)
    adapters.register_dumper(Int8Array, Int8ArrayDumper)
    adapters.register_dumper(NanosecondsArray, NanosecondsArrayDumper)


# --------------------------------------------------------------------------- number rows

_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + bytes(8)  # signature, flags, header extension length
_TRAILER = b"\xff\xff"
# (project_id, series_id, time, start_time, value, increase): the first three never NULL; a
# row struct per pattern of the other three (NULL: length -1, no bytes).
_NUMBER_ROWS = {
    (start, value, increase): struct.Struct(
        ">hiqiqiq" + ("iq" if start else "i") + ("id" if value else "i") + ("id" if increase else "i")
    )
    for start in (False, True)
    for value in (False, True)
    for increase in (False, True)
}


def number_rows(project_id: int, points: Iterable[Any]) -> bytes:
    """A whole binary COPY stream of (project_id, series_id, time, start_time, value,
    increase) rows, for `copy.write`: the gauge and sum points of a batch."""
    parts = [_SIGNATURE]
    append = parts.append
    epoch = _PG_EPOCH_MICROSECONDS
    gauge, counted = _NUMBER_ROWS[(False, True, False)].pack, _NUMBER_ROWS[(True, True, True)].pack
    for p in points:
        start, value, increase = p.start_ns, p.value, p.increase
        time_us = p.time_ns // 1000 - epoch
        # The two shapes of nearly every row, packed without building a field list.
        if value is not None and not start and increase is None:
            append(gauge(6, 8, project_id, 8, p.series_id, 8, time_us, -1, 8, value, -1))
        elif value is not None and start and increase is not None:
            append(counted(6, 8, project_id, 8, p.series_id, 8, time_us, 8, start // 1000 - epoch, 8, value, 8,
                           increase))  # fmt: skip
        else:
            fields: list[Any] = [6, 8, project_id, 8, p.series_id, 8, time_us]
            fields += (8, start // 1000 - epoch) if start else (-1,)
            fields += (8, value) if value is not None else (-1,)
            fields += (8, increase) if increase is not None else (-1,)
            append(_NUMBER_ROWS[(bool(start), value is not None, increase is not None)].pack(*fields))
    append(_TRAILER)
    return b"".join(parts)
