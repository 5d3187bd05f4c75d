"""GPU cost attribution against hand-computed figures (docs/gpu.md, "Self-hosted cost").

Every figure below is worked out by hand in the comments. Prices are test rows of provider
`test`: $3.60 per GPU-hour is $0.30 per GPU per 300 s interval.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from apps.gpu.attribution import ATTRIBUTED, attribute_interval, split_units
from apps.gpu.ingest import ingest_points, point_limits
from apps.gpu.models import AttributionCursor, CostInterval, CostShare, GpuPrice, ServingInstance
from apps.gpu.reads import increase_total
from apps.gpu.sweep import sweep_project
from apps.pricing.services import reprice_range
from apps.telemetry.models import Span
from apps.telemetry.store import insert_spans
from collectors.otlp_metrics import decode_metrics_protobuf
from collectors.records import CanonicalSpan
from tests.gpu.helpers import counter, gauge, request_of

H100 = "NVIDIA H100 80GB HBM3"
NS = 10**9
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _interval(settings: Any) -> None:
    settings.GPU_COST_INTERVAL_SECONDS = 300
    settings.GPU_PRICE_PROVIDER = "test"
    settings.GPU_COST_GRACE_SECONDS = 0


def ns(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def gpu_samples(project_id: int, instance: str, gpus: list[tuple[str, str]], times: list[datetime]) -> None:
    """Utilisation points of each (uuid, model) GPU at each time, as the sampler sends them."""
    metrics = [
        gauge("hw.gpu.utilization", [(ns(t), 0.5) for t in times], {"hw.id": gpu, "hw.model": model, "gpu.index": i})
        for i, (gpu, model) in enumerate(gpus)
    ]
    body = request_of(metrics, {"service.name": "observatory-gpu-sampler", "service.instance.id": instance})
    points, rejected = decode_metrics_protobuf(body, point_limits())
    assert not rejected
    ingest_points(project_id, points, rejected)


class Traffic:
    """vLLM calls as they are stored: a client span (tenant, feature) and its server span."""

    def __init__(self, project_id: int) -> None:
        self.project_id = project_id
        self.next_id = 1

    def call(
        self,
        at: datetime,
        queue_s: float,
        in_model_s: float,
        *,
        instance: str = "vllm-0",
        tenant: str = "acme",
        with_client: bool = True,
        only: str | None = None,
        client_provider: str = "vllm",
    ) -> tuple[bytes, bytes, bytes]:
        """A call arriving at `at`: queue, then prefill (a tenth) and decode. Returns (trace,
        client span, server span) ids. `only` stores just the "client" or the "server" span."""
        trace = uuid.uuid4().bytes
        client_id = self.next_id.to_bytes(8, "big")
        server_id = (self.next_id + 1).to_bytes(8, "big")
        self.next_id += 2
        end = at + timedelta(seconds=queue_s + in_model_s)
        client = CanonicalSpan(
            trace_id=trace, span_id=client_id, parent_span_id=None, name="chat llama", kind=3,
            start_ns=ns(at) - 2_000_000, end_ns=ns(end) + 4_000_000, status_code=0, status_message="",
            service_name="docs-api", scope_name="opentelemetry.instrumentation.openai_v2", is_llm=True,
            provider=client_provider, request_model="llama", input_tokens=100, output_tokens=50, tenant=tenant,
            feature="summarize", resource={"service.name": "docs-api"},
        )  # fmt: skip
        server = CanonicalSpan(
            trace_id=trace, span_id=server_id, parent_span_id=client_id if with_client else None,
            name="llm_request", kind=2, start_ns=ns(at), end_ns=ns(end), status_code=0, status_message="",
            service_name="vllm-serving", scope_name="vllm.llm_engine", is_llm=True, provider="vllm",
            input_tokens=100, output_tokens=50, queue_ms=queue_s * 1000, prefill_ms=in_model_s * 100,
            decode_ms=in_model_s * 900, resource={"service.name": "vllm-serving", "service.instance.id": instance},
        )  # fmt: skip
        spans = {"client": [client], "server": [server], None: [client, server] if with_client else [server]}[only]
        insert_spans(self.project_id, spans)
        return trace, client_id, server_id


def cost_of(trace: bytes, span_id: bytes) -> tuple[Decimal | None, str | None]:
    span = Span.objects.get(trace_id=uuid.UUID(bytes=trace), span_id=int.from_bytes(span_id, "big", signed=True))
    return span.cost_usd, span.cost_source


def units(value: int) -> Decimal:
    return Decimal(value) / Decimal(10**10)


def test_shares_by_work_idle_and_an_interval_boundary(project: Any, h100_price: GpuPrice, t0: datetime) -> None:
    t1 = t0 + timedelta(seconds=300)
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100), ("GPU-b", H100)], [t0 + timedelta(seconds=30), t1])
    traffic = Traffic(project.id)
    # In the model: A [10 s, 70 s), B [40 s, 70 s), C [280 s, 340 s) from t0.
    a = traffic.call(t0 + timedelta(seconds=5), 5, 60)
    b = traffic.call(t0 + timedelta(seconds=40), 0, 30, tenant="globex")
    c = traffic.call(t0 + timedelta(seconds=279), 1, 60)

    first = attribute_interval(project.id, t0)
    second = attribute_interval(project.id, t1)

    # Interval 1: 2 GPUs x $0.30 = $0.60. Busy = [10, 70) + [280, 300) = 80 s of 300:
    # attributed $0.60 x 80/300 = $0.16 (1,600,000,000 units), idle $0.44. Work 60 : 30 : 20 s
    # of 110: 872,727,272.7 / 436,363,636.4 / 290,909,090.9 units; the two units left go to the
    # largest remainders (C .9, then A .7).
    pool = CostInterval.objects.get(project=project, start=t0)
    assert (pool.gpus, pool.gpu_cost_usd, pool.attributed_usd, pool.idle_usd) == (
        2, Decimal("0.60"), Decimal("0.16"), Decimal("0.44"),
    )  # fmt: skip
    assert pool.busy_seconds == pytest.approx(80.0)
    assert pool.attributed_usd + pool.idle_usd == pool.gpu_cost_usd
    # Interval 2: busy [300, 340) = 40 s: $0.60 x 40/300 = $0.08, all C's; idle $0.52.
    later = CostInterval.objects.get(project=project, start=t1)
    assert (later.attributed_usd, later.idle_usd) == (Decimal("0.08"), Decimal("0.52"))

    # The cost lands on the client span (the call), marked attributed; the server span keeps none.
    assert cost_of(a[0], a[1]) == (units(872_727_273), ATTRIBUTED)
    assert cost_of(b[0], b[1]) == (units(436_363_636), ATTRIBUTED)
    assert cost_of(c[0], c[1]) == (units(290_909_091) + Decimal("0.08"), ATTRIBUTED)
    assert cost_of(a[0], a[2]) == (None, None)
    assert first.spans_changed == 3 and second.spans_changed == 1

    # The rollups hear of it: the hours of the changed spans are noted.
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM rollups_dirtyhour WHERE hour = date_trunc('hour', %s::timestamptz)", [t0])
        assert cur.fetchone()[0] >= 1

    # Running it again changes nothing.
    assert attribute_interval(project.id, t0).spans_changed == 0
    assert cost_of(a[0], a[1]) == (units(872_727_273), ATTRIBUTED)
    assert CostShare.objects.filter(project=project, interval_start=t0).count() == 3


def test_an_interval_without_requests_is_all_idle(project: Any, h100_price: GpuPrice, t0: datetime) -> None:
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0 + timedelta(seconds=1)])
    result = attribute_interval(project.id, t0)
    pool = CostInterval.objects.get(project=project, start=t0)
    assert (pool.gpu_cost_usd, pool.attributed_usd, pool.idle_usd, pool.requests) == (
        Decimal("0.30"), Decimal("0"), Decimal("0.30"), 0,
    )  # fmt: skip
    assert result.spans_changed == 0


def test_requests_on_an_instance_without_gpu_data_stay_unknown(
    project: Any, h100_price: GpuPrice, t0: datetime
) -> None:
    traffic = Traffic(project.id)
    lone = traffic.call(t0 + timedelta(seconds=10), 0, 10, instance="vllm-9")
    attribute_interval(project.id, t0)
    pool = CostInterval.objects.get(project=project, start=t0, gpu_instance="vllm-9")
    assert (pool.gpus, pool.gpu_cost_usd, pool.requests) == (0, None, 1)
    assert cost_of(lone[0], lone[1]) == (None, None)


def test_a_gpu_without_a_price_leaves_cost_unknown(project: Any, h100_price: GpuPrice, t0: datetime) -> None:
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100), ("GPU-x", "NVIDIA B200")], [t0])
    call = Traffic(project.id).call(t0 + timedelta(seconds=10), 0, 10)
    attribute_interval(project.id, t0)
    pool = CostInterval.objects.get(project=project, start=t0)
    assert (pool.unpriced_gpus, pool.gpu_cost_usd, pool.attributed_usd) == (1, None, None)
    assert cost_of(call[0], call[1]) == (None, None)


def test_serving_instance_joins_spans_to_gpus_and_names_the_price_list(project: Any, t0: datetime) -> None:
    GpuPrice.objects.create(
        provider="on-prem", gpu_model_pattern="NVIDIA H100 80GB HBM3", effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        usd_per_gpu_hour=Decimal("1.20"),
    )  # fmt: skip
    ServingInstance.objects.create(project=project, name="vllm-0", gpu_instance="gpu-node-7", price_provider="on-prem")
    gpu_samples(project.id, "gpu-node-7", [("GPU-a", H100)], [t0])
    call = Traffic(project.id).call(t0, 0, 150)
    attribute_interval(project.id, t0)
    # $1.20/h x 300 s = $0.10; busy 150 s: $0.05, all of it the one call's.
    assert cost_of(call[0], call[1]) == (Decimal("0.05"), ATTRIBUTED)
    assert CostInterval.objects.get(project=project, start=t0).idle_usd == Decimal("0.05")


def test_prices_that_do_not_divide_evenly_still_add_up(project: Any, t0: datetime) -> None:
    GpuPrice.objects.create(
        provider="test", gpu_model_pattern=".*", effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        usd_per_gpu_hour=Decimal("2.99"),
    )  # fmt: skip
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100), ("GPU-b", H100), ("GPU-c", H100)], [t0])
    traffic = Traffic(project.id)
    calls = [traffic.call(t0 + timedelta(seconds=7 * i), 0, 13 + i) for i in range(7)]
    attribute_interval(project.id, t0)
    pool = CostInterval.objects.get(project=project, start=t0)
    # One GPU for 300 s at $2.99/h = $0.249166666..., rounded half up to 10 places.
    per_gpu = (Decimal("2.99") * 300 / 3600).quantize(Decimal("1E-10"), rounding="ROUND_HALF_UP")
    assert pool.gpu_cost_usd == 3 * per_gpu == Decimal("0.7475000001")
    assert pool.attributed_usd + pool.idle_usd == pool.gpu_cost_usd
    assert sum(cost_of(t, c)[0] for t, c, _ in calls) == pool.attributed_usd


def test_split_units_adds_up_exactly() -> None:
    assert split_units(10, [1, 1, 1]) == [4, 3, 3]
    assert split_units(1_600_000_000, [60, 30, 20]) == [872_727_273, 436_363_636, 290_909_091]
    assert split_units(5, [0, 0]) == [0, 0]


def test_late_span_resplits_its_interval_exactly_once(project: Any, h100_price: GpuPrice, t0: datetime) -> None:
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0])
    AttributionCursor.objects.create(project=project, computed_until=t0, watermark=datetime.now(UTC))
    traffic = Traffic(project.id)
    early = traffic.call(t0 + timedelta(seconds=10), 0, 60)
    assert sweep_project(project.id).due >= 1
    # $0.30, busy 60 s: $0.06, all the early call's.
    assert cost_of(early[0], early[1]) == (Decimal("0.06"), ATTRIBUTED)

    late = traffic.call(t0 + timedelta(seconds=40), 0, 60)  # in the model [40, 100) s
    result = sweep_project(project.id)
    assert result.late == 1
    # Busy [10, 100) = 90 s: $0.09, split 60 : 60.
    assert cost_of(early[0], early[1]) == (Decimal("0.045"), ATTRIBUTED)
    assert cost_of(late[0], late[1]) == (Decimal("0.045"), ATTRIBUTED)
    pool = CostInterval.objects.get(project=project, start=t0)
    assert (pool.attributed_usd, pool.idle_usd) == (Decimal("0.09"), Decimal("0.21"))
    # The next sweep may look at the same arrivals again (commit slack): nothing changes.
    assert sweep_project(project.id).spans_changed == 0
    assert cost_of(early[0], early[1]) == (Decimal("0.045"), ATTRIBUTED)


def test_late_sample_of_another_gpu_reprices_the_interval(project: Any, h100_price: GpuPrice, t0: datetime) -> None:
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0])
    AttributionCursor.objects.create(project=project, computed_until=t0, watermark=datetime.now(UTC))
    call = Traffic(project.id).call(t0 + timedelta(seconds=100), 0, 30)
    sweep_project(project.id)
    # One GPU: $0.30 x 30/300 = $0.03.
    assert cost_of(call[0], call[1]) == (Decimal("0.03"), ATTRIBUTED)
    gpu_samples(project.id, "vllm-0", [("GPU-b", H100)], [t0 + timedelta(seconds=299)])
    assert sweep_project(project.id).late == 1
    # Two GPUs: $0.60 x 30/300 = $0.06.
    assert cost_of(call[0], call[1]) == (Decimal("0.06"), ATTRIBUTED)
    assert CostInterval.objects.get(project=project, start=t0).idle_usd == Decimal("0.54")


def test_a_late_client_span_takes_over_the_cost_from_its_server_span(
    project: Any, h100_price: GpuPrice, t0: datetime
) -> None:
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0])
    AttributionCursor.objects.create(project=project, computed_until=t0, watermark=datetime.now(UTC))
    traffic = Traffic(project.id)
    trace, client, server = traffic.call(t0 + timedelta(seconds=10), 0, 30, only="server")
    sweep_project(project.id)
    # Only the server span is known: it is the call and carries the cost.
    assert cost_of(trace, server) == (Decimal("0.03"), ATTRIBUTED)
    # The client span arrives late: it is the call now, and the cost moves to it.
    insert_spans(project.id, _client_of(trace, client, t0))
    sweep_project(project.id)
    assert cost_of(trace, client) == (Decimal("0.03"), ATTRIBUTED)
    assert cost_of(trace, server) == (None, None)


def _client_of(trace: bytes, client: bytes, t0: datetime) -> list[CanonicalSpan]:
    at = t0 + timedelta(seconds=10)
    return [
        CanonicalSpan(
            trace_id=trace, span_id=client, parent_span_id=None, name="chat llama", kind=3,
            start_ns=ns(at) - 2_000_000, end_ns=ns(at + timedelta(seconds=30)) + 4_000_000, status_code=0,
            status_message="", service_name="docs-api", scope_name="opentelemetry.instrumentation.openai_v2",
            is_llm=True, provider="vllm", request_model="llama", tenant="acme", feature="summarize",
        )
    ]  # fmt: skip


def test_repricing_leaves_attributed_cost_alone(project: Any, h100_price: GpuPrice, t0: datetime) -> None:
    """An app calling vLLM through the OpenAI SDK may label its client span `openai`: no
    price row knows the model, and re-pricing must not wipe the attributed cost."""
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0])
    call = Traffic(project.id).call(t0 + timedelta(seconds=10), 0, 30, client_provider="openai")
    attribute_interval(project.id, t0)
    reprice_range(t0 - timedelta(hours=1), t0 + timedelta(hours=1))
    assert cost_of(call[0], call[1]) == (Decimal("0.03"), ATTRIBUTED)


def test_gpu_energy_across_a_counter_reset_is_hand_computed(project: Any, t0: datetime) -> None:
    """The page's energy figure reads the reset-aware intervals: 100 J, 250 J, then the
    sampler restarts (new start time, 40 J since): 150 + 40 = 190 J after the first point."""
    start, restart = ns(t0) - 60 * NS, ns(t0) + 150 * NS
    metric = counter(
        "hw.energy",
        [(start, ns(t0) + 10 * NS, 100.0), (start, ns(t0) + 100 * NS, 250.0), (restart, ns(t0) + 200 * NS, 40.0)],
        attributes={"hw.id": "GPU-a", "hw.model": H100, "gpu.index": 0},
    )
    body = request_of([metric], {"service.instance.id": "vllm-0"})
    points, rejected = decode_metrics_protobuf(body, point_limits())
    ingest_points(project.id, points, rejected)
    # From t0 + 11 s: 250 - 100 = 150, then the restart's 40.
    assert increase_total(project.id, "hw.energy", t0 + timedelta(seconds=11), t0 + timedelta(seconds=300)) == 190.0


def test_calls_that_used_no_gpu_time_cost_a_known_zero(project: Any, h100_price: GpuPrice, t0: datetime) -> None:
    gpu_samples(project.id, "vllm-0", [("GPU-a", H100)], [t0])
    traffic = Traffic(project.id)
    # Aborted in the queue: a server span with no time in the model.
    aborted = traffic.call(t0 + timedelta(seconds=10), 30, 0)
    # Rejected before the engine: no server span at all.
    rejected = traffic.call(t0 + timedelta(seconds=50), 0, 1, only="client")
    served = traffic.call(t0 + timedelta(seconds=100), 0, 30)
    attribute_interval(project.id, t0)
    assert cost_of(aborted[0], aborted[1]) == (Decimal("0"), ATTRIBUTED)
    assert cost_of(rejected[0], rejected[1]) == (Decimal("0"), ATTRIBUTED)
    # The one that ran: $0.30 x 30/300.
    assert cost_of(served[0], served[1]) == (Decimal("0.03"), ATTRIBUTED)
    pool = CostInterval.objects.get(project=project, start=t0, gpu_instance="vllm-0")
    assert (pool.attributed_usd, pool.idle_usd) == (Decimal("0.03"), Decimal("0.27"))
