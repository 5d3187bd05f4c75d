"""The scrape task against a real HTTP server serving recorded vLLM and DCGM /metrics text."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from apps.accounts.models import Project
from apps.gpu import reads
from apps.gpu.models import MetricPoint, MetricSeries, ScrapeTarget
from apps.gpu.scrape import claim_due_targets
from apps.gpu.tasks import scrape_endpoints
from tests.gpu.exposition_server import ExpositionServer, exposition_server, fixture
from tests.gpu.helpers import points_of

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def metrics_server() -> Iterator[ExpositionServer]:
    with exposition_server() as server:
        yield server


def _target(project: Project, server: ExpositionServer, kind: str = "vllm", **fields: object) -> ScrapeTarget:
    return ScrapeTarget.objects.create(
        project=project, url=server.url, kind=kind, interval_seconds=15, next_scrape_at=T0, **fields
    )


def _sweep_at(moment: datetime) -> dict[str, int]:
    with time_machine.travel(moment, tick=False):
        return scrape_endpoints()


def test_vllm_scrapes_give_reset_aware_rates(project: Project, metrics_server: ExpositionServer) -> None:
    metrics_server.serve(
        fixture("vllm_0_33_scrape1.txt"), fixture("vllm_0_33_scrape2.txt"), fixture("vllm_0_33_restarted.txt")
    )
    target = _target(project, metrics_server)
    for step in range(3):
        assert _sweep_at(T0 + timedelta(seconds=15 * step)) == {"scraped": 1, "failed": 0, "points": 19}
    assert metrics_server.requests == 3
    target.refresh_from_db()
    assert (target.consecutive_failures, target.last_error, target.last_sample_count) == (0, "", 19)
    assert target.next_scrape_at == T0 + timedelta(seconds=45)

    # The first scrape is a baseline (the server was up long before); the third follows a
    # restart (_created moved, the counters started again from zero).
    assert [p.increase for p in points_of("vllm:prefix_cache_queries")] == [None, 4000.0, 1000.0]
    assert [p.increase for p in points_of("vllm:prefix_cache_hits")] == [None, 3000.0, 400.0]
    window = (T0 - timedelta(minutes=1), T0 + timedelta(minutes=5))
    rate = reads.increase_ratio(project.pk, "vllm:prefix_cache_hits", "vllm:prefix_cache_queries", *window)
    assert rate == pytest.approx(3400 / 5000)

    success = MetricSeries.objects.filter(name="vllm:request_success")
    assert {s.attributes["finished_reason"] for s in success} == {"stop", "length", "abort"}
    stop = MetricSeries.objects.get(name="vllm:request_success", attributes__finished_reason="stop")
    assert [p.increase for p in MetricPoint.objects.filter(series_id=stop.series_id).order_by("time")] == [
        None, 20.0, 5.0,
    ]  # fmt: skip
    ttft = points_of("vllm:time_to_first_token_seconds")
    assert ttft[0].interval_buckets is None
    assert ttft[1].interval_count == 133 - 111
    assert sum(ttft[1].interval_buckets) == 22
    assert ttft[1].bounds == [0.01, 0.05, 0.1, 0.5, 1.0, 5.0]
    assert ttft[2].interval_count == 5  # after the restart: the new counts themselves
    (series,) = MetricSeries.objects.filter(name="vllm:kv_cache_usage_perc")
    assert series.attributes == {"model_name": "meta-llama/Llama-3.1-8B-Instruct", "engine": "0"}
    assert series.resource["service.instance.id"] == metrics_server.url.split("/")[2]


@pytest.mark.parametrize("name", ["vllm_0_8_legacy_names.txt", "vllm_0_10_deprecation_window.txt"])
def test_older_vllm_names_map_to_the_current_ones(
    project: Project, metrics_server: ExpositionServer, name: str
) -> None:
    metrics_server.serve(fixture(name))
    _target(project, metrics_server)
    _sweep_at(T0)
    names = set(MetricSeries.objects.values_list("name", flat=True))
    assert {"vllm:kv_cache_usage_perc", "vllm:prefix_cache_queries", "vllm:prefix_cache_hits"} <= names
    assert not any("gpu_" in n or n.split(":")[1] == "time_per_output_token_seconds" for n in names)
    # One series per canonical name even when both the old and the new name are exposed.
    assert MetricSeries.objects.filter(name="vllm:prefix_cache_hits").count() == 1
    assert points_of("vllm:kv_cache_usage_perc")[0].value == 0.42
    if "legacy" in name:
        assert points_of("vllm:inter_token_latency_seconds")[0].count == 20000


def test_dcgm_fields_become_the_canonical_gpu_series(project: Project, metrics_server: ExpositionServer) -> None:
    metrics_server.serve(fixture("dcgm_scrape1.txt"), fixture("dcgm_scrape2.txt"))
    _target(project, metrics_server, kind="dcgm", instance="gpu-node-7:9400")
    _sweep_at(T0)
    _sweep_at(T0 + timedelta(seconds=15))
    gpu0 = {"hw.id": "GPU-5f1c3a2e-8d4b-4c1e-9a7f-2b3c4d5e6f70", "hw.model": "NVIDIA H100 80GB HBM3", "gpu.index": 0}

    def first(name: str) -> MetricPoint:
        series = MetricSeries.objects.get(name=name, attributes__contains=gpu0)
        return MetricPoint.objects.filter(series_id=series.series_id).order_by("time").first()  # type: ignore[return-value]

    assert first("hw.gpu.utilization").value == pytest.approx(0.87)
    assert MetricSeries.objects.get(name="hw.gpu.utilization", attributes__contains=gpu0).attributes["hw.gpu.task"] == (
        "general"
    )
    assert first("observatory.gpu.memory_copy.utilization").value == pytest.approx(0.41)
    assert first("hw.gpu.memory.usage").value == 74923 * 1024 * 1024
    assert first("hw.gpu.memory.limit").value == (74923 + 6151) * 1024 * 1024
    assert first("hw.power").value == pytest.approx(512.337)
    assert first("hw.temperature").value == 61
    assert first("observatory.gpu.sm_clock").value == 1980
    energy = points_of("hw.energy")
    # mJ counter -> J; the second scrape's increase is the energy used in between.
    gpu0_energy = [p for p in energy if p.value and p.value > 9e8]
    assert [p.increase for p in gpu0_energy] == [None, pytest.approx(39000.0)]
    series = MetricSeries.objects.get(name="hw.power", attributes__contains=gpu0)
    assert series.resource == {
        "service.instance.id": "gpu-node-7:9400", "observatory.scrape.kind": "dcgm", "host.name": "gpu-node-7",
    }  # fmt: skip
    assert MetricSeries.objects.filter(name="observatory.gpu.last_xid").count() == 2


def test_a_failing_target_shows_its_error_and_backs_off(project: Project, metrics_server: ExpositionServer) -> None:
    metrics_server.serve("oops", status=500)
    target = _target(project, metrics_server)
    assert _sweep_at(T0) == {"scraped": 0, "failed": 1, "points": 0}
    target.refresh_from_db()
    assert "HTTP 500" in target.last_error
    assert (target.consecutive_failures, target.next_scrape_at) == (1, T0 + timedelta(seconds=30))
    # Not due again before the back-off ends.
    assert _sweep_at(T0 + timedelta(seconds=20)) == {"scraped": 0, "failed": 0, "points": 0}
    metrics_server.serve("this is { not exposition text")
    _sweep_at(T0 + timedelta(seconds=30))
    target.refresh_from_db()
    assert target.consecutive_failures == 2
    assert "did not answer Prometheus exposition text" in target.last_error
    assert target.next_scrape_at == T0 + timedelta(seconds=30 + 60)
    metrics_server.serve(fixture("vllm_0_33_scrape1.txt"))
    _sweep_at(T0 + timedelta(seconds=90))
    target.refresh_from_db()
    assert (target.consecutive_failures, target.last_error) == (0, "")
    assert target.next_scrape_at == T0 + timedelta(seconds=105)


def test_an_unreachable_target_is_an_error_not_a_crash(project: Project) -> None:
    ScrapeTarget.objects.create(
        project=project, url="http://127.0.0.1:9/metrics", kind="vllm", interval_seconds=10, next_scrape_at=T0
    )
    assert _sweep_at(T0)["failed"] == 1
    assert "cannot reach" in ScrapeTarget.objects.get().last_error


def test_a_target_is_claimed_once_and_disabled_ones_never(project: Project, metrics_server: ExpositionServer) -> None:
    target = _target(project, metrics_server)
    _target(project, metrics_server, enabled=False)
    first = claim_due_targets(T0, 10)
    second = claim_due_targets(T0, 10)
    assert [t.pk for t in first] == [target.pk]
    assert second == []
