"""Drift: silent provider and model changes (issue 10; docs/metrics.md, "Drift").

Per slice, the recent window (default: the last 24 closed hours) against the baseline (the 7
days before it), both read from the hourly rollup rows (no raw span is rescanned for the
baseline):

- slices: (provider, model) and (feature, provider, model), the rollups' own grouping sets;
- continuous: output tokens, e2e latency and TTFT per call, from the rolled-up sketches: KS
  test (stats.ks_sketch) with the Wasserstein distance of log(1 + x) as the effect;
- categorical: the finish-reason mix and the error-type mix (chi-square, Jensen-Shannon
  distance as the effect); empty answers, refused answers and the app's validation failures
  (one-sided two-proportion test, the rise in share as the effect);
- new values: a responded model name or system fingerprint absent from the baseline and
  taking at least NEW_VALUE_SHARE of the slice's recent calls, with the moment it first
  appeared (its first hour from the rollups, then its first span within that hour).

A test needs enough calls on both sides (minimums below); a slice/metric that has them is
"judged", and its open finding resolves when the test no longer finds a shift. All tests of
one run are one family for Benjamini-Hochberg (episodes.record). A candidate must clear both
the FDR and an effect-size floor: on weeks of traffic a tiny shift is always "significant".
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from django.conf import settings
from django.db import connection

from apps.insights import changepoint, episodes, stats
from apps.insights.episodes import Candidate
from apps.insights.models import Finding
from apps.rollups.models import mask
from apps.rollups.sketch import bucket_values

log = logging.getLogger(__name__)

KIND = Finding.Kind.DRIFT
PROVIDER_MODEL = mask("provider", "model")
FEATURE_PROVIDER_MODEL = mask("feature", "provider", "model")
SLICE_GROUPINGS = {PROVIDER_MODEL: ("provider", "model"), FEATURE_PROVIDER_MODEL: ("feature", "provider", "model")}

# metric -> (rolled-up distribution, unit, label)
CONTINUOUS = {
    "output_tokens": ("output_tokens", "tokens", "output tokens per call"),
    "e2e_latency": ("e2e_ms", "ms", "e2e latency"),
    "ttft": ("ttft_ms", "ms", "time to first token"),
}
MIX_METRICS = {"finish_reason_mix": "finish reasons", "error_type_mix": "error types"}
# metric -> (label, what counts as an event)
RATE_METRICS = {
    "empty_answers": "empty answers",
    "refused_answers": "refused answers",
    "invalid_outputs": "outputs failing the app's validation",
}
NEW_VALUE_METRICS = {"new_fingerprint": "system_fingerprint", "new_response_model": "responded model"}
METRICS = (*CONTINUOUS, *MIX_METRICS, *RATE_METRICS, *NEW_VALUE_METRICS)


@dataclass(frozen=True)
class Config:
    """The detector's settings (each an INSIGHTS_DRIFT_* setting, read when a run starts)."""

    recent_hours: int = 24
    baseline_days: int = 7
    min_recent: int = 100  # calls (or samples of a distribution) in the recent window
    min_baseline: int = 300  # ... and in the baseline
    min_errors: int = 30  # errors on each side, for the error-type mix
    wasserstein_floor: float = 0.15  # log units: ~16% shift of a typical value
    js_floor: float = 0.1
    error_js_floor: float = 0.25  # the error mix moves with load (rate limits): a higher bar
    share_floor: float = 0.03  # +3 points of empty / refused / invalid answers
    new_value_share: float = 0.05  # a new fingerprint / model must take 5% of recent calls
    new_value_min_calls: int = 20

    @classmethod
    def from_settings(cls) -> Config:
        defaults = cls()
        values = {}
        for name in cls.__dataclass_fields__:
            raw = getattr(settings, f"INSIGHTS_DRIFT_{name.upper()}", getattr(defaults, name))
            values[name] = type(getattr(defaults, name))(raw)
        return cls(**values)


@dataclass
class Side:
    """One window of one slice, added up from its hour rows."""

    start: datetime
    end: datetime
    calls: int = 0
    errors: int = 0
    empty: int = 0
    refused: int = 0
    validated: int = 0
    invalid: int = 0
    errors_by_type: Counter[str] = field(default_factory=Counter)
    finish_reasons: Counter[str] = field(default_factory=Counter)
    response_models: Counter[str] = field(default_factory=Counter)
    fingerprints: Counter[str] = field(default_factory=Counter)
    dists: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def dist(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.dists.get(name, (np.empty(0, np.int64), np.empty(0, np.int64)))

    def samples(self, name: str) -> int:
        return int(self.dist(name)[1].sum())


SliceKey = tuple[int, tuple[str, ...]]  # (grouping, dimension values)


@dataclass
class Windows:
    baseline_start: datetime
    baseline_end: datetime
    recent_start: datetime
    recent_end: datetime


def detect(project_id: int, now: datetime) -> list[Finding]:
    """Run this family's tests for one project at `now` and record the episodes."""
    config = Config.from_settings()
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    windows = Windows(
        baseline_start=end - timedelta(hours=config.recent_hours) - timedelta(days=config.baseline_days),
        baseline_end=end - timedelta(hours=config.recent_hours),
        recent_start=end - timedelta(hours=config.recent_hours),
        recent_end=end,
    )
    data = read_slices(project_id, windows)
    # Accepted shifts: their signature's baseline starts no earlier than the acceptance.
    signatures = {episodes.signature(KIND, metric, slice_of(key)): (key, metric) for key in data for metric in METRICS}
    floors = episodes.baseline_floor(project_id, signatures)
    floored: dict[SliceKey, dict[str, tuple[Side, Side]]] = {}
    for sig, floor in floors.items():
        key, metric = signatures[sig]
        if floor <= windows.baseline_start:
            continue
        start = min(max(floor, windows.baseline_start), windows.baseline_end)
        narrowed = Windows(start, windows.baseline_end, windows.recent_start, windows.recent_end)
        sides = read_slices(project_id, narrowed, only=key).get(key)
        empty = (Side(start, windows.baseline_end), data[key][1])
        floored.setdefault(key, {})[metric] = sides if sides is not None else empty

    candidates: list[Candidate] = []
    judged: list[str] = []
    tested = 0
    for key in sorted(data):
        first_seen: dict[str, datetime] = {}
        hourly: dict[SliceKey, list[Hour]] = {}
        for metric in (*NEW_VALUE_METRICS, *CONTINUOUS, *MIX_METRICS, *RATE_METRICS):
            baseline, recent = floored.get(key, {}).get(metric, data[key])
            outcome = _test(project_id, key, metric, baseline, recent, config, first_seen)
            if outcome is None:
                continue
            tested += 1
            judged.append(episodes.signature(KIND, metric, slice_of(key)))
            if isinstance(outcome, Candidate):
                if metric not in NEW_VALUE_METRICS:
                    if key not in hourly:
                        hourly[key] = read_hours(project_id, key, windows.baseline_start, windows.recent_end)
                    add_series(outcome, hourly[key], baseline)
                candidates.append(outcome)
    written = episodes.record(project_id, KIND, METRICS, candidates, tested=tested, judged=judged, now=now)
    log.info(
        "drift: project %s, %s slices, %s tests, %s candidates, %s open findings",
        project_id, len(data), tested, len(candidates), len(written),
    )  # fmt: skip
    return written


def slice_of(key: SliceKey) -> dict[str, str]:
    grouping, values = key
    return dict(zip(SLICE_GROUPINGS[grouping], values, strict=True))


# --------------------------------------------------------------------------- reading


def _slice_condition(only: SliceKey | None) -> tuple[str, list[Any]]:
    if only is None:
        return "", []
    grouping, values = only
    dims = SLICE_GROUPINGS[grouping]
    return "".join(f" AND h.{dim} = %s" for dim in dims), list(values)


def read_slices(project_id: int, windows: Windows, only: SliceKey | None = None) -> dict[SliceKey, tuple[Side, Side]]:
    """Every slice's (baseline, recent) sides, from the hour rows of the two grouping sets.

    Two statements over the same rows (rollup_hour_read: project, grouping, bucket): one adds
    the counts and gathers the JSON counts, one adds the distributions' counts per bucket
    index (unnest, then one aggregate per slice, side and distribution)."""
    out: dict[SliceKey, tuple[Side, Side]] = {}
    condition, condition_params = _slice_condition(only)
    groupings = [only[0]] if only else list(SLICE_GROUPINGS)
    for grouping in groupings:
        dims = SLICE_GROUPINGS[grouping]
        dim_list = ", ".join(f"h.{dim}" for dim in dims)
        where = (
            "h.project_id = %s AND h.grouping = %s AND h.requests > 0"
            " AND ((h.bucket >= %s AND h.bucket < %s) OR (h.bucket >= %s AND h.bucket < %s))" + condition
        )
        params = [project_id, grouping, windows.baseline_start, windows.baseline_end, windows.recent_start,
                  windows.recent_end, *condition_params]  # fmt: skip
        recent = "h.bucket >= %s"
        docs = ", ".join(
            f"array_agg(h.{column}) FILTER (WHERE h.{column} <> '{{}}'::jsonb)"
            for column in ("errors_by_type", "finish_reasons", "response_models", "fingerprints")
        )
        sums = ", ".join(
            f"sum(h.{column})::bigint"
            for column in ("requests", "errors", "empty_answers", "refused_answers", "validated_outputs",
                           "invalid_outputs")
        )  # fmt: skip
        with connection.cursor() as cur:
            cur.execute(
                f"SELECT {dim_list}, {recent} AS recent, {sums}, {docs} FROM rollups_rolluphour AS h"
                f" WHERE {where} GROUP BY {dim_list}, recent",
                [windows.recent_start, *params],
            )
            for row in cur.fetchall():
                key: SliceKey = (grouping, tuple(value or "" for value in row[: len(dims)]))
                if not key[1][-1]:
                    continue  # no model: nothing a provider could have changed
                if key not in out:
                    out[key] = (Side(windows.baseline_start, windows.baseline_end),
                                Side(windows.recent_start, windows.recent_end))  # fmt: skip
                baseline, recent_side = out[key]
                side = recent_side if row[len(dims)] else baseline
                rest = row[len(dims) + 1 :]
                side.calls, side.errors, side.empty, side.refused, side.validated, side.invalid = map(int, rest[:6])
                for attribute, docs_value in zip(
                    ("errors_by_type", "finish_reasons", "response_models", "fingerprints"), rest[6:], strict=True
                ):
                    counter: Counter[str] = getattr(side, attribute)
                    for doc in docs_value or ():
                        counter.update({k: int(v) for k, v in _as_dict(doc).items()})
            unions = " UNION ALL ".join(
                f"SELECT {dim_list}, {recent} AS recent, '{dist}' AS dist, u.i, u.c"
                f" FROM rollups_rolluphour AS h, unnest(h.{dist}_idx, h.{dist}_cnt) AS u(i, c) WHERE {where}"
                for dist in {spec[0] for spec in CONTINUOUS.values()}
            )
            union_params = [value for _dist in {spec[0] for spec in CONTINUOUS.values()}
                            for value in (windows.recent_start, *params)]  # fmt: skip
            names = ", ".join(f"d.{dim}" for dim in dims)
            cur.execute(
                f"SELECT {names}, d.recent, d.dist, array_agg(d.i ORDER BY d.i), array_agg(d.n ORDER BY d.i)"
                f" FROM (SELECT {', '.join(dims)}, recent, dist, i, sum(c)::bigint AS n FROM ({unions}) AS x"
                f" GROUP BY {', '.join(dims)}, recent, dist, i) AS d GROUP BY {names}, d.recent, d.dist",
                union_params,
            )
            for row in cur.fetchall():
                key = (grouping, tuple(value or "" for value in row[: len(dims)]))
                if key not in out:
                    continue
                side = out[key][1] if row[len(dims)] else out[key][0]
                side.dists[row[len(dims) + 1]] = (np.asarray(row[-2], np.int64), np.asarray(row[-1], np.int64))
    return out


def _as_dict(doc: Any) -> dict[str, Any]:
    return doc if isinstance(doc, dict) else json.loads(doc)


# --------------------------------------------------------------------------- tests


def _test(
    project_id: int,
    key: SliceKey,
    metric: str,
    baseline: Side,
    recent: Side,
    config: Config,
    first_seen: dict[str, datetime],
) -> Candidate | bool | None:
    """None: not enough data to judge; True: judged, no finding; else a Candidate (effect
    over its floor; BH decides)."""
    if baseline.calls < config.min_baseline or recent.calls < config.min_recent:
        return None
    if metric in NEW_VALUE_METRICS:
        return _new_value(project_id, key, metric, baseline, recent, config, first_seen)
    if metric in CONTINUOUS:
        return _continuous(key, metric, baseline, recent, config, first_seen)
    if metric in MIX_METRICS:
        return _mix(key, metric, baseline, recent, config, first_seen)
    return _rate(key, metric, baseline, recent, config, first_seen)


def _continuous(
    key: SliceKey, metric: str, baseline: Side, recent: Side, config: Config, first_seen: dict[str, datetime]
) -> Candidate | bool | None:
    dist, unit, label = CONTINUOUS[metric]
    base, now = baseline.dist(dist), recent.dist(dist)
    n_base, n_now = int(base[1].sum()), int(now[1].sum())
    if n_base < config.min_baseline or n_now < config.min_recent:
        return None
    outcome = stats.ks_sketch(base, now)
    effect = stats.wasserstein_log(base, now)
    if effect < config.wasserstein_floor:
        return True
    base_median, now_median = stats.median(*base), stats.median(*now)
    hist_base, hist_now = stats.common_histograms(base, now)
    evidence = _evidence(
        key, baseline, recent, unit=unit, label=f"median {label}",
        test={"name": outcome.name, "statistic": outcome.statistic, "p_value": outcome.p_value},
        effect={"name": "wasserstein_log", "value": effect, "floor": config.wasserstein_floor},
        baseline_extra={"n": n_base, "value": base_median, "histogram": hist_base},
        current_extra={"n": n_now, "value": now_median, "histogram": hist_now},
        first_seen=first_seen,
    )  # fmt: skip
    direction = "up" if (now_median or 0) >= (base_median or 0) else "down"
    title = f"{_slice_title(key)}: {label} drifted {direction}, median {_fmt(base_median)} -> {_fmt(now_median)} {unit}"
    return _candidate(key, metric, effect, config.wasserstein_floor, title, outcome.p_value, evidence, first_seen)


def _mix(
    key: SliceKey, metric: str, baseline: Side, recent: Side, config: Config, first_seen: dict[str, datetime]
) -> Candidate | bool | None:
    if metric == "finish_reason_mix":
        base_mix, now_mix = baseline.finish_reasons, recent.finish_reasons
        minimums, floor = (config.min_baseline, config.min_recent), config.js_floor
    else:
        base_mix, now_mix = baseline.errors_by_type, recent.errors_by_type
        minimums, floor = (config.min_errors, config.min_errors), config.error_js_floor
    if sum(base_mix.values()) < minimums[0] or sum(now_mix.values()) < minimums[1]:
        return None
    outcome = stats.chi2_mix(base_mix, now_mix)
    effect = stats.js_distance(base_mix, now_mix)
    if effect < floor:
        return True
    base_shares, now_shares = stats.shares(base_mix), stats.shares(now_mix)
    # The category that moved most, for the title and the value.
    moved = max(set(base_shares) | set(now_shares), key=lambda k: abs(now_shares.get(k, 0) - base_shares.get(k, 0)))
    label = MIX_METRICS[metric]
    evidence = _evidence(
        key, baseline, recent, unit="share", label=f"share of {moved!r} among {label}", category=moved,
        test={"name": outcome.name, "statistic": outcome.statistic, "p_value": outcome.p_value},
        effect={"name": "js_distance", "value": effect, "floor": floor},
        baseline_extra={"n": sum(base_mix.values()), "value": base_shares.get(moved, 0.0), "mix": base_shares},
        current_extra={"n": sum(now_mix.values()), "value": now_shares.get(moved, 0.0), "mix": now_shares},
        first_seen=first_seen,
    )  # fmt: skip
    title = (
        f"{_slice_title(key)}: {label} mix changed, {moved!r} {_pct(base_shares.get(moved, 0))}"
        f" -> {_pct(now_shares.get(moved, 0))} of calls"
    )
    return _candidate(key, metric, effect, floor, title, outcome.p_value, evidence, first_seen)


def _rate(
    key: SliceKey, metric: str, baseline: Side, recent: Side, config: Config, first_seen: dict[str, datetime]
) -> Candidate | bool | None:
    if metric == "invalid_outputs":
        k_base, n_base, k_now, n_now = baseline.invalid, baseline.validated, recent.invalid, recent.validated
    elif metric == "empty_answers":
        k_base, n_base, k_now, n_now = baseline.empty, baseline.calls, recent.empty, recent.calls
    else:
        k_base, n_base, k_now, n_now = baseline.refused, baseline.calls, recent.refused, recent.calls
    if n_base < config.min_baseline or n_now < config.min_recent:
        return None
    outcome = stats.rate_increase(events=k_now, calls=n_now, baseline_events=k_base, baseline_calls=n_base)
    rise = k_now / n_now - k_base / n_base
    if rise < config.share_floor:
        return True
    label = RATE_METRICS[metric]
    evidence = _evidence(
        key, baseline, recent, unit="share", label=f"share of {label}",
        test={"name": outcome.name, "statistic": outcome.statistic, "p_value": outcome.p_value},
        effect={"name": "share", "value": rise, "floor": config.share_floor},
        baseline_extra={"n": n_base, "value": k_base / n_base}, current_extra={"n": n_now, "value": k_now / n_now},
        first_seen=first_seen,
    )  # fmt: skip
    title = f"{_slice_title(key)}: more {label}, {_pct(k_base / n_base)} -> {_pct(k_now / n_now)} of calls"
    return _candidate(key, metric, rise, config.share_floor, title, outcome.p_value, evidence, first_seen)


def _new_value(
    project_id: int,
    key: SliceKey,
    metric: str,
    baseline: Side,
    recent: Side,
    config: Config,
    first_seen: dict[str, datetime],
) -> Candidate | bool | None:
    column = "fingerprints" if metric == "new_fingerprint" else "response_models"
    base_counts: Counter[str] = getattr(baseline, column)
    now_counts: Counter[str] = getattr(recent, column)
    n_base, n_now = sum(base_counts.values()), sum(now_counts.values())
    if n_base < config.min_baseline or n_now < config.min_recent:
        return None  # this slice does not report the value (no fingerprints from this provider)
    new = [(calls, value) for value, calls in now_counts.items() if value not in base_counts and value != "other"]
    new = [(calls, value) for calls, value in new if calls >= config.new_value_min_calls]
    if not new:
        return True
    calls, value = max(new)
    share = calls / n_now
    if share < config.new_value_share:
        return True
    p_value = stats.new_value_pvalue(n_base, share)
    seen = first_seen_at(project_id, key, column, value, recent.start, recent.end)
    if seen is not None:
        first_seen.setdefault("moment", seen)
        first_seen["moment"] = min(first_seen["moment"], seen)
    what = NEW_VALUE_METRICS[metric]
    evidence = _evidence(
        key, baseline, recent, unit="share", label=f"share of calls answered with {what} {value}",
        test={"name": "new-value", "statistic": float(calls), "p_value": p_value},
        effect={"name": "share", "value": share, "floor": config.new_value_share},
        baseline_extra={"n": n_base, "value": 0.0, "mix": stats.shares(base_counts)},
        current_extra={"n": n_now, "value": share, "mix": stats.shares(now_counts)},
        first_seen={"moment": seen} if seen else {},
    )  # fmt: skip
    evidence["first_seen_at"] = seen.isoformat() if seen else None
    evidence["value"] = value
    since = f" since {seen:%a %H:%M} UTC" if seen else ""
    title = f"{_slice_title(key)}: new {what} {value}{since} ({_pct(share)} of calls)"
    severity = Finding.Severity.CRITICAL if share > 0.5 else Finding.Severity.WARNING
    return Candidate(KIND, metric, slice_of(key), severity, title, p_value, evidence, seen)


def first_seen_at(
    project_id: int, key: SliceKey, column: str, value: str, start: datetime, end: datetime
) -> datetime | None:
    """When `value` first answered in the slice: its first hour from the hour rows (a key
    look-up in the JSON counts), then its first span of the slice's provider and model in that
    hour (one hour of one day partition; the feature is the trace's, so not filtered here)."""
    grouping = key[0]
    condition, condition_params = _slice_condition(key)
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT min(h.bucket) FROM rollups_rolluphour AS h WHERE h.project_id = %s AND h.grouping = %s"
            f" AND h.bucket >= %s AND h.bucket < %s AND h.{column} ? %s{condition}",
            [project_id, grouping, start, end, value, *condition_params],
        )
        hour = cur.fetchone()[0]
        if hour is None:
            return None
        span_column = "system_fingerprint" if column == "fingerprints" else "response_model"
        dims = slice_of(key)
        cur.execute(
            f"SELECT min(s.start_time) FROM telemetry_span AS s WHERE s.project_id = %s AND s.start_time >= %s"
            f" AND s.start_time < %s AND s.is_llm AND s.{span_column} = %s AND coalesce(s.provider, '') = %s"
            " AND coalesce(nullif(s.request_model, ''), nullif(s.response_model, ''), '') = %s",
            [project_id, hour, hour + timedelta(hours=1), value, dims["provider"], dims["model"]],
        )
        moment = cur.fetchone()[0]
    return (moment or hour).astimezone(UTC)


# --------------------------------------------------------------------------- when it began


@dataclass
class Hour:
    """One hour of one slice: what the hourly series of any drift metric needs."""

    bucket: datetime
    side: Side
    dist_hours: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def read_hours(project_id: int, key: SliceKey, start: datetime, end: datetime) -> list[Hour]:
    """The slice's hour rows from `start` to `end` (one rollup_hour_read range of one
    grouping; a slice is one row an hour), for the series and onset of its findings."""
    grouping, values = key
    dims = SLICE_GROUPINGS[grouping]
    condition = "".join(f" AND coalesce(h.{dim}, '') = %s" for dim in dims)
    dists = sorted({spec[0] for spec in CONTINUOUS.values()})
    columns = ", ".join(f"h.{dist}_idx, h.{dist}_cnt" for dist in dists)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT h.bucket, h.requests, h.errors, h.empty_answers, h.refused_answers, h.validated_outputs,"
            f" h.invalid_outputs, h.errors_by_type, h.finish_reasons, {columns} FROM rollups_rolluphour AS h"
            f" WHERE h.project_id = %s AND h.grouping = %s AND h.bucket >= %s AND h.bucket < %s{condition}"
            " ORDER BY h.bucket",
            [project_id, grouping, start, end, *values],
        )
        rows = cur.fetchall()
    hours: list[Hour] = []
    for row in rows:
        bucket = row[0].astimezone(UTC)
        side = Side(bucket, bucket + timedelta(hours=1))
        side.calls, side.errors, side.empty, side.refused, side.validated, side.invalid = (
            int(v or 0) for v in row[1:7]
        )
        side.errors_by_type.update({k: int(v) for k, v in _as_dict(row[7] or {}).items()})
        side.finish_reasons.update({k: int(v) for k, v in _as_dict(row[8] or {}).items()})
        for number, dist in enumerate(dists):
            indexes, counts = row[9 + 2 * number], row[10 + 2 * number]
            if indexes:
                side.dists[dist] = (np.asarray(indexes, np.int64), np.asarray(counts, np.int64))
        hours.append(Hour(bucket, side))
    return hours


def _hourly_rate(metric: str, side: Side, category: str | None) -> tuple[int, int]:
    """(events, calls) of a rate or a mix's moved category in one side."""
    if metric == "finish_reason_mix":
        return side.finish_reasons.get(category or "", 0), sum(side.finish_reasons.values())
    if metric == "error_type_mix":
        return side.errors_by_type.get(category or "", 0), sum(side.errors_by_type.values())
    if metric == "invalid_outputs":
        return side.invalid, side.validated
    return (side.empty if metric == "empty_answers" else side.refused), side.calls


def add_series(candidate: Candidate, hours: list[Hour], baseline: Side) -> None:
    """The metric's hourly value over baseline + current (evidence `series`: the median for a
    distribution, the share for a rate or a mix's moved category), and, unless a new value
    dated it, where its current level began (changepoint scans against the baseline): the
    finding's started_at and the evidence's change point, for the charts to mark."""
    evidence = candidate.evidence
    metric = candidate.metric
    began: int | None
    if metric in CONTINUOUS:
        dist = CONTINUOUS[metric][0]
        base_indexes, base_counts = baseline.dist(dist)
        if not int(base_counts.sum()):
            return
        base_logs = np.log1p(bucket_values(np.asarray(base_indexes)))
        base_mean = float(np.average(base_logs, weights=base_counts))
        base_sd = float(np.sqrt(np.average((base_logs - base_mean) ** 2, weights=base_counts)))
        series = [[hour.bucket.isoformat(), stats.median(*hour.side.dist(dist))] for hour in hours]
        means = [stats.mean_log(*hour.side.dist(dist)) for hour in hours]
        counts = [hour.side.samples(dist) for hour in hours]
        direction = 1 if (evidence["current"]["value"] or 0) >= (evidence["baseline"]["value"] or 0) else -1
        began = changepoint.mean_onset(means, counts, base_mean, base_sd, direction=direction)
        method = "scan-normal"
    else:
        category = evidence.get("category")
        events, calls = (
            zip(*(_hourly_rate(metric, hour.side, category) for hour in hours), strict=True) if hours else ((), ())
        )
        base_events, base_calls = _hourly_rate(metric, baseline, category)
        if not base_calls:
            return
        series = [
            [hour.bucket.isoformat(), round(k / n, 6) if n else None]
            for hour, k, n in zip(hours, events, calls, strict=True)
        ]
        direction = 1 if evidence["current"]["value"] >= evidence["baseline"]["value"] else -1
        began = changepoint.rate_onset(events, calls, base_events / base_calls, direction=direction)
        method = "scan-binomial"
    evidence["series"] = series
    # A new fingerprint or model seen this run already dates the change (to the span).
    if began is not None and candidate.started_at is None:
        candidate.started_at = hours[began].bucket
        evidence["change_point"] = hours[began].bucket.isoformat()
        evidence["change_method"] = method


# --------------------------------------------------------------------------- evidence


def _candidate(
    key: SliceKey,
    metric: str,
    effect: float,
    floor: float,
    title: str,
    p_value: float,
    evidence: dict[str, Any],
    first_seen: dict[str, datetime],
) -> Candidate:
    severity = Finding.Severity.CRITICAL if effect >= 2 * floor else Finding.Severity.WARNING
    return Candidate(KIND, metric, slice_of(key), severity, title, p_value, evidence, first_seen.get("moment"))


def _evidence(
    key: SliceKey,
    baseline: Side,
    recent: Side,
    *,
    unit: str,
    label: str,
    test: dict[str, Any],
    effect: dict[str, Any],
    baseline_extra: dict[str, Any],
    current_extra: dict[str, Any],
    first_seen: dict[str, datetime],
    category: str | None = None,
) -> dict[str, Any]:
    moment = first_seen.get("moment")
    return {
        **({"category": category} if category is not None else {}),
        "unit": unit,
        "label": label,
        "test": {k: _finite(v) for k, v in test.items()},
        "effect": {k: _finite(v) for k, v in effect.items()},
        "baseline": {"start": baseline.start.isoformat(), "end": baseline.end.isoformat(), **baseline_extra},
        "current": {"start": recent.start.isoformat(), "end": recent.end.isoformat(), **current_extra},
        "first_seen_at": None,
        # A new fingerprint or model in the slice this run is the likeliest cause of its drift.
        "change_point": moment.isoformat() if moment else None,
        "change_method": "first-seen" if moment else None,
        "link": link(key),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def link(key: SliceKey) -> str:
    """The dashboard view of the slice over the last 7 days."""
    dims = slice_of(key)
    if dims.get("feature"):
        query = urlencode({"provider": dims["provider"], "model": dims["model"], "range": "7d"})
        return f"/features/{quote(dims['feature'], safe='')}/?{query}"
    if dims["provider"]:
        return f"/models/{quote(dims['provider'], safe='')}/{quote(dims['model'], safe='')}/?range=7d"
    return "/?" + urlencode({"model": dims["model"], "range": "7d"})


def _slice_title(key: SliceKey) -> str:
    dims = slice_of(key)
    model = f"{dims['provider']} {dims['model']}".strip()
    return f"{dims['feature'] or '(no feature)'} · {model}" if "feature" in dims else model


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.01 or share == 0 else f"{100 * share:.1f}%"
