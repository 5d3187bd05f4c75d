"""Decode OTLP metric exports (protobuf and OTLP/JSON) into MetricPoints.

Both decoders return the points they could keep plus one message per point they could not
(the OTLP partial-success answer counts rejected data points). Only a body that cannot be
read as an ExportMetricsServiceRequest at all raises PayloadError.

OTLP/JSON goes through protobuf's own JSON mapping (`json_format`) into the same message,
then the same walk: one set of checks for both encodings. Exemplars are not kept; their hex
ids (OTLP/JSON's exception to the base64 rule) are 16 or 32 hex digits, which parse as
base64 without error and are dropped. A JSON value the schema cannot hold (a negative count
for a uint64 field) fails the parse, so that body is a 400 rather than one rejected point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collectors.capping import cap_attributes, strip_nul
from collectors.metric_records import (
    EXPONENTIAL_HISTOGRAM,
    GAUGE,
    HISTOGRAM,
    SUM,
    TEMPORALITY_CUMULATIVE,
    TEMPORALITY_DELTA,
    MetricPoint,
    resource_key,
    series_identities,
    series_prefix,
)
from collectors.otlp import _pb_attributes
from collectors.records import PayloadError

__all__ = ["PointLimits", "decode_metrics_json", "decode_metrics_protobuf", "decode_metrics_request"]

# Points before 2000-01-01 are clients sending micro- or milliseconds where OTLP wants
# nanoseconds (and would miss every partition).
_MIN_PLAUSIBLE_NS = 946_684_800 * 1_000_000_000
_MAX_INT64 = (1 << 63) - 1
# DataPointFlags.FLAG_NO_RECORDED_VALUE: a staleness marker, not a value.
_NO_RECORDED_VALUE = 1
# Exponential histogram scales the OTel specification allows.
_MIN_SCALE, _MAX_SCALE = -10, 20
# A data point with more buckets than this is not a latency histogram anyone sends.
_MAX_BUCKETS = 4096


@dataclass(frozen=True, slots=True)
class PointLimits:
    """The time window a point must fall in: now + max_future_ns at the latest, oldest_ns at the earliest."""

    now_ns: int
    max_future_ns: int
    oldest_ns: int
    # Attribute values and whole attribute maps are capped as spans' are (collectors.capping).
    max_attribute_chars: int = 1024
    max_attributes_chars: int = 16384


class PointRejected(ValueError):
    pass


class _Where:
    __slots__ = ("mi", "name", "ri", "si")

    def __init__(self, ri: int, si: int, mi: int, name: str) -> None:
        self.ri, self.si, self.mi, self.name = ri, si, mi, name

    def __str__(self) -> str:
        return f"resourceMetrics[{self.ri}].scopeMetrics[{self.si}].metrics[{self.mi}] ({self.name or 'no name'})"

    __format__ = lambda self, spec: str(self)  # noqa: E731 - f-strings format it lazily


def decode_metrics_protobuf(body: bytes, limits: PointLimits) -> tuple[list[MetricPoint], list[str]]:
    request = ExportMetricsServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # upb raises DecodeError; any failure here is the client's bytes
        hint = " (it looks like JSON: send it with Content-Type: application/json)" if body[:1] in (b"{", b"[") else ""
        if body[:2] == b"\x1f\x8b":
            hint = " (it looks gzip-compressed: declare it with Content-Encoding: gzip)"
        raise PayloadError(
            f"body is not an OTLP ExportMetricsServiceRequest protobuf ({len(body)} bytes){hint}: {exc}"
        ) from None
    return decode_metrics_request(request, limits)


def decode_metrics_json(body: bytes, limits: PointLimits) -> tuple[list[MetricPoint], list[str]]:
    request = ExportMetricsServiceRequest()
    try:
        json_format.Parse(body, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise PayloadError(f"body is not an OTLP/JSON ExportMetricsServiceRequest: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    return decode_metrics_request(request, limits)


def decode_metrics_request(request: Any, limits: PointLimits) -> tuple[list[MetricPoint], list[str]]:
    """Walk a parsed ExportMetricsServiceRequest (also what the gRPC servicer receives)."""
    points: list[MetricPoint] = []
    rejections: list[str] = []
    identities = series_identities(limits.max_attribute_chars, limits.max_attributes_chars)
    # The usual point's times pass one chained comparison; the rest get told what is wrong.
    earliest = max(limits.oldest_ns, _MIN_PLAUSIBLE_NS)
    latest = min(limits.now_ns + limits.max_future_ns, _MAX_INT64)
    for ri, resource_metrics in enumerate(request.resource_metrics):
        resource = cap_attributes(
            _pb_attributes(resource_metrics.resource.attributes),
            limits.max_attribute_chars,
            limits.max_attributes_chars,
        )
        resource_bytes = resource_key(resource)
        for si, scope_metrics in enumerate(resource_metrics.scope_metrics):
            scope_name = scope_metrics.scope.name
            for mi, metric in enumerate(scope_metrics.metrics):
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                data_points = data.data_points
                # Built only when a point is rejected: this loop runs once per metric of every batch.
                where = _Where(ri, si, mi, metric.name)
                if kind == "summary":
                    if len(data_points):
                        rejections.append(f"{where}: {len(data_points)} summary points: summaries are not stored")
                    continue
                name = strip_nul(metric.name)[: limits.max_attribute_chars]
                if not name:
                    rejections.extend(f"{where} point {pi}: metric name is missing" for pi in range(len(data_points)))
                    continue
                temporality = getattr(data, "aggregation_temporality", 0)
                if kind != GAUGE and temporality not in (TEMPORALITY_DELTA, TEMPORALITY_CUMULATIVE):
                    rejections.extend(
                        f"{where} point {pi}: aggregation temporality {temporality} is neither delta nor cumulative"
                        for pi in range(len(data_points))
                    )
                    continue
                monotonic = bool(getattr(data, "is_monotonic", kind != GAUGE))
                prefix = series_prefix(name, resource_bytes)
                unit = strip_nul(metric.unit)[:64]
                description = strip_nul(metric.description)[:1000]
                number = kind in (GAUGE, SUM)
                point_temporality = temporality if kind != GAUGE else 0
                point_monotonic = monotonic if kind == SUM else kind != GAUGE
                negative_allowed = not (kind == SUM and monotonic)
                for pi, data_point in enumerate(data_points):
                    if data_point.flags & _NO_RECORDED_VALUE:
                        continue
                    time_ns = data_point.time_unix_nano
                    start_ns = data_point.start_time_unix_nano
                    try:
                        if not earliest <= time_ns <= latest or start_ns > time_ns:
                            _check_times(time_ns, start_ns, limits)
                        if number:
                            # Gauges and sums are most points: read inline, no second call.
                            which = data_point.WhichOneof("value")
                            if which is None:
                                raise PointRejected("number point has no value")
                            value = float(getattr(data_point, which))
                            if not math.isfinite(value):
                                raise PointRejected(f"value is {value}")
                            if value < 0 and not negative_allowed:
                                raise PointRejected(f"a monotonic sum cannot be negative ({value})")
                    except PointRejected as exc:
                        rejections.append(f"{where} point {pi}: {exc}")
                        continue
                    wire_attributes = data_point.attributes
                    # One KeyValue is the usual point: its bytes are the key without a join.
                    wire_key = (
                        wire_attributes[0].SerializeToString()
                        if len(wire_attributes) == 1
                        else b"".join([kv.SerializeToString() for kv in wire_attributes])
                    )
                    found = identities.get(prefix, wire_key)
                    if found is None:
                        found = identities.add(prefix, wire_key, _pb_attributes(wire_attributes))
                    series_id, attributes = found
                    point = MetricPoint(
                        name, kind, unit, resource, attributes, time_ns, start_ns, point_temporality,
                        point_monotonic, scope_name, description,
                    )  # fmt: skip
                    point.series_id = series_id
                    if number:
                        point.value = value
                    else:
                        try:
                            _histogram(kind, data_point, point)
                        except PointRejected as exc:
                            rejections.append(f"{where} point {pi}: {exc}")
                            continue
                    points.append(point)
    return points, rejections


def _check_times(time_ns: int, start_ns: int, limits: PointLimits) -> None:
    if time_ns == 0:
        raise PointRejected("time is missing (0)")
    if time_ns < _MIN_PLAUSIBLE_NS:
        raise PointRejected(f"time {time_ns} is before 2000-01-01: OTLP times are unix nanoseconds")
    if time_ns > _MAX_INT64:
        raise PointRejected("time is beyond 2262")
    if time_ns > limits.now_ns + limits.max_future_ns:
        raise PointRejected(f"time {time_ns} is in the future")
    if time_ns < limits.oldest_ns:
        raise PointRejected("time is older than the metric retention")
    if start_ns > time_ns:
        raise PointRejected(f"start time {start_ns} is after the point's time {time_ns}")


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise PointRejected(f"{what} is {value}")
    return value


def _optional(data_point: Any, field: str) -> float | None:
    return _finite(getattr(data_point, field), field) if data_point.HasField(field) else None


def _counts(counts: Iterable[int], what: str) -> list[int]:
    values = list(counts)
    if len(values) > _MAX_BUCKETS:
        raise PointRejected(f"{len(values)} {what} exceed the limit of {_MAX_BUCKETS}")
    if values and max(values) > _MAX_INT64:
        raise PointRejected(f"{what} hold a count beyond 2^63-1")
    return values


def _histogram(kind: str, data_point: Any, point: MetricPoint) -> None:
    """Fill a histogram or exponential histogram point's fields, checked."""
    point.count = data_point.count
    # uint64 on the wire; the store's columns are bigint, and no real count comes near 2^63.
    if point.count > _MAX_INT64 or getattr(data_point, "zero_count", 0) > _MAX_INT64:
        raise PointRejected(f"count {point.count} is beyond 2^63-1")
    point.sum = _optional(data_point, "sum")
    point.min = _optional(data_point, "min")
    point.max = _optional(data_point, "max")
    if point.sum is not None and point.sum < 0 and (point.min is None or point.min >= 0):
        raise PointRejected(f"sum {point.sum} is negative while no value is")
    if kind == HISTOGRAM:
        bounds = [_finite(bound, "an explicit bound") for bound in data_point.explicit_bounds]
        counts = _counts(data_point.bucket_counts, "buckets")
        if counts:
            if len(counts) != len(bounds) + 1:
                raise PointRejected(f"{len(counts)} bucket counts for {len(bounds)} bounds (expected bounds + 1)")
            if any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):
                raise PointRejected("explicit bounds are not strictly increasing")
            if sum(counts) != point.count:
                raise PointRejected(f"bucket counts add up to {sum(counts)}, not the count {point.count}")
        point.bounds = bounds
        point.bucket_counts = counts
        return
    assert kind == EXPONENTIAL_HISTOGRAM
    scale = data_point.scale
    if not _MIN_SCALE <= scale <= _MAX_SCALE:
        raise PointRejected(f"scale {scale} is outside {_MIN_SCALE}..{_MAX_SCALE}")
    positive = _counts(data_point.positive.bucket_counts, "positive buckets")
    negative = _counts(data_point.negative.bucket_counts, "negative buckets")
    total = sum(positive) + sum(negative) + data_point.zero_count
    if total != point.count:
        raise PointRejected(f"buckets and zero count add up to {total}, not the count {point.count}")
    point.scale = scale
    point.zero_count = data_point.zero_count
    point.positive_offset = data_point.positive.offset
    point.positive_counts = positive
    point.negative_offset = data_point.negative.offset
    point.negative_counts = negative
