"""POST /v1/metrics through Django's test client: every point type, every answer, and the
per-interval increases derived from cumulative points."""

from __future__ import annotations

import gzip
import math
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.json.common.metrics_encoder import encode_metrics as encode_json
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics as encode_protobuf
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from apps.gpu import reads
from apps.gpu.models import MetricPoint, MetricSeries
from tests.gpu.helpers import DELTA, MINUTE_NS, counter, gauge, histogram, now_ns, points_of, request_of

pytestmark = pytest.mark.django_db

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def post(client: Client, body: bytes, key: str | None, content_type: str = PROTOBUF, **headers: str):
    if key is not None:
        headers.setdefault("Authorization", f"Bearer {key}")
    return client.post("/v1/metrics", data=body, content_type=content_type, headers=headers)


def accepted(response: object) -> metrics_service_pb2.ExportMetricsServiceResponse:
    assert response.status_code == 200, response.content  # type: ignore[attr-defined]
    return metrics_service_pb2.ExportMetricsServiceResponse.FromString(response.content)  # type: ignore[attr-defined]


def sdk_metrics(temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> object:
    """One collection of every instrument kind from the real SDK, openai-v2's GenAI metrics among them."""
    reader = InMemoryMetricReader(preferred_temporality={Histogram: temporality})
    provider = MeterProvider(
        resource=Resource.create({"service.name": "support-api"}),
        metric_readers=[reader],
        views=[View(instrument_name="queue.depth.exp", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("tests")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    # openai-v2's advisory bounds for its duration histograms (GenAI semantic conventions).
    ttft = meter.create_histogram(
        "gen_ai.client.operation.time_to_first_chunk",
        unit="s",
        explicit_bucket_boundaries_advisory=[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24],
    )
    for model, first_chunk in (("gpt-4o-mini", 0.2), ("gpt-4o-mini", 0.4), ("gpt-4o", 0.9)):
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.provider.name": "openai"}
        ttft.record(first_chunk, attrs)
        tokens.record(1200, {**attrs, "gen_ai.token.type": "input"})
        tokens.record(300, {**attrs, "gen_ai.token.type": "output"})
    meter.create_counter("requests").add(5, {"route": "/chat"})
    meter.create_up_down_counter("inflight").add(-2)
    meter.create_histogram("queue.depth.exp").record(3.5)
    meter.create_observable_gauge(
        "hw.gpu.utilization", callbacks=[lambda options: [Observation(0.87, {"hw.id": "GPU-1"})]]
    )
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def test_sdk_protobuf_batch_stores_every_point_type(client: Client, ingest_key: str, project: object) -> None:
    response = accepted(post(client, encode_protobuf(sdk_metrics()).SerializeToString(), ingest_key))
    assert response.partial_success.rejected_data_points == 0
    kinds = dict(MetricSeries.objects.values_list("name", "kind").distinct())
    assert kinds == {
        "gen_ai.client.token.usage": "histogram",
        "gen_ai.client.operation.time_to_first_chunk": "histogram",
        "requests": "sum",
        "inflight": "sum",
        "queue.depth.exp": "exponential_histogram",
        "hw.gpu.utilization": "gauge",
    }
    # Series identity = name + resource + point attributes: 2 models x 2 token types.
    assert MetricSeries.objects.filter(name="gen_ai.client.token.usage").count() == 4
    (gpu,) = points_of("hw.gpu.utilization")
    assert gpu.value == pytest.approx(0.87)
    (requests,) = points_of("requests")
    # The SDK's first cumulative export counts from its start time.
    assert (requests.value, requests.increase) == (5.0, 5.0)
    (inflight,) = points_of("inflight")
    assert inflight.value == -2.0
    (exp,) = points_of("queue.depth.exp")
    assert exp.count == 1 and sum(exp.positive_counts) == 1 and exp.interval_count == 1
    assert exp.interval_buckets == exp.positive_counts


def test_ttft_per_model_from_openai_v2_metrics(client: Client, ingest_key: str, project: object) -> None:
    accepted(post(client, encode_protobuf(sdk_metrics()).SerializeToString(), ingest_key))
    now = datetime.now(UTC)
    by_model = reads.histogram_by_attribute(
        project.pk,  # type: ignore[attr-defined]
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.request.model",
        now - timedelta(hours=1),
        now + timedelta(minutes=1),
    )
    assert {model: h.count for model, h in by_model.items()} == {"gpt-4o-mini": 2, "gpt-4o": 1}
    assert by_model["gpt-4o-mini"].sum == pytest.approx(0.6)
    # 0.2 lies in (0.16, 0.32], 0.4 in (0.32, 0.64], 0.9 in (0.64, 1.28].
    assert by_model["gpt-4o-mini"].bucket_counts[5:7] == [1, 1]
    assert by_model["gpt-4o-mini"].quantile(0.5) == 0.32
    assert by_model["gpt-4o"].quantile(0.5) == 1.28


def test_json_batch_from_the_sdk_json_encoder(client: Client, ingest_key: str) -> None:
    body = encode_json(sdk_metrics()).to_json().encode()
    response = post(client, body, ingest_key, content_type=JSON)
    assert response.status_code == 200, response.content
    assert response.json() == {}
    assert MetricSeries.objects.count() == 10
    assert points_of("requests")[0].increase == 5.0


def test_gzip_body_and_x_observatory_key_header(client: Client, ingest_key: str) -> None:
    body = gzip.compress(request_of([gauge("hw.power", [(now_ns(), 512.0)])]))
    response = client.post(
        "/v1/metrics", data=body, content_type=PROTOBUF,
        headers={"Content-Encoding": "gzip", "X-Observatory-Key": ingest_key},
    )  # fmt: skip
    accepted(response)
    assert points_of("hw.power")[0].value == 512.0


def test_resent_batch_is_not_counted_twice(client: Client, ingest_key: str) -> None:
    t = now_ns()
    body = request_of([counter("tokens", [(t - MINUTE_NS, t, 100.0), (t - MINUTE_NS, t + MINUTE_NS, 160.0)])])
    accepted(post(client, body, ingest_key))
    accepted(post(client, body, ingest_key))
    assert [(p.value, p.increase) for p in points_of("tokens")] == [(100.0, 100.0), (160.0, 60.0)]


def test_cumulative_sum_across_batches_with_both_kinds_of_reset(client: Client, ingest_key: str) -> None:
    t, start, restarted = now_ns(), now_ns() - 5 * MINUTE_NS, now_ns() + MINUTE_NS // 2
    batches = [
        [(start, t, 100.0)],
        [(start, t + MINUTE_NS, 130.0)],
        # The process restarted: new start time, value 20 (lower) ...
        [(restarted, t + 2 * MINUTE_NS, 20.0)],
        # ... and a source that keeps the start time but drops the value (e.g. a reset counter).
        [(restarted, t + 3 * MINUTE_NS, 50.0)],
        [(restarted, t + 4 * MINUTE_NS, 10.0)],
    ]
    for batch in batches:
        accepted(post(client, request_of([counter("prompt.tokens", batch)]), ingest_key))
    assert [p.increase for p in points_of("prompt.tokens")] == [100.0, 30.0, 20.0, 30.0, 10.0]
    assert reads.increase_total(
        MetricSeries.objects.get().project_id, "prompt.tokens",
        datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1),
    ) == 190.0  # fmt: skip


def test_a_late_point_rederives_the_later_interval(client: Client, ingest_key: str) -> None:
    t, start = now_ns(), now_ns() - MINUTE_NS
    accepted(post(client, request_of([counter("c", [(start, t, 10.0), (start, t + 2 * MINUTE_NS, 40.0)])]), ingest_key))
    # The middle point arrives last: 10 -> 25 -> 40, not 10 -> 25 plus 10 -> 40.
    accepted(post(client, request_of([counter("c", [(start, t + MINUTE_NS, 25.0)])]), ingest_key))
    assert [p.increase for p in points_of("c")] == [10.0, 15.0, 15.0]


def test_delta_sums_and_histograms_are_their_own_intervals(client: Client, ingest_key: str) -> None:
    t = now_ns()
    body = request_of(
        [
            counter("d", [(t - MINUTE_NS, t, 7.0), (t, t + MINUTE_NS, 3.0)], temporality=DELTA),
            histogram("h", [(t - MINUTE_NS, t, [1, 2, 0], 0.9)], [0.1, 1.0], temporality=DELTA),
        ]
    )
    accepted(post(client, body, ingest_key))
    assert [p.increase for p in points_of("d")] == [7.0, 3.0]
    (h,) = points_of("h")
    assert (h.interval_count, h.interval_buckets, h.interval_sum) == (3, [1, 2, 0], 0.9)


def test_cumulative_histogram_intervals_and_reset(client: Client, ingest_key: str) -> None:
    t, start = now_ns(), now_ns() - MINUTE_NS
    points = [
        (start, t, [1, 1, 0], 0.6),
        (start, t + MINUTE_NS, [3, 1, 2], 5.0),
        (t + MINUTE_NS, t + 2 * MINUTE_NS, [0, 1, 0], 0.5),  # restarted
    ]
    accepted(post(client, request_of([histogram("ttft", points, [0.25, 1.0])]), ingest_key))
    stored = points_of("ttft")
    assert [p.interval_buckets for p in stored] == [[1, 1, 0], [2, 0, 2], [0, 1, 0]]
    assert [p.interval_count for p in stored] == [2, 4, 1]
    assert stored[1].interval_sum == pytest.approx(4.4)


def test_absurd_points_are_rejected_one_by_one_and_the_rest_kept(client: Client, ingest_key: str) -> None:
    t = now_ns()
    body = request_of(
        [
            gauge("g", [(t, 1.0), (t + 1000, math.nan), (t + 2000, math.inf), (t + 3000, 4.0)]),
            gauge("future", [(t + 3 * 3600 * 10**9, 1.0)]),
            gauge("no-time", [(0, 1.0)]),
            gauge("milliseconds", [(t // 10**6, 1.0)]),
            counter("negative", [(t - 1, t, -5.0)]),
            histogram("bad-buckets", [(t - 1, t, [1, 2], 1.0)], [0.1, 1.0]),
            # uint64 on the wire, beyond the store's bigint: this point only, not the batch.
            histogram("huge", [(t - 1, t, [2**64 - 1, 0, 0], 1.0)], [0.1, 1.0]),
        ]
    )
    response = accepted(post(client, body, ingest_key))
    assert response.partial_success.rejected_data_points == 8
    message = response.partial_success.error_message
    for reason in ("value is nan", "value is inf", "in the future", "time is missing", "before 2000-01-01",
                   "monotonic sum cannot be negative", "2 bucket counts for 2 bounds", "beyond 2^63-1"):  # fmt: skip
        assert reason in message
    assert [p.value for p in points_of("g")] == [1.0, 4.0]
    assert MetricPoint.objects.count() == 2


def test_json_partial_success_counts_rejected_points(client: Client, ingest_key: str) -> None:
    t = now_ns()
    document = (
        '{"resourceMetrics":[{"resource":{"attributes":[{"key":"host.name","value":{"stringValue":"n"}}]},'
        '"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":['
        f'{{"timeUnixNano":"{t}","asDouble":1.5}},{{"timeUnixNano":"{t + 1}","asDouble":"NaN"}}'
        "]}}]}]}]}"
    )
    response = post(client, document.encode(), ingest_key, content_type=JSON)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedDataPoints"] == 1
    assert [p.value for p in points_of("g")] == [1.5]


@pytest.mark.parametrize(
    ("method", "content_type", "body", "key", "status"),
    [
        ("get", PROTOBUF, b"", "valid", 405),
        ("post", PROTOBUF, b"x", None, 401),
        ("post", PROTOBUF, b"x", "wrong", 401),
        ("post", "text/plain", b"x", "valid", 415),
        ("post", PROTOBUF, b"\xff\xff\xff", "valid", 400),
        ("post", JSON, b"{not json", "valid", 400),
        ("post", JSON, b'{"resourceMetrics": 5}', "valid", 400),
    ],
)
def test_error_answers(
    client: Client, ingest_key: str, method: str, content_type: str, body: bytes, key: str | None, status: int
) -> None:
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {ingest_key if key == 'valid' else 'obs_ingest_wrong'}"
    if method == "get":
        response = client.get("/v1/metrics", headers=headers)
    else:
        response = client.post("/v1/metrics", data=body, content_type=content_type, headers=headers)
    assert response.status_code == status, response.content
    if content_type == PROTOBUF and status != 405:
        assert status_pb2.Status.FromString(response.content).message, response.content
    assert MetricPoint.objects.count() == 0


def test_body_over_the_limit_is_413(client: Client, ingest_key: str, settings: object) -> None:
    settings.INGEST_MAX_BODY_BYTES = 2048  # type: ignore[attr-defined]
    body = request_of([gauge("big", [(now_ns() + i, float(i)) for i in range(200)])])
    assert len(body) > 2048
    response = post(client, body, ingest_key)
    assert response.status_code == 413
    assert MetricPoint.objects.count() == 0


def test_a_new_day_gets_its_partition(client: Client, ingest_key: str) -> None:
    yesterday = now_ns() - 26 * 3600 * 10**9
    accepted(post(client, request_of([gauge("g", [(yesterday, 1.0)])]), ingest_key))
    assert points_of("g")[0].time.date() == (datetime.now(UTC) - timedelta(hours=26)).date()


def test_cumulative_exponential_histogram_from_the_sdk_across_exports(client: Client, ingest_key: str) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        views=[View(instrument_name="latency", aggregation=ExponentialBucketHistogramAggregation(max_size=20))],
    )
    latency = provider.get_meter("tests").create_histogram("latency", unit="s")
    for value in (0.5, 0.6, 0.7):
        latency.record(value)
    first = encode_protobuf(reader.get_metrics_data()).SerializeToString()
    # A value far away makes the SDK fit 20 buckets by rescaling to a coarser scale.
    for value in (0.55, 900.0):
        latency.record(value)
    second = encode_protobuf(reader.get_metrics_data()).SerializeToString()
    provider.shutdown()
    accepted(post(client, first, ingest_key))
    accepted(post(client, second, ingest_key))
    early, late = points_of("latency")
    assert late.scale < early.scale  # the SDK did rescale between the exports
    assert (early.interval_count, late.interval_count) == (3, 2)
    assert sum(late.interval_buckets) == 2
    assert late.interval_sum == pytest.approx(900.55)


def test_nul_characters_and_huge_attributes_do_not_fail_the_batch(client: Client, ingest_key: str) -> None:
    t = now_ns()
    body = request_of(
        [gauge("hw.po\x00wer", [(t, 5.0)], {"hw.id": "GPU-\x00-1", "note": "x" * 5000}), gauge("ok", [(t, 1.0)])],
        resource={"host.name": "node\x00-1"},
    )
    response = accepted(post(client, body, ingest_key))
    assert response.partial_success.rejected_data_points == 0
    series = MetricSeries.objects.get(name="hw.power")
    assert series.attributes["hw.id"] == "GPU--1"
    assert len(series.attributes["note"]) <= 1024
    assert series.resource["host.name"] == "node-1"
    assert points_of("ok")[0].value == 1.0
