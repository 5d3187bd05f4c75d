"""What the drift detector reads: the span flags (conventions), the rollup's count columns
(capped), and the rate tests on hand-made rollup rows (validation failures, a 3-call slice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apps.accounts.models import Project
from apps.insights import drift
from apps.insights.models import Finding
from apps.rollups.compute import MAX_COUNT_KEYS, OTHER_KEY
from apps.rollups.models import RollupDay, RollupHour, mask
from apps.rollups.runner import rollup_range
from apps.telemetry.store import insert_spans
from collectors.conventions import MappingConfig, map_span
from collectors.records import RawSpan
from tests.rollups.helpers import Trace, at

START_NS = 1_763_290_800_000_000_000


def _map(attributes: dict[str, Any]) -> Any:
    raw = RawSpan(
        trace_id=bytes(16), span_id=bytes(7) + b"\x01", parent_span_id=None, name="chat", kind=3,
        start_ns=START_NS, end_ns=START_NS + 10**9, status_code=0, status_message="",
        attributes={"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o", **attributes},
        resource={}, scope_name="t", events=(),
    )  # fmt: skip
    return map_span(raw, MappingConfig())


def test_span_flags_from_conventions() -> None:
    assert _map({"observatory.output.valid": False}).output_valid is False
    assert _map({"observatory.output.valid": "true"}).output_valid is True
    assert _map({}).output_valid is None and _map({}).refused is None
    assert _map({"gen_ai.response.finish_reasons": ["content_filter"]}).refused is True
    assert _map({"anthropic.message.stop_reason": "refusal"}).refused is True
    assert _map({"gen_ai.completion.0.refusal": "I can't help with that."}).refused is True
    assert _map({"gen_ai.response.finish_reasons": ["stop"]}).refused is None


@pytest.mark.django_db
def test_rollup_counts_answers_and_caps_keys(project: Project) -> None:
    start = at("2026-11-10T10:00:00")
    traces = []
    for number in range(MAX_COUNT_KEYS + 5):
        trace = Trace(start + timedelta(seconds=number))
        root = trace.root(tenant="acme", feature="chat")
        trace.llm(parent=root, finish_reasons=["stop"], system_fingerprint=f"fp_{number:03d}")
        traces.append(trace)
    odd = Trace(start + timedelta(minutes=5))
    root = odd.root(tenant="acme", feature="chat")
    odd.llm(parent=root, output_tokens=0, finish_reasons=["content_filter"], refused=True, output_valid=False,
            system_fingerprint="fp_000")  # fmt: skip
    odd.llm(parent=root, at_ms=1200, output_valid=True, finish_reasons=["length"], response_model="gpt-4o-mini-new")
    traces.append(odd)
    insert_spans(project.pk, [span for trace in traces for span in trace.spans])
    rollup_range(start, start + timedelta(hours=1), [project.pk])
    row = RollupHour.objects.get(project_id=project.pk, grouping=mask("provider", "model"))
    assert row.requests == MAX_COUNT_KEYS + 7
    assert row.finish_reasons == {"stop": MAX_COUNT_KEYS + 5, "content_filter": 1, "length": 1}
    assert row.response_models == {"gpt-4o-mini-2024-07-18": MAX_COUNT_KEYS + 6, "gpt-4o-mini-new": 1}
    assert len(row.fingerprints) == MAX_COUNT_KEYS + 1 and row.fingerprints["fp_000"] == 2
    assert sum(row.fingerprints.values()) == MAX_COUNT_KEYS + 6 and row.fingerprints[OTHER_KEY] == 5
    assert (row.empty_answers, row.refused_answers, row.validated_outputs, row.invalid_outputs) == (1, 1, 2, 1)
    day = RollupDay.objects.get(project_id=project.pk, grouping=mask("provider", "model"))
    assert day.finish_reasons == row.finish_reasons and day.fingerprints == row.fingerprints
    assert (day.empty_answers, day.invalid_outputs) == (1, 1)


def _rows(project: Project, first: datetime, hours: int, **values: Any) -> None:
    RollupHour.objects.bulk_create(
        RollupHour(project=project, bucket=first + timedelta(hours=h), grouping=mask("provider", "model"),
                   provider="openai", model="gpt-4o", **values)
        for h in range(hours)
    )  # fmt: skip


@pytest.mark.django_db
def test_validation_failures_rise_is_found_and_a_three_call_slice_is_not_judged(project: Project) -> None:
    now = datetime(2026, 11, 16, 12, tzinfo=UTC)
    recent = now - timedelta(hours=24)
    _rows(project, recent - timedelta(days=7), 24 * 7, requests=20, validated_outputs=20, invalid_outputs=0,
          finish_reasons={"stop": 20})  # fmt: skip
    _rows(project, recent, 24, requests=20, validated_outputs=20, invalid_outputs=4, finish_reasons={"stop": 20})
    RollupHour.objects.create(project=project, bucket=recent, grouping=mask("provider", "model"), provider="openai",
                              model="tiny", requests=3, empty_answers=3)  # fmt: skip
    written = drift.detect(project.pk, now)
    assert [(f.metric, f.slice) for f in written] == [("invalid_outputs", {"provider": "openai", "model": "gpt-4o"})]
    finding = written[0]
    assert finding.evidence["effect"] == {"name": "share", "value": pytest.approx(0.2), "floor": 0.03}
    assert finding.evidence["test"]["name"] == "two-proportion" and finding.evidence["current"]["n"] == 480
    assert "0% -> 20%" in finding.title
    assert not Finding.objects.filter(slice__model="tiny").exists()
