"""The compare page: two models, features, tenants or providers, or two time ranges, side by side.

    /compare/?kind=model&a=openai/gpt-4o&b=anthropic/claude-sonnet-4-5&range=7d
    /compare/?kind=feature&a=summarize&b=support-chat&provider=openai
    /compare/?kind=range&a_start=2026-11-01&a_end=2026-11-08&b_start=2026-11-08&b_end=2026-11-15

Each side is one Query of the metrics layer with the viewer's Scope: the page's filters
(and, for a dimension kind, the page's time range) applied to both, the side's own value
replacing any filter on the compared dimension. A model is named `provider/model` (the
provider is what tells `openai/gpt-4o` from the same name served elsewhere); a name with
no known provider prefix is the model under any provider. Without `a`/`b` the two values
with the most calls in range are compared; without `a_start`, `a_end`, `b_start`, `b_end` a
time-range comparison is the period before the page's range (A) against the range (B). The
page links its resolved choice, so what is on screen can always be shared. B - A is the
difference throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import numpy as np
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.access import scope_for
from apps.dashboard import charts
from apps.dashboard.charts import Chart
from apps.dashboard.page_reads import current as current_reads
from apps.dashboard.page_reads import page_reads
from apps.dashboard.page_reads import query as page_query
from apps.dashboard.panels import change
from apps.dashboard.params import (
    MAX_RANGE,
    BadParameter,
    ViewParams,
    filter_bar_context,
    page_now,
    parse_moment_param,
    parse_params,
)
from apps.dashboard.templatetags.humanize_cost import ms, percent, usd
from apps.dashboard.views import bad_request, checked_page, empty_state_context, table_csv
from apps.metrics.distributions import merged_distributions
from apps.metrics.query import FILTER_FIELDS, Filters, Query, Scope
from apps.rollups.sketch import LOG_GAMMA

# kind -> (what one side is, plural for the picker). Every kind but "range" is a dimension.
KINDS: dict[str, tuple[str, str]] = {
    "model": ("model", "Models"),
    "feature": ("feature", "Features"),
    "tenant": ("tenant", "Tenants"),
    "provider": ("provider", "Providers"),
    "range": ("time range", "Time ranges"),
}
DEFAULT_KIND = "model"
RANGE_PARAMS = ("a_start", "a_end", "b_start", "b_end")
MAX_VALUE_LENGTH = 300
# Histogram bins across both sides: enough to show a shape, few enough that each bin holds
# several of the sketch's 1%-wide buckets (a finer grid would draw the buckets' comb).
MAX_BINS = 48
HISTOGRAMS = ("e2e_ms", "ttft_ms")


@dataclass(frozen=True)
class Figure:
    """One line of the figures table: a metric of the query layer and how to read it."""

    metric: str
    label: str
    unit: str  # "calls", "tasks", "USD", "ratio", "ms", "tokens/s"
    better: str | None = None  # "lower", "higher", None = neither (volumes)
    samples: str | None = None  # the row key holding the sample count of a percentile


def _percentile(dist: str, n: str, label: str) -> Figure:
    return Figure(f"{dist}_p{n}", f"{label} p{n}", "ms", "lower", f"{dist}_p{n}_samples")


FIGURES: tuple[Figure, ...] = (
    Figure("requests", "Requests", "calls"),
    Figure("errors", "Failed calls", "calls"),
    Figure("error_rate", "Error rate", "ratio", "lower"),
    Figure("cost_usd", "Cost", "USD"),
    Figure("cost_per_1k_requests", "Cost per 1,000 requests", "USD", "lower"),
    Figure("cost_per_successful_task", "Cost per successful task", "USD", "lower"),
    Figure("successful_tasks", "Successful tasks", "tasks"),
    Figure("cost_unknown_requests", "Calls with unknown cost", "calls"),
    *(_percentile("e2e_ms", n, "Latency") for n in ("50", "95", "99")),
    *(_percentile("ttft_ms", n, "TTFT") for n in ("50", "95", "99")),
    Figure("tokens_per_second", "Output tokens per second", "tokens/s", "higher"),
)
METRICS = tuple(figure.metric for figure in FIGURES)


@dataclass(frozen=True)
class Side:
    name: str  # "A" or "B"
    label: str  # what the page calls it: "openai/gpt-4o", "2026-11-01 00:00 to 2026-11-08 00:00 UTC"
    value: str  # the URL's `a`/`b` ("" for a time range)
    start: datetime
    end: datetime
    filters: Filters

    @property
    def title(self) -> str:
        return f"{self.name}: {self.label}"


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    requests: int
    # kind=model: the (provider, model) the value names; "" where not known.
    provider: str = ""
    model: str = ""


@dataclass(frozen=True)
class Choice:
    """What the URL asks to compare, resolved; `a`/`b` are None when there is nothing to pick."""

    kind: str
    params: ViewParams
    options: list[Option]
    a: Side | None
    b: Side | None
    explicit_ranges: bool = False

    @property
    def ready(self) -> bool:
        return self.a is not None and self.b is not None

    def querystring(self) -> str:
        """The shareable URL parameters of this comparison, defaults written out."""
        extra: dict[str, str | None] = {"kind": self.kind}
        if self.kind == "range" and self.a and self.b and self.explicit_ranges:
            extra.update(
                range=None,
                a_start=self.a.start.isoformat(),
                a_end=self.a.end.isoformat(),
                b_start=self.b.start.isoformat(),
                b_end=self.b.end.isoformat(),
            )
        elif self.a and self.b and self.kind != "range":
            extra.update(a=self.a.value, b=self.b.value)
        return self.params.querystring(**extra)


def parse_choice(query: QueryDict, scope: Scope, now: datetime | None = None) -> Choice:
    kind = query.get("kind") or DEFAULT_KIND
    if kind not in KINDS:
        raise BadParameter(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    params = parse_params(query, now)
    if kind == "range":
        if query.get("a") or query.get("b"):
            raise BadParameter(
                "a and b name two values of a dimension; a time-range comparison takes a_start, a_end, b_start, b_end"
            )
        return _range_choice(query, params)
    if any(query.get(name) for name in RANGE_PARAMS):
        raise BadParameter(f"a_start, a_end, b_start and b_end only apply with kind=range, not kind={kind}")
    # The compared dimension is the sides' to set: a filter on it would fight them.
    params = replace(params, filters={dim: values for dim, values in params.filters.items() if dim != kind})
    raw_a, raw_b = (query.get(name, "").strip() for name in ("a", "b"))
    for name, raw in (("a", raw_a), ("b", raw_b)):
        if len(raw) > MAX_VALUE_LENGTH:
            raise BadParameter(f"{name} is longer than {MAX_VALUE_LENGTH} characters")
    if raw_a and raw_a == raw_b:
        raise BadParameter(f"a and b are the same {KINDS[kind][0]} ({raw_a}): choose two different ones")
    options = _options(kind, params, scope)
    by_traffic = sorted(options, key=lambda option: (-option.requests, option.value))
    if not raw_a:
        raw_a = next((option.value for option in by_traffic if option.value != raw_b), "")
    if not raw_b:
        raw_b = next((option.value for option in by_traffic if option.value != raw_a), "")
    known = {option.value for option in options}
    for raw in (raw_a, raw_b):
        if raw and raw not in known:
            # A shared link outliving its data, or a value outside the viewer's scope: shown
            # as chosen, with the figures the scope allows (none).
            options.append(Option(raw, f"{raw} (no calls in range)", 0))
    if not (raw_a and raw_b):
        return Choice(kind, params, options, None, None)
    sides = [_dimension_side(name, kind, raw, params, options) for name, raw in (("A", raw_a), ("B", raw_b))]
    return Choice(kind, params, options, sides[0], sides[1])


def _range_choice(query: QueryDict, params: ViewParams) -> Choice:
    given = [name for name in RANGE_PARAMS if query.get(name)]
    if not given:
        previous_start, previous_end = params.previous
        previous = f"the {params.preset} before" if params.preset else "the period before, of the same length"
        # The earlier period is A, so B - A reads as the change over time.
        a = Side("A", previous, "", previous_start, previous_end, params.query_filters())
        b = Side("B", params.describe_range(), "", params.start, params.end, params.query_filters())
        return Choice("range", params, [], a, b)
    if len(given) < len(RANGE_PARAMS):
        missing = ", ".join(name for name in RANGE_PARAMS if name not in given)
        raise BadParameter(f"a time-range comparison needs a_start, a_end, b_start and b_end (missing {missing})")
    moments = {name: parse_moment_param(name, query.get(name, "")) for name in RANGE_PARAMS}
    sides = []
    for name in ("a", "b"):
        start, end = moments[f"{name}_start"], moments[f"{name}_end"]
        if end <= start:
            raise BadParameter(f"{name}_end must be after {name}_start")
        if end - start > MAX_RANGE:
            raise BadParameter(f"a range can be at most {MAX_RANGE.days} days ({name} is longer)")
        label = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
        sides.append(Side(name.upper(), label, "", start, end, params.query_filters()))
    if (sides[0].start, sides[0].end) == (sides[1].start, sides[1].end):
        raise BadParameter("a and b are the same time range: choose two different ones")
    return Choice("range", params, [], sides[0], sides[1], explicit_ranges=True)


def _options(kind: str, params: ViewParams, scope: Scope) -> list[Option]:
    """The values seen in range within the scope and filters, as dimension_values reads them,
    with their calls (the default sides are the two busiest). Models come as provider/model."""
    group_by = ("provider", "model") if kind == "model" else (kind,)
    query = Query(("requests",), params.start, params.end, params.query_filters(), group_by=group_by)
    options: dict[str, Option] = {}
    for row in page_query(query, scope).rows:
        value = _model_value(row["provider"], row["model"]) if kind == "model" else row[kind]
        if not value or not row["requests"]:
            continue  # the unattributed "" cannot travel in a URL as a choice
        requests = row["requests"] + (options[value].requests if value in options else 0)
        provider, model = (row["provider"] or "", row["model"]) if kind == "model" else ("", "")
        options[value] = Option(value, f"{value} ({requests:,} calls)", requests, provider, model)
    return sorted(options.values(), key=lambda option: option.value)


def _model_value(provider: str | None, model: str | None) -> str:
    if not model:
        return ""
    return f"{provider}/{model}" if provider else model


def _dimension_side(name: str, kind: str, raw: str, params: ViewParams, options: list[Option]) -> Side:
    base = params.query_filters()
    if kind != "model":
        filters = replace(base, **{FILTER_FIELDS[kind]: (raw,)})  # type: ignore[arg-type]
        return Side(name, raw, raw, params.start, params.end, filters)
    provider, model = _split_model(raw, options)
    filters = replace(base, models=(model,), providers=(provider,) if provider else base.providers)
    return Side(name, raw, raw, params.start, params.end, filters)


def _split_model(raw: str, options: list[Option]) -> tuple[str, str]:
    """`provider/model` -> (provider, model); a bare model name -> ("", model).

    Model names may hold a slash themselves (meta-llama/Llama-3.1-8B behind vLLM), so a value
    seen in range is resolved to the pair it was made from; any other splits at the first
    slash only when what comes before is a provider seen in range or a known one."""
    for option in options:
        if option.value == raw and option.model:
            return option.provider, option.model
    prefix, slash, rest = raw.partition("/")
    if slash and (prefix in {option.provider for option in options} or prefix in _KNOWN_PROVIDERS):
        return prefix, rest
    return "", raw


def _known_providers() -> frozenset[str]:
    from apps.pricing.providers import ANTHROPIC, GEMINI, MISTRAL, OPENAI, PROVIDER_ALIASES, SELF_HOSTED_PROVIDERS

    return frozenset({OPENAI, ANTHROPIC, GEMINI, MISTRAL, *PROVIDER_ALIASES.values(), *SELF_HOSTED_PROVIDERS})


_KNOWN_PROVIDERS = _known_providers()


# Figures -------------------------------------------------------------------------------


def side_figures(side: Side, scope: Scope) -> dict[str, Any]:
    rows = page_query(Query(METRICS, side.start, side.end, side.filters), scope).rows
    return rows[0] if rows else {}


def figure_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The table: each figure for A and B, B - A, B relative to A, and which side it favours."""
    rows = []
    for figure in FIGURES:
        value_a, value_b = a.get(figure.metric), b.get(figure.metric)
        difference = None if value_a is None or value_b is None else value_b - value_a
        verdict = ""
        if figure.better and difference:
            verdict = "better" if (difference < 0) == (figure.better == "lower") else "worse"
        rows.append(
            {
                "metric": figure.metric,
                "label": figure.label,
                "unit": figure.unit,
                "a": value_a,
                "b": value_b,
                "a_text": _format(value_a, figure.unit),
                "b_text": _format(value_b, figure.unit),
                "a_samples": a.get(figure.samples) if figure.samples else None,
                "b_samples": b.get(figure.samples) if figure.samples else None,
                "difference": difference,
                "difference_text": _format(difference, figure.unit, signed=True),
                "relative": change(value_b, value_a),
                "verdict": verdict,
            }
        )
    return rows


def _format(value: Any, unit: str, *, signed: bool = False) -> str:
    if value is None:
        # Money is None only when no call of the side is priced: unknown, not "no value".
        return "unknown" if unit == "USD" else "n/a"
    sign = "+" if signed and value > 0 else "-" if signed and value < 0 else ""
    magnitude = abs(value) if signed else value
    if unit == "USD":
        text = _usd(magnitude)
    elif unit == "ratio":
        text = f"{magnitude * 100:.1f} pp" if signed else percent(magnitude)
    elif unit == "ms":
        text = ms(magnitude)
    elif unit == "tokens/s":
        text = f"{magnitude:,.1f}"
    else:
        text = f"{magnitude:,}"
    return sign + text


def _usd(value: Any) -> str:
    """Dollars with three significant digits below $1: per-call and per-task figures are
    fractions of a cent, and two sides rounded to $0.0003 and $0.0004 compare badly."""
    amount = float(value)
    if amount == 0 or abs(amount) >= 1:
        return usd(value)
    digits = min(10, max(4, 2 - math.floor(math.log10(abs(amount)))))
    return f"${amount:.{digits}f}"


CSV_COLUMNS_BASE = (("label", "Figure"), ("unit", "Unit"))


def csv_columns(a: Side, b: Side) -> tuple[tuple[str, str], ...]:
    return (
        *CSV_COLUMNS_BASE,
        ("a", a.title),
        ("b", b.title),
        ("difference", "Difference (B - A)"),
        ("relative", "Relative change (B / A - 1)"),
        ("a_samples", "A samples"),
        ("b_samples", "B samples"),
    )


# Charts --------------------------------------------------------------------------------


def _range_text(choice: Choice) -> str:
    assert choice.a and choice.b
    if choice.kind == "range":
        return f"A: {choice.a.label}; B: {choice.b.label}"
    return choice.params.describe_range().capitalize()


def distributions(choice: Choice, scope: Scope) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """dist -> side title -> the side's merged (bucket values, counts): one read per side."""
    assert choice.a and choice.b
    found: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {dist: {} for dist in HISTOGRAMS}
    for side in (choice.a, choice.b):
        for dist, pair in merged_distributions(
            HISTOGRAMS, side.start, side.end, side.filters, scope, shared=current_reads()
        ).items():
            found[dist][side.title] = pair
    return found


def distribution_chart(
    choice: Choice, series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, what: str
) -> Chart:
    assert choice.a and choice.b
    counts = {label: int(counts.sum()) for label, (_, counts) in series.items()}
    return Chart(
        title=title,
        what=f"{what}, as a share of each side's calls (A: {counts[choice.a.title]:,}, B: {counts[choice.b.title]:,}), "
        "from merged distributions.",
        unit="ms, log scale",
        range_text=_range_text(choice),
        samples=sum(counts.values()),
        html=charts.distribution(common_bins(series), unit="ms") if any(counts.values()) else None,
    )


def common_bins(
    series: dict[str, tuple[np.ndarray, np.ndarray]], max_bins: int = MAX_BINS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Re-bin (bucket value, count) pairs onto one log-spaced grid shared by every series, so
    two overlaid histograms compare bin by bin. Zero values join the lowest bin."""
    arrays = {
        label: (np.asarray(values, dtype=float), np.asarray(counts)) for label, (values, counts) in series.items()
    }
    positive = [values[(values > 0) & (counts > 0)] for values, counts in arrays.values()]
    positive = [values for values in positive if values.size]
    if not positive:
        return arrays
    # A margin of ~10% each side, so a narrow distribution (every call near 800 ms) still
    # draws as a peak inside the frame rather than a line on its edge.
    margin = math.exp(10 * LOG_GAMMA)
    low = min(float(values.min()) for values in positive) / margin
    high = max(float(values.max()) for values in positive) * margin
    bins = max(1, min(max_bins, math.ceil(math.log(high / low) / (2 * LOG_GAMMA))))
    edges = np.geomspace(low, high, bins + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    binned = {}
    for label, (values, counts) in arrays.items():
        if not values.size:
            binned[label] = (centres, np.zeros(centres.size, dtype=np.int64))
            continue
        histogram, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges, weights=counts)
        binned[label] = (centres, histogram.astype(np.int64))
    return binned


def ttft_percentiles_chart(choice: Choice, a: dict[str, Any], b: dict[str, Any]) -> Chart:
    assert choice.a and choice.b
    rows = [
        {"time": f"p{n}", "a": a.get(f"ttft_ms_p{n}"), "b": b.get(f"ttft_ms_p{n}")}  # "time" is the x the builder reads
        for n in ("50", "95", "99")
    ]
    samples_a, samples_b = a.get("ttft_ms_p50_samples") or 0, b.get("ttft_ms_p50_samples") or 0
    return Chart(
        title="Time to first token percentiles",
        what=f"p50, p95 and p99 of TTFT for A ({samples_a:,} calls reporting it) and B ({samples_b:,}).",
        unit="ms",
        range_text=_range_text(choice),
        samples=samples_a + samples_b,
        html=charts.time_series(rows, {choice.a.title: "a", choice.b.title: "b"}, unit="ms", kind="bar")
        if samples_a or samples_b
        else None,
    )


# The view ------------------------------------------------------------------------------


@require_GET
@login_required
@checked_page
@page_reads
def compare(request: HttpRequest) -> HttpResponse:
    scope = scope_for(request.user)
    try:
        choice = parse_choice(request.GET, scope, page_now())
    except BadParameter as exc:
        return bad_request(request, exc.message, "dashboard/compare.html", {"kinds": _kind_links(None)})
    context: dict[str, Any] = {
        **_filter_bar(choice),
        **empty_state_context(request),
        "choice": choice,
        "kind_label": KINDS[choice.kind][0],
        "kinds": _kind_links(choice),
    }
    if not choice.ready:
        seen = [option.value for option in choice.options if option.requests]
        context["only_one"] = seen[0] if len(seen) == 1 else None
        return render(request, "dashboard/compare.html", context)
    assert choice.a and choice.b
    a, b = side_figures(choice.a, scope), side_figures(choice.b, scope)
    rows = figure_rows(a, b)
    if request.GET.get("format") == "csv":
        return table_csv(
            rows, csv_columns(choice.a, choice.b), f"observatory compare {choice.a.label} {choice.b.label}"
        )
    has_data = bool(a.get("requests") or b.get("requests"))
    context.update(
        rows=rows,
        has_data=has_data,
        side_a=choice.a,
        side_b=choice.b,
        share_qs=choice.querystring(),
        swap_qs=_swapped(choice),
        csv_qs=f"{choice.querystring()}&format=csv",
    )
    if has_data:
        found = distributions(choice, scope)
        context["charts"] = [
            distribution_chart(choice, found["e2e_ms"], "End-to-end latency distribution", "Calls per latency bin"),
            distribution_chart(choice, found["ttft_ms"], "Time to first token distribution",
                               "Calls per TTFT bin, of the calls that report a TTFT"),
            ttft_percentiles_chart(choice, a, b),
        ]  # fmt: skip
    return render(request, "dashboard/compare.html", context)


def _filter_bar(choice: Choice) -> dict[str, Any]:
    """The filter bar of every page, its links carrying the comparison along.

    A preset range link restarts a time-range comparison from "this range vs the one before"."""
    bar = filter_bar_context(choice.params)
    sides = _sides_pairs(choice)
    for link in bar["range_links"]:  # type: ignore[attr-defined]
        link["qs"] += "&" + urlencode(sides if choice.kind != "range" else [("kind", "range")])
    for chip in bar["filter_chips"]:  # type: ignore[attr-defined]
        chip["remove_qs"] += "&" + urlencode(sides)
    return bar


def _sides_pairs(choice: Choice) -> list[tuple[str, str]]:
    pairs = [("kind", choice.kind)]
    if choice.kind == "range" and choice.explicit_ranges and choice.a and choice.b:
        for side, name in ((choice.a, "a"), (choice.b, "b")):
            pairs += [(f"{name}_start", side.start.isoformat()), (f"{name}_end", side.end.isoformat())]
    elif choice.kind != "range" and choice.a and choice.b:
        pairs += [("a", choice.a.value), ("b", choice.b.value)]
    return pairs


def _swapped(choice: Choice) -> str:
    assert choice.a and choice.b
    if choice.kind == "range":
        if not choice.explicit_ranges:
            return ""
        return replace(choice, a=replace(choice.b, name="A"), b=replace(choice.a, name="B")).querystring()
    return choice.params.querystring(kind=choice.kind, a=choice.b.value, b=choice.a.value)


def _kind_links(choice: Choice | None) -> list[dict[str, Any]]:
    params = choice.params if choice else None
    links = []
    for kind, (_, plural) in KINDS.items():
        qs = params.querystring(kind=kind) if params else f"kind={kind}"
        links.append({"label": plural, "qs": qs, "active": choice is not None and choice.kind == kind})
    return links
