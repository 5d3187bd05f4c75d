"""Binary COPY dumpers for the metric points table, by PostgreSQL type (psycopg's
`register_dumper(None, ...)`: used only where COPY's `set_types` names the column type).

psycopg dumps a Python list as an array with its pure-Python list dumper, one element dumper
call per bucket: a histogram point's three arrays cost more than the rest of its row and of
a gauge's. These pack an int8[] / float8[] with one precompiled struct per length. Times go
in as unix nanoseconds (what the decoder holds) and out as PostgreSQL's microseconds since
2000-01-01, with no datetime made in between.

Formats: PostgreSQL's array_send (ndim, has-null flag, element type, then per dimension its
length and lower bound, then per element its byte length and value) and timestamptz_send
(int8 microseconds since 2000-01-01 UTC).
"""

from __future__ import annotations

import struct
from typing import Any

from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format

INT8_OID, FLOAT8_OID, TIMESTAMPTZ_OID = 20, 701, 1184
INT8_ARRAY_OID, FLOAT8_ARRAY_OID = 1016, 1022

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


def use_point_dumpers(adapters: AdaptersMap) -> None:
    """Register on one cursor's adapters: only its COPYs with `set_types` pick them up."""
    for dumper in (Int8ArrayDumper, Float8ArrayDumper, NanosecondsTimestampDumper):
        adapters.register_dumper(None, dumper)
