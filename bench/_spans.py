"""Realistic span data for the benchmarks, written straight into telemetry_span with COPY.

    from bench._spans import load_spans
    loaded = load_spans(conn, 2_000_000, days=30, seed=7)

`load_spans(conn, n, days=30, seed=0, *, project_ids=(1,), start=DEFAULT_START) -> LoadedSpans`

- `conn`: an open psycopg 3 connection to a migrated database (the price catalog loaded, as
  `migrate` does); the spans are committed when it returns. With Django set up, pass
  `django.db.connection.connection` after `connection.ensure_connection()`.
- `n`: spans to write, about: n / SPANS_PER_TRACE whole traces, within a percent or so of
  n (LoadedSpans.spans says how many exactly). `days`: they start in [start, start + days),
  uniformly, in time order like ingest writes them. `seed`: the same seed gives the same
  spans. `project_ids`: traces are dealt round-robin to these projects (the rows must exist
  for the pages, not for the SQL).
- Creates the day partitions it needs (the same names as apps.telemetry.partitions), and
  ANALYZEs the table at the end.
- Returns LoadedSpans(spans, traces, start, end).

The traces look like instrumented applications talking to hosted APIs and to a self-hosted
vLLM tier: a server root span carrying tenant and feature (some without a feature, so the
service.name fallback is used; a few without a tenant), a database span, sometimes a
semantic-cache lookup (a hit ends the trace), then one or two LLM client calls; a failed call
is usually retried (retry_attempt 1). About 15% of calls go to vLLM through the OpenAI SDK:
their client span has a vLLM `llm_request` server span beneath it (queue time, TTFT), and a
few vLLM server spans arrive with no instrumented client at all (their own trace, no tenant).
Some Anthropic calls are seen twice (the SDK's own span nested in OpenLLMetry's). A few
traces carry observatory.task.id, shared by two traces (an agent's two steps). Latencies are
lognormal per model; tokens lognormal; priced calls carry the price row and cost ingest would
have given them (cost computed from the catalog's rates), vLLM calls have no cost.
"""

from __future__ import annotations

import heapq
import io
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg import sql

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

TENANTS = [f"tenant-{i:02d}" for i in range(12)]
TENANT_WEIGHTS = [1 / (i + 1) for i in range(len(TENANTS))]  # a few big tenants, a long tail
# feature -> the service that serves it (the service.name fallback when a root has no feature)
FEATURES = {
    "support-chat": "support-api",
    "summarize": "docs-api",
    "search-rerank": "search-api",
    "code-review": "dev-api",
    "translate": "docs-api",
    "agent": "agent-worker",
}
# (provider, request model, response model, median e2e ms, weight)
HOSTED_MODELS = [
    ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 700.0, 30),
    ("openai", "gpt-4.1", "gpt-4.1-2025-04-14", 1400.0, 10),
    ("openai", "o4-mini", "o4-mini-2025-04-16", 3000.0, 5),
    ("anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 1800.0, 15),
    ("anthropic", "claude-haiku-4-5", "claude-haiku-4-5-20251001", 600.0, 10),
    ("gcp.gemini", "gemini-2.5-flash", "gemini-2.5-flash", 900.0, 10),
    ("mistral_ai", "mistral-small-latest", "mistral-small-2506", 800.0, 5),
]
VLLM_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
VLLM_SHARE = 0.15
ERROR_TYPES = ["429", "timeout", "APIConnectionError", "500"]

COLUMNS = (
    "project_id", "trace_id", "span_id", "parent_span_id", "start_time", "end_time", "duration_ms", "name",
    "kind", "status_code", "service_name", "is_llm", "provider", "operation", "request_model", "response_model",
    "input_tokens", "cache_read_tokens", "output_tokens", "reasoning_tokens", "ttft_ms", "queue_ms",
    "error_type", "is_streaming", "tenant", "feature", "task_id", "retry_attempt", "semantic_cache_hit",
    "cost_usd", "price_id",
)  # fmt: skip
SERVER, CLIENT, INTERNAL = 2, 3, 1
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
NULL = "\\N"
# Spans in a trace, on average, with the shares below (measured over a million traces).
SPANS_PER_TRACE = 3.62


@dataclass(frozen=True)
class LoadedSpans:
    spans: int
    traces: int
    start: datetime
    end: datetime


@dataclass(frozen=True)
class _Rate:
    price_id: int
    input: Decimal
    cached: Decimal
    output: Decimal


def _rates(conn: Any) -> dict[tuple[str, str], _Rate]:
    """The catalog row in force now for each hosted model (matched like the price book)."""
    rates = {}
    for provider, _, response_model, _, _ in HOSTED_MODELS:
        row = conn.execute(
            "SELECT id, input_per_mtok, coalesce(cached_input_per_mtok, input_per_mtok), output_per_mtok "
            "FROM pricing_price WHERE provider = %s AND %s ~* ('^(?:' || model_pattern || ')$') "
            "AND effective_to IS NULL ORDER BY effective_from DESC LIMIT 1",
            [provider, response_model],
        ).fetchone()
        if row:
            rates[(provider, response_model)] = _Rate(row[0], row[1], row[2], row[3])
    return rates


def _ensure_partitions(conn: Any, start: datetime, days: int) -> None:
    from apps.telemetry.partitions import PARENT, partition_name

    for offset in range(days + 1):
        day_start = start + timedelta(days=offset)
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(partition_name(day_start.date())),
                sql.Identifier(PARENT),
                sql.Literal(day_start),
                sql.Literal(day_start + timedelta(days=1)),
            )
        )


def _ts(micros: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(microseconds=micros)).isoformat(sep=" ") + "+00"


def _text(value: Any) -> str:
    if value is None:
        return NULL
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


class _Writer:
    """Formats spans as COPY text lines into a buffer."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.count = 0

    def span(self, project_id: int, trace_id: str, span_id: int, parent: int | None, start_us: int,
             duration_us: int, name: str, kind: int, status: int, service: str, **fields: Any) -> None:  # fmt: skip
        row = [
            str(project_id), trace_id, str(span_id), _text(parent), _ts(start_us), _ts(start_us + duration_us),
            repr(duration_us / 1000), name, str(kind), str(status), service,
            "t" if fields.get("is_llm") else "f",
        ]  # fmt: skip
        row.extend(_text(fields.get(column)) for column in COLUMNS[12:])
        self.buffer.write("\t".join(row))
        self.buffer.write("\n")
        self.count += 1


def load_spans(
    conn: Any,
    n: int,
    days: int = 30,
    seed: int = 0,
    *,
    project_ids: tuple[int, ...] = (1,),
    start: datetime = DEFAULT_START,
) -> LoadedSpans:
    """Write about `n` spans over `days` days from `start` with COPY; see the module docstring."""
    rng = random.Random(seed)
    rates = _rates(conn)
    _ensure_partitions(conn, start, days)
    conn.commit()
    start_us = int((start - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
    span_us = days * 86_400 * 1_000_000
    # Trace start times drawn up front, sorted: as many traces as make about n spans.
    trace_count = max(1, round(n / SPANS_PER_TRACE))
    starts = sorted(start_us + int(rng.random() * (span_us - 120_000_000)) for _ in range(trace_count))
    writer = _Writer()
    traces = 0
    pending_tasks: list[tuple[int, str, str | None, str]] = []  # heap of (due microseconds, task id, tenant, feature)
    next_id = rng.getrandbits(62)

    def new_span_id() -> int:
        nonlocal next_id
        next_id += 1
        return next_id

    def flush(force: bool = False) -> None:
        if writer.buffer.tell() < 8_000_000 and not force:
            return
        with conn.cursor() as cur, cur.copy(f"COPY telemetry_span ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            copy.write(writer.buffer.getvalue())
        writer.buffer = io.StringIO()

    for index, t0 in enumerate(starts):
        project_id = project_ids[index % len(project_ids)]
        traces += 1
        trace_id = str(uuid.UUID(int=rng.getrandbits(128)))

        if rng.random() < 0.01:
            # An uninstrumented client calling vLLM: the server span is the whole trace.
            _vllm_server_span(writer, rng, project_id, trace_id, new_span_id(), None, t0, rng.lognormvariate(6.5, 0.6))
            continue

        task_id = None
        if pending_tasks and pending_tasks[0][0] <= t0:
            _, task_id, tenant, feature = heapq.heappop(pending_tasks)
        else:
            tenant = rng.choices(TENANTS, TENANT_WEIGHTS)[0] if rng.random() > 0.03 else None
            feature = rng.choice(list(FEATURES))
            if rng.random() < 0.03:
                task_id = f"task-{rng.getrandbits(48):x}"
                heapq.heappush(pending_tasks, (t0 + rng.randrange(2, 90) * 1_000_000, task_id, tenant, feature))
        service = FEATURES[feature]
        root_feature = feature if rng.random() > 0.1 else None  # else the service.name fallback
        root_id = new_span_id()
        cursor_us = t0 + 2_000

        # A database read.
        db_us = int(rng.lognormvariate(8.5, 0.5))
        writer.span(project_id, trace_id, new_span_id(), root_id, cursor_us, db_us, "SELECT documents", CLIENT,
                    STATUS_UNSET, service)  # fmt: skip
        cursor_us += db_us + 500

        cache_hit = None
        if rng.random() < 0.2:
            cache_hit = rng.random() < 0.35
            lookup_us = int(rng.lognormvariate(8, 0.4))
            writer.span(project_id, trace_id, new_span_id(), root_id, cursor_us, lookup_us, "semantic_cache.lookup",
                        INTERNAL, STATUS_UNSET, service, semantic_cache_hit=cache_hit)  # fmt: skip
            cursor_us += lookup_us + 300

        failed = False
        if not cache_hit:
            calls = 1 if rng.random() < 0.7 else 2
            attempt = 0
            while calls > 0:
                end_us, error = _call(writer, rng, rates, project_id, trace_id, new_span_id, root_id, cursor_us,
                                      service, attempt)  # fmt: skip
                cursor_us = end_us + 1_000
                if error and attempt < 2 and rng.random() < 0.8:
                    attempt += 1  # the SDK retries the same request
                    continue
                failed = error
                attempt = 0
                calls -= 1
        writer.span(project_id, trace_id, root_id, None, t0, cursor_us + 1_500 - t0, f"POST /v1/{feature}", SERVER,
                    STATUS_ERROR if failed else STATUS_OK, service, tenant=tenant, feature=root_feature,
                    task_id=task_id)  # fmt: skip
        flush()
    flush(force=True)
    conn.commit()
    conn.execute("ANALYZE telemetry_span")
    conn.commit()
    return LoadedSpans(writer.count, traces, start, start + timedelta(days=days))


def _vllm_server_span(writer: _Writer, rng: random.Random, project_id: int, trace_id: str, span_id: int,
                      parent: int | None, start_us: int, duration_ms: float, **extra: Any) -> None:  # fmt: skip
    queue_ms = rng.lognormvariate(2.5, 1.2)
    ttft_ms = queue_ms + duration_ms * rng.uniform(0.05, 0.2)
    writer.span(project_id, trace_id, span_id, parent, start_us, int(duration_ms * 1000), "llm_request", SERVER,
                STATUS_UNSET, "vllm-serving", is_llm=True, provider="vllm", operation="chat",
                response_model=VLLM_MODEL, queue_ms=round(queue_ms, 3), ttft_ms=round(ttft_ms, 3),
                input_tokens=extra.get("input_tokens") or int(rng.lognormvariate(6.5, 0.7)) + 1,
                output_tokens=extra.get("output_tokens") or int(rng.lognormvariate(5, 0.6)) + 1)  # fmt: skip


def _call(writer: _Writer, rng: random.Random, rates: dict[tuple[str, str], _Rate], project_id: int, trace_id: str,
          new_span_id: Any, parent: int, start_us: int, service: str, attempt: int) -> tuple[int, bool]:  # fmt: skip
    """One LLM client call (with what lies beneath it); returns its end and whether it failed."""
    span_id = new_span_id()
    error = rng.random() < 0.025
    streaming = rng.random() < 0.6
    if rng.random() < VLLM_SHARE:
        provider, request_model, response_model, median_ms = "openai", VLLM_MODEL, VLLM_MODEL, 500.0
    else:
        provider, request_model, response_model, median_ms, _ = rng.choices(
            HOSTED_MODELS, [m[4] for m in HOSTED_MODELS]
        )[0]
    duration_ms = rng.lognormvariate(math.log(median_ms), 0.6)
    if error:
        duration_ms *= rng.uniform(0.05, 0.5)
    prompt_tokens = int(rng.lognormvariate(7, 0.8)) + 1
    completion_tokens = int(rng.lognormvariate(5, 0.7)) + 1
    cache_read = int(prompt_tokens * rng.uniform(0.3, 0.9)) if rng.random() < 0.4 else 0
    reasoning = int(completion_tokens * 0.5) if request_model.startswith("o4") else None
    input_tokens: int | None = prompt_tokens
    output_tokens: int | None = completion_tokens
    ttft_ms = round(duration_ms * rng.uniform(0.1, 0.4), 3) if streaming and not error else None
    if streaming and rng.random() < 0.03:
        input_tokens = output_tokens = None  # a stream without usage
    if error:
        output_tokens = 0
    rate = rates.get((provider, response_model))
    cost = price_id = None
    if rate and input_tokens is not None and output_tokens is not None:
        price_id = rate.price_id
        cost = (
            (Decimal(input_tokens - cache_read) * rate.input + Decimal(cache_read) * rate.cached
             + Decimal(output_tokens) * rate.output) / Decimal(1_000_000)
        ).quantize(Decimal("1e-10"))  # fmt: skip
    duration_us = int(duration_ms * 1000)
    fields = {
        "is_llm": True, "provider": provider, "operation": "chat", "request_model": request_model,
        "response_model": None if error else response_model, "input_tokens": input_tokens,
        "cache_read_tokens": cache_read if input_tokens is not None else None, "output_tokens": output_tokens,
        "reasoning_tokens": reasoning, "ttft_ms": ttft_ms, "is_streaming": streaming,
        "error_type": rng.choice(ERROR_TYPES) if error else None, "retry_attempt": attempt or None,
        "cost_usd": cost, "price_id": price_id,
    }  # fmt: skip
    writer.span(project_id, trace_id, span_id, parent, start_us, duration_us, f"chat {request_model}", CLIENT,
                STATUS_ERROR if error else STATUS_UNSET, service, **fields)  # fmt: skip
    if request_model == VLLM_MODEL and not error:
        _vllm_server_span(writer, rng, project_id, trace_id, new_span_id(), span_id, start_us + 1_500,
                          duration_ms - 3, input_tokens=input_tokens, output_tokens=output_tokens)  # fmt: skip
    elif provider == "anthropic" and rng.random() < 0.1:
        # The anthropic SDK's own span inside OpenLLMetry's: the same call seen twice.
        writer.span(project_id, trace_id, new_span_id(), span_id, start_us + 200, duration_us - 400,
                    "anthropic.messages.create", CLIENT, STATUS_ERROR if error else STATUS_UNSET, service,
                    **fields)  # fmt: skip
    return start_us + duration_us, error
