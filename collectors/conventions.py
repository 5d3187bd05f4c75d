"""Map a RawSpan to a CanonicalSpan, whichever convention its instrumentation followed.

FIELD_SOURCES is the one place that says where each canonical field comes from: per field,
the attribute keys of every convention we read (OTel GenAI current and deprecated, vLLM,
OpenInference, OpenLLMetry/Traceloop, Langfuse), in priority order, each with a converter.
CONVENTIONS.md (shared/) is the reference, checked against the installed packages
(opentelemetry-semantic-conventions 0.66b1, openinference-semantic-conventions 0.1.42,
opentelemetry-instrumentation-openai-v2 2.4b0, openinference-instrumentation-openai 0.1.66,
opentelemetry-instrumentation-openai and -anthropic 0.62.4, anthropic 2.16.0): keys found
there and not in CONVENTIONS.md are marked "(package)". EVENT_SOURCES does the same for
span events (first token, exception).

Token counts are normalised here and nowhere else: input_tokens includes cached input
(read and write), output_tokens includes reasoning. Prompt and completion content is
measured by collectors.content; what is kept of the attributes is capped by
collectors.capping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from collectors.capping import (
    MAX_FINISH_REASONS,
    TEXT_FIELD_MAX_BYTES,
    TRUNCATED_ATTRIBUTE,
    cap_attributes,
    cap_text_fields,
    cap_utf8,
    strip_nul,
)
from collectors.content import ContentItem, content_group, measure_content
from collectors.records import STATUS_ERROR, CanonicalSpan, RawEvent, RawSpan, SpanRejected

__all__ = [
    "DEFAULT_FEATURE_KEYS",
    "DEFAULT_TENANT_KEYS",
    "EVENT_SOURCES",
    "FIELD_SOURCES",
    "EventSource",
    "MappingConfig",
    "Source",
    "map_span",
]

# Tenant and feature have no standard key (CONVENTIONS.md); baggage processors copy W3C
# baggage entries onto spans as plain attributes, so the same keys cover baggage too.
DEFAULT_TENANT_KEYS = ("tenant.id", "app.tenant", "enduser.tenant", "traceloop.association.properties.customer_id")
DEFAULT_FEATURE_KEYS = (
    "app.feature",
    "gen_ai.agent.name",
    "gen_ai.workflow.name",
    "traceloop.workflow.name",
    "langfuse.trace.name",
)


@dataclass(frozen=True, slots=True)
class MappingConfig:
    # Looked up in the span's attributes first, then in its resource's, each in this order.
    tenant_keys: Sequence[str] = DEFAULT_TENANT_KEYS
    feature_keys: Sequence[str] = DEFAULT_FEATURE_KEYS
    # Caps on what is stored per span (attributes and resource each): one value, then the
    # whole dict, where the largest values are dropped first and `_truncated: true` is set.
    max_attribute_chars: int = 1024
    max_attributes_chars: int = 8192
    # vLLM's span names no model; the serving tier's configuration does.
    vllm_model: str | None = None
    # The resource attribute the rollups fall back to for a span's feature (settings
    # FEATURE_FALLBACK_ATTRIBUTE); capped like the feature. service.name has its own column.
    feature_fallback_key: str | None = None
    # Prompts and completions are private: by default only their size and a hash are kept.
    capture_content: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tenant_keys", tuple(self.tenant_keys))
        object.__setattr__(self, "feature_keys", tuple(self.feature_keys))
        if self.max_attribute_chars < 1 or self.max_attributes_chars < 1:
            raise ValueError("attribute caps must be positive")


# --------------------------------------------------------------------------- converters
# Each takes an attribute value as decoded (str, int, float, bool, list, dict) and returns
# the canonical value, or None when the value is unusable (then the next source is tried).
# None of them raises: the values are whatever a client sent.

# What a converter keeps of a string before capping.cap_text_fields cuts it to its field's
# byte limit: enough that the cut is seen (and recorded) there, never a whole huge value.
_MAX_TEXT_CHARS = 4096
_MAX_TOKENS = 10**12
# retry_attempt is an int4 column: a larger count would fail the whole batch's COPY.
_MAX_RETRY_ATTEMPT = 10_000
_FEATURE_MAX_BYTES = TEXT_FIELD_MAX_BYTES["feature"]
_MAX_USD = 1_000_000  # for one call: beyond this the figure is a unit mistake


def _text(value: Any) -> str | None:
    if type(value) is str:
        return strip_nul(value[:_MAX_TEXT_CHARS]) or None
    if type(value) is int:
        return str(value)
    return None


def _lower(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    return text.strip().lower() or None


def _count(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        count = value
    elif kind is float:
        if not value.is_integer():
            return None
        count = int(value)
    elif kind is str:
        try:
            count = int(value)
        except ValueError:
            return None
    else:
        return None
    return count if 0 <= count <= _MAX_TOKENS else None


def _attempt(value: Any) -> int | None:
    count = _count(value)
    return count if count is not None and count <= _MAX_RETRY_ATTEMPT else None


def _seconds_to_ms(value: Any) -> float | None:
    number = _finite(value)
    return number * 1000.0 if number is not None and number >= 0 else None


def _finite(value: Any) -> float | None:
    kind = type(value)
    if kind is float or kind is int:
        number = float(value)
    elif kind is str:
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _flag(value: Any) -> bool | None:
    if type(value) is bool:
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    if type(value) is str:
        return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower())
    return None


def _usd(value: Any) -> Decimal | None:
    number = _finite(value)
    if number is None or not 0 <= number <= _MAX_USD:
        return None
    # Through text, so 0.1 stays 0.1 rather than its binary expansion.
    try:
        return Decimal(value.strip()) if type(value) is str else Decimal(repr(number))
    except InvalidOperation:
        return None


def _reasons(value: Any) -> list[str] | None:
    """finish_reasons: a string array (OTel), a JSON-encoded array (vLLM) or one string."""
    if type(value) is str:
        if value.startswith("["):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                return [strip_nul(value[:_MAX_TEXT_CHARS])]
        else:
            return [strip_nul(value[:_MAX_TEXT_CHARS])] if value else None
    if type(value) is list:
        # One more than is kept, so the cut is seen and recorded; the rest is never read.
        reasons = [
            strip_nul(str(item)[:_MAX_TEXT_CHARS])
            for item in value[: MAX_FINISH_REASONS + 1]
            if item is not None and item != ""
        ]
        return reasons or None
    return None


def _iso_to_unix_ns(value: Any) -> int | None:
    """Langfuse's completion_start_time: an ISO timestamp, JSON-quoted by its serializer."""
    if type(value) is not str or not value:
        return None
    text = value.strip('"')
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MICROSECOND * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


class _LangfuseUsage(NamedTuple):
    input: int | None
    output: int | None
    cache_read: int | None
    cache_write: int | None
    reasoning: int | None


# Langfuse's usage_details come in Langfuse's own shape (`input`/`output` plus detail keys:
# OpenAI's prefixed `input_`/`output_`, LangChain's `input_cache_read`, Anthropic's names),
# or as the provider's raw usage object, which Langfuse's server converts on ingest.
_LF_CACHE_READ = ("input_cached_tokens", "input_cache_read", "cache_read_input_tokens")
_LF_CACHE_WRITE = ("input_cache_creation", "cache_creation_input_tokens", "cache_write_input_tokens")
_LF_CACHE_WRITE_PARTS = ("input_cache_creation_5m", "input_cache_creation_1h")
_LF_REASONING = ("output_reasoning_tokens", "output_reasoning")
# OpenAI's other detail counts, part of what it bills as input/output. *Unverified*: taken
# to be subtracted like the cache count, as Langfuse's conversion treats every detail alike.
_LF_OTHER_INPUT = ("input_audio_tokens",)
_LF_OTHER_OUTPUT = ("output_audio_tokens", "output_accepted_prediction_tokens", "output_rejected_prediction_tokens")


@lru_cache(maxsize=1024)
def _parse_langfuse_usage(text: str) -> _LangfuseUsage | None:
    try:
        details = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return _langfuse_usage_from(details) if type(details) is dict else None


def _langfuse_usage_from(details: dict[str, Any]) -> _LangfuseUsage:
    def first(keys: Sequence[str], within: Any = details) -> int | None:
        for key in keys:
            count = _count(within.get(key)) if type(within) is dict else None
            if count is not None:
                return count
        return None

    def total(keys: Sequence[str]) -> int:
        return sum(_count(details.get(key)) or 0 for key in keys)

    if "input" not in details and "output" not in details:
        # A raw OpenAI usage object: its counts already include cache and reasoning.
        if "prompt_tokens" in details or "completion_tokens" in details:
            return _LangfuseUsage(
                first(("prompt_tokens",)),
                first(("completion_tokens",)),
                first(("cached_tokens",), details.get("prompt_tokens_details")),
                None,
                first(("reasoning_tokens",), details.get("completion_tokens_details")),
            )
        if "input_tokens_details" in details or "output_tokens_details" in details:
            return _LangfuseUsage(
                first(("input_tokens",)),
                first(("output_tokens",)),
                first(("cached_tokens",), details.get("input_tokens_details")),
                None,
                first(("reasoning_tokens",), details.get("output_tokens_details")),
            )
    cache_read = first(_LF_CACHE_READ)
    cache_write = first(_LF_CACHE_WRITE)
    if cache_write is None and any(key in details for key in _LF_CACHE_WRITE_PARTS):
        cache_write = total(_LF_CACHE_WRITE_PARTS)
    reasoning = first(_LF_REASONING)
    # Langfuse's `input` excludes cached input and its `output` excludes reasoning, and a raw
    # Anthropic usage object's `input_tokens` excludes cache: add them back here, so the one
    # normalisation below never has to guess for this source.
    input_tokens = first(("input", "input_tokens"))
    if input_tokens is not None:
        input_tokens += (cache_read or 0) + (cache_write or 0) + total(_LF_OTHER_INPUT)
    output_tokens = first(("output", "output_tokens"))
    if output_tokens is not None:
        output_tokens += (reasoning or 0) + total(_LF_OTHER_OUTPUT)
    return _LangfuseUsage(input_tokens, output_tokens, cache_read, cache_write, reasoning)


def _langfuse_usage(value: Any) -> _LangfuseUsage | None:
    if type(value) is str:
        # Cached because five fields read the same string; long strings are not usage.
        return _parse_langfuse_usage(value) if len(value) <= 2048 else None
    if type(value) is dict:  # an exporter that sent it as an OTLP kvlist
        return _langfuse_usage_from(value)
    return None


def _langfuse_part(part: str) -> Callable[[Any], int | None]:
    def convert(value: Any) -> int | None:
        usage = _langfuse_usage(value)
        return getattr(usage, part) if usage is not None else None

    return convert


# OpenInference's request parameters: the JSON of the request body less its messages. Two
# fields read the same string one after the other, so a small cache parses it once; a
# string past the cap is not parsed at all (a request body with a huge JSON schema).
_MAX_INVOCATION_PARAMETERS_CHARS = 65_536


@lru_cache(maxsize=32)
def _parse_invocation_parameters(text: str) -> dict[str, Any] | None:
    try:
        parameters = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return parameters if type(parameters) is dict else None


def _invocation_parameter(name: str, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Read one parameter out of `llm.invocation_parameters`; invalid or non-object JSON is
    no value (the next source is tried), never an error."""

    def read(value: Any) -> Any:
        if type(value) is str:
            parameters = _parse_invocation_parameters(value) if len(value) <= _MAX_INVOCATION_PARAMETERS_CHARS else None
        elif type(value) is dict:  # an exporter that sent it as an OTLP kvlist
            parameters = value
        else:
            parameters = None
        return convert(parameters.get(name)) if parameters is not None else None

    return read


def _langfuse_cost_total(value: Any) -> Decimal | None:
    details = value
    if type(value) is str:
        try:
            details = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    if type(details) is not dict:
        return None
    if "total" in details:
        return _usd(details["total"])
    parts = [_usd(cost) for cost in details.values()]
    return sum((cost for cost in parts if cost is not None), Decimal(0)) if parts else None


# --------------------------------------------------------------------------- the table

OTEL = "OTel GenAI"
OTEL_DEPRECATED = "OTel GenAI (deprecated)"
OTEL_GENERAL = "OTel"
VLLM = "vLLM"
OPENINFERENCE = "OpenInference"
OPENLLMETRY = "OpenLLMetry/Traceloop"
LANGFUSE = "Langfuse"
ANTHROPIC_SDK = "anthropic SDK"
OBSERVATORY = "Observatory"


@dataclass(frozen=True, slots=True)
class Source:
    key: str
    convert: Callable[[Any], Any]
    convention: str
    # A key is consumed by the fields it feeds (not stored again in `attributes`), unless
    # it carries more than they read: then it is kept too.
    keep: bool = False


S = Source

# Per canonical field, its sources in priority order: the first that is present and
# converts wins. Every key listed is consumed (not stored again in `attributes`) unless a
# source of it says `keep`. Span events are read after these (EVENT_SOURCES, below).
# Fields starting with "_" are intermediate values the mapper combines afterwards.
FIELD_SOURCES: dict[str, tuple[Source, ...]] = {
    "provider": (
        S("gen_ai.provider.name", _lower, OTEL),
        S("gen_ai.system", _lower, OTEL_DEPRECATED),  # also what OpenLLMetry and Langfuse set
        S("llm.provider", _lower, OPENINFERENCE),  # the host that bills (azure, openai)
        S("llm.system", _lower, OPENINFERENCE),  # the model family
    ),
    "operation": (
        S("gen_ai.operation.name", _lower, OTEL),
        S("llm.request.type", _lower, OPENLLMETRY),
        S("openinference.span.kind", _lower, OPENINFERENCE),
        S("langfuse.observation.type", _lower, LANGFUSE),
    ),
    "request_model": (
        S("gen_ai.request.model", _text, OTEL),
        S("llm.request.model_name", _text, OPENINFERENCE),
        # OpenInference's own record of the requested model: llm.model_name is the snapshot
        # that answered. The rest of the parameters (temperature, max_tokens) stay stored.
        S("llm.invocation_parameters", _invocation_parameter("model", _text), OPENINFERENCE, keep=True),
        S("embedding.invocation_parameters", _invocation_parameter("model", _text), OPENINFERENCE, keep=True),
        S("llm.request.model", _text, OPENLLMETRY),  # before its move to gen_ai.*
        S("llm.model_name", _text, OPENINFERENCE),  # the responded model, when nothing better
    ),
    "response_model": (
        S("gen_ai.response.model", _text, OTEL),  # also vLLM (V0 engine only)
        S("llm.response.model_name", _text, OPENINFERENCE),
        S("langfuse.observation.model.name", _text, LANGFUSE),
        S("llm.response.model", _text, OPENLLMETRY),
        S("ai.model.id", _text, LANGFUSE),  # Vercel AI SDK, in Langfuse's model chain
        S("llm.model_name", _text, OPENINFERENCE),
    ),
    "input_tokens": (
        S("gen_ai.usage.input_tokens", _count, OTEL),  # also OpenLLMetry, anthropic SDK
        S("gen_ai.usage.prompt_tokens", _count, OTEL_DEPRECATED),  # also vLLM
        S("llm.token_count.prompt", _count, OPENINFERENCE),
        S("langfuse.observation.usage_details", _langfuse_part("input"), LANGFUSE),
    ),
    "cache_read_tokens": (
        S("gen_ai.usage.cache_read.input_tokens", _count, OTEL),  # also OpenLLMetry, anthropic SDK
        S("gen_ai.usage.cache_read_input_tokens", _count, OPENLLMETRY),  # deprecated spelling
        S("gen_ai.usage.cached_tokens", _count, VLLM),  # unverified upstream; seen in a vLLM fork
        S("llm.token_count.prompt_details.cache_read", _count, OPENINFERENCE),
        S("llm.token_count.prompt_details.cache_input", _count, OPENINFERENCE),  # (package)
        S("langfuse.observation.usage_details", _langfuse_part("cache_read"), LANGFUSE),
    ),
    "cache_write_tokens": (
        S("gen_ai.usage.cache_creation.input_tokens", _count, OTEL),  # also OpenLLMetry
        # The GenAI semconv's new name for the same count; the anthropic SDK already sends it.
        S("gen_ai.usage.cache_write.input_tokens", _count, ANTHROPIC_SDK),
        S("gen_ai.usage.cache_creation_input_tokens", _count, OPENLLMETRY),  # deprecated spelling
        S("llm.token_count.prompt_details.cache_write", _count, OPENINFERENCE),
        S("langfuse.observation.usage_details", _langfuse_part("cache_write"), LANGFUSE),
    ),
    "output_tokens": (
        S("gen_ai.usage.output_tokens", _count, OTEL),
        S("gen_ai.usage.completion_tokens", _count, OTEL_DEPRECATED),  # also vLLM
        S("llm.token_count.completion", _count, OPENINFERENCE),
        S("langfuse.observation.usage_details", _langfuse_part("output"), LANGFUSE),
    ),
    "reasoning_tokens": (
        S("gen_ai.usage.reasoning.output_tokens", _count, OTEL),
        S("gen_ai.usage.reasoning_tokens", _count, OPENLLMETRY),
        S("llm.usage.reasoning_tokens", _count, OPENLLMETRY),  # deprecated spelling
        S("llm.token_count.completion_details.reasoning", _count, OPENINFERENCE),
        S("langfuse.observation.usage_details", _langfuse_part("reasoning"), LANGFUSE),
    ),
    "supplied_cost_usd": (
        S("llm.cost.total", _usd, OPENINFERENCE),
        S("gen_ai.usage.cost", _usd, LANGFUSE),
        S("langfuse.observation.cost_details", _langfuse_cost_total, LANGFUSE),
    ),
    "ttft_ms": (
        S("gen_ai.response.time_to_first_chunk", _seconds_to_ms, OTEL),  # also the anthropic SDK
        S("gen_ai.latency.time_to_first_token", _seconds_to_ms, VLLM),
    ),
    # An absolute time: becomes ttft_ms once the span's start is subtracted.
    "_completion_start_ns": (S("langfuse.observation.completion_start_time", _iso_to_unix_ns, LANGFUSE),),
    "queue_ms": (S("gen_ai.latency.time_in_queue", _seconds_to_ms, VLLM),),
    "prefill_ms": (S("gen_ai.latency.time_in_model_prefill", _seconds_to_ms, VLLM),),
    "decode_ms": (S("gen_ai.latency.time_in_model_decode", _seconds_to_ms, VLLM),),
    "server_e2e_ms": (S("gen_ai.latency.e2e", _seconds_to_ms, VLLM),),
    "finish_reasons": (
        S("gen_ai.response.finish_reasons", _reasons, OTEL),  # vLLM: the same key, JSON-encoded
        S("gen_ai.response.finish_reason", _reasons, OPENLLMETRY),
        S("llm.finish_reason", _reasons, OPENINFERENCE),
        S("anthropic.message.stop_reason", _reasons, ANTHROPIC_SDK),  # (package): Anthropic's own words
    ),
    "error_type": (S("error.type", _text, OTEL_GENERAL),),
    "_level": (S("langfuse.observation.level", _lower, LANGFUSE),),  # "error" marks a failure
    "_status_message": (S("langfuse.observation.status_message", _text, LANGFUSE),),
    "is_streaming": (
        S("gen_ai.is_streaming", _flag, OPENLLMETRY),
        S("llm.is_streaming", _flag, OPENLLMETRY),  # before its move to gen_ai.*
        S("gen_ai.request.stream", _flag, OTEL),  # (package); also the anthropic SDK
        S("llm.invocation_parameters", _invocation_parameter("stream", _flag), OPENINFERENCE, keep=True),
    ),
    "user_id": (
        S("langfuse.user.id", _text, LANGFUSE),
        S("user.id", _text, OTEL_GENERAL),  # also OpenInference and Langfuse
        S("enduser.id", _text, OTEL_GENERAL),
        S("traceloop.association.properties.user_id", _text, OPENLLMETRY),
        S("gen_ai.user", _text, OPENLLMETRY),
        S("llm.user", _text, OPENLLMETRY),
    ),
    "session_id": (
        S("langfuse.session.id", _text, LANGFUSE),
        S("gen_ai.conversation.id", _text, OTEL),
        S("session.id", _text, OTEL_GENERAL),  # also OpenInference and Langfuse
        S("traceloop.association.properties.session_id", _text, OPENLLMETRY),
    ),
    "task_id": (
        S("observatory.task.id", _text, OBSERVATORY),
        S("app.task.id", _text, OBSERVATORY),
    ),
    "retry_attempt": (
        S("observatory.retry.attempt", _attempt, OBSERVATORY),
        S("http.request.resend_count", _attempt, OTEL_GENERAL),
    ),
    "semantic_cache_hit": (S("observatory.semantic_cache.hit", _flag, OBSERVATORY),),
    # The application's verdict on the answer (README, "Instrumentation notes"): false = the
    # output failed the app's own validation (schema, guardrail). Counted for drift.
    "output_valid": (S("observatory.output.valid", _flag, OBSERVATORY),),
    "system_fingerprint": (
        S("openai.response.system_fingerprint", _text, OTEL),
        S("gen_ai.openai.response.system_fingerprint", _text, OTEL_DEPRECATED),  # also OpenLLMetry
    ),
    "service_tier": (
        S("openai.response.service_tier", _text, OTEL),  # also OpenLLMetry
        S("gen_ai.openai.response.service_tier", _text, OTEL_DEPRECATED),
        S("anthropic.response.service_tier", _text, ANTHROPIC_SDK),  # (package)
    ),
    "response_id": (
        S("gen_ai.response.id", _text, OTEL),
        S("gen_ai.request.id", _text, VLLM),
    ),
}

# Derived once: attribute key -> the (field, rank, converter) it feeds. A key can feed
# several fields (Langfuse's usage_details, OpenInference's llm.model_name).
_ROUTES: dict[str, tuple[tuple[str, int, Callable[[Any], Any]], ...]] = {}
for _field, _sources in FIELD_SOURCES.items():
    for _rank, _source in enumerate(_sources):
        _ROUTES[_source.key] = (*_ROUTES.get(_source.key, ()), (_field, _rank, _source.convert))
del _field, _sources, _rank, _source
_KEPT_KEYS = frozenset(source.key for sources in FIELD_SOURCES.values() for source in sources if source.keep)


# --------------------------------------------------------------------------- span events
# Some facts arrive as span events rather than attributes: the moment the first token came
# back, and the exception that failed the call. Each reader takes one event and returns the
# value or None (then a later event or source is tried); none raises.


def _event_time(event: RawEvent) -> int | None:
    return event.time_unix_nano or None


def _event_attribute(key: str, convert: Callable[[Any], Any]) -> Callable[[RawEvent], Any]:
    def read(event: RawEvent) -> Any:
        value = event.attributes.get(key)
        return convert(value) if value is not None else None

    return read


@dataclass(frozen=True, slots=True)
class EventSource:
    event_name: str
    read: Callable[[RawEvent], Any]
    convention: str
    # Of several events of this name, the last that reads wins (else the first).
    last: bool = False


E = EventSource

# Per intermediate field, the span events it comes from, in priority order; of several
# events of one name the first that reads wins (OpenLLMetry adds one per chunk: the first is
# the first token), or the last where the source says so. map_span turns them into canonical
# fields after every attribute source: an explicit attribute always wins over an event.
EVENT_SOURCES: dict[str, tuple[EventSource, ...]] = {
    # An absolute time: ttft_ms once the span's start is subtracted.
    "_first_token_ns": (
        E("First Token Stream Event", _event_time, OPENINFERENCE),
        E("gen_ai.content.completion.chunk", _event_time, OPENLLMETRY),
    ),
    # The error type of a span whose status is ERROR and which names none itself (the SDK's
    # record_exception: a fully qualified class name such as openai.RateLimitError). The last
    # one: earlier exceptions were survived (a retry), the last one failed the span.
    "_exception_type": (E("exception", _event_attribute("exception.type", _text), OTEL_GENERAL, last=True),),
}
_EVENT_ROUTES: dict[str, tuple[tuple[str, int, Callable[[RawEvent], Any], bool], ...]] = {}
for _field, _event_sources in EVENT_SOURCES.items():
    for _rank, _event_source in enumerate(_event_sources):
        _EVENT_ROUTES[_event_source.event_name] = (
            *_EVENT_ROUTES.get(_event_source.event_name, ()),
            (_field, _rank, _event_source.read, _event_source.last),
        )
del _field, _event_sources, _rank, _event_source


def _event_values(events: Sequence[RawEvent]) -> dict[str, Any]:
    """Per EVENT_SOURCES field, the value of its best-ranked event (the first of a name, or the last)."""
    best: dict[str, tuple[int, Any]] = {}
    for event in events:
        routes = _EVENT_ROUTES.get(event.name)
        if routes is None:
            continue
        for field_name, rank, read, last in routes:
            current = best.get(field_name)
            if current is not None and (current[0] < rank or (current[0] == rank and not last)):
                continue
            value = read(event)
            if value is not None:
                best[field_name] = (rank, value)
    return {field_name: value for field_name, (_, value) in best.items()}


# --------------------------------------------------------------------------- mapping

# Operations that are a model call, and ones that are not even when they carry a model or
# token counts: an agent or workflow span's usage is the sum of the LLM spans under it, so
# counting it as a call would charge the same tokens twice.
_MODEL_CALL_OPERATIONS = frozenset(
    {"chat", "text_completion", "completion", "embeddings", "embedding", "generate_content", "generation", "llm"}
)
_NOT_MODEL_CALL_OPERATIONS = frozenset(
    {"execute_tool", "invoke_agent", "create_agent", "invoke_workflow", "tool", "agent", "chain", "retriever"}
    | {"evaluator", "guardrail", "span", "event", "workflow", "task"}
)
# A TTFT attribute past the span's end by at most this is the instrumentation's own timer
# starting a little before its span (capped at the span's duration); further past, it is
# kept as sent: the span then does not cover the stream, and that is the instrumentation's.
_TTFT_CLOCK_SKEW_MS = 10.0
# Finish reasons that say the provider declined to answer (OpenAI, Anthropic, Gemini).
REFUSAL_FINISH_REASONS = frozenset({"content_filter", "refusal", "safety"})
_LLM_EVIDENCE = ("provider", "request_model", "response_model", "input_tokens", "output_tokens")
_VLLM_EVIDENCE = ("queue_ms", "prefill_ms", "decode_ms", "server_e2e_ms", "ttft_ms", "response_id")
_FIELD_NAMES = frozenset(CanonicalSpan.__dataclass_fields__)
_TOKEN_FIELDS = frozenset(
    {"input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens"}
)


def map_span(raw: RawSpan, config: MappingConfig) -> CanonicalSpan:
    """Map one decoded span.

    A value that does not convert is skipped and the next source tried, with one exception:
    a numeric token count out of range (negative, or beyond any real request) raises
    SpanRejected, since storing the span with "tokens unknown" would hide a client bug that
    misprices every call it touches.
    """
    attributes = raw.attributes
    # Per field, the best-ranked value present; the rest are read only if it fails to convert.
    best: dict[str, tuple[int, Any, Callable[[Any], Any]]] = {}
    kept: dict[str, Any] = {}
    content: list[ContentItem] = []
    completion_finish_reasons: list[str] = []
    refusal_seen = False
    for key, value in attributes.items():
        routes = _ROUTES.get(key)
        if routes is not None:
            for field_name, rank, convert in routes:
                current = best.get(field_name)
                if current is None or rank < current[0]:
                    best[field_name] = (rank, value, convert)
            if key not in _KEPT_KEYS:
                continue
        group = content_group(key)
        if group is None:
            kept[key] = value
            continue
        content.append((key, value, *group))
        if key.endswith(".finish_reason") and type(value) is str:  # OpenLLMetry's per-choice reason
            completion_finish_reasons.append(strip_nul(value[:_MAX_TEXT_CHARS]))
        if key.endswith(".refusal") and type(value) is str and value.strip():  # OpenAI's message.refusal
            refusal_seen = True
        if config.capture_content:
            kept[key] = value

    values: dict[str, Any] = {}
    for field_name, (rank, value, convert) in best.items():
        converted = convert(value)
        if converted is None and field_name in _TOKEN_FIELDS and type(value) in (int, float):
            key = FIELD_SOURCES[field_name][rank].key
            raise SpanRejected(f"{key}={value!r} is not a token count (0..{_MAX_TOKENS})")
        if converted is None:
            converted = _next_source(field_name, rank, attributes)
        if converted is not None:
            values[field_name] = converted

    completion_start_ns = values.pop("_completion_start_ns", None)
    level = values.pop("_level", None)
    observation_status_message = values.pop("_status_message", None)
    from_events = _event_values(raw.events) if raw.events else {}
    if "ttft_ms" not in values:
        # An attribute's moment first (Langfuse), else the first-token event; either must lie
        # within the span, or it belongs to something else (a clock mix-up) and is dropped.
        for first_token_ns in (completion_start_ns, from_events.get("_first_token_ns")):
            if first_token_ns is not None and raw.start_ns <= first_token_ns <= raw.end_ns:
                values["ttft_ms"] = (first_token_ns - raw.start_ns) / 1e6
                break
    ttft_ms = values.get("ttft_ms")
    duration_ms = (raw.end_ns - raw.start_ns) / 1e6
    if ttft_ms is not None and duration_ms < ttft_ms <= duration_ms + _TTFT_CLOCK_SKEW_MS:
        # The anthropic SDK times the first chunk from a clock read just before its span
        # starts: on a fast stream that ends right after its first chunk, the TTFT comes out
        # a fraction of a millisecond past the span's end, and TPOT (e2e - TTFT) negative.
        values["ttft_ms"] = duration_ms
    if "finish_reasons" not in values and completion_finish_reasons:
        values["finish_reasons"] = completion_finish_reasons

    is_vllm = raw.name == "llm_request" and "provider" not in values and any(name in values for name in _VLLM_EVIDENCE)
    if is_vllm:
        values["provider"] = "vllm"
        if "response_model" not in values and config.vllm_model:
            values["response_model"] = config.vllm_model

    _normalise_tokens(values)

    operation = values.get("operation")
    if is_vllm or operation in _MODEL_CALL_OPERATIONS:
        is_llm = True
    elif operation in _NOT_MODEL_CALL_OPERATIONS:
        is_llm = False
    else:
        is_llm = any(name in values for name in _LLM_EVIDENCE)

    finish_reasons = values.get("finish_reasons")
    if refusal_seen or (finish_reasons and not REFUSAL_FINISH_REASONS.isdisjoint(map(str.lower, finish_reasons))):
        values["refused"] = True
    if "error_type" not in values and (
        raw.status_code == STATUS_ERROR or level == "error" or (finish_reasons and "abort" in finish_reasons)
    ):
        values["error_type"] = (
            from_events.get("_exception_type")
            or strip_nul(raw.status_message[:100])
            or (observation_status_message or "")[:100]
            or "error"
        )

    if content and is_llm:
        measure_content(content, values)

    resource = raw.resource
    service_name = resource.get("service.name")
    values["name"] = raw.name[:_MAX_TEXT_CHARS]
    values["status_message"] = raw.status_message[:_MAX_TEXT_CHARS]
    values["service_name"] = service_name[:_MAX_TEXT_CHARS] if type(service_name) is str else ""
    values["scope_name"] = raw.scope_name[:_MAX_TEXT_CHARS]
    values["tenant"] = _first_tag(config.tenant_keys, attributes, resource)
    values["feature"] = _first_tag(config.feature_keys, attributes, resource)
    # Every text column in bytes, NUL removed: rollup keys must fit their btree index.
    truncated = cap_text_fields(values)
    kept_attributes = cap_attributes(kept, config.max_attribute_chars, config.max_attributes_chars)
    if truncated:
        kept_attributes[TRUNCATED_ATTRIBUTE] = truncated
    kept_resource = cap_attributes(resource, config.max_attribute_chars, config.max_attributes_chars)
    fallback = config.feature_fallback_key
    fallback_value = kept_resource.get(fallback) if fallback else None
    if fallback and type(fallback_value) is str:
        # The rollups read a feature of last resort from this resource attribute: it is a
        # rollup key like the feature itself, so it gets the feature's byte limit.
        capped, was_cut = cap_utf8(fallback_value, _FEATURE_MAX_BYTES)
        if was_cut:
            kept_resource = {**kept_resource, fallback: capped}
            kept_attributes[TRUNCATED_ATTRIBUTE] = [*truncated, f"resource.{fallback}"]
    return CanonicalSpan(
        trace_id=raw.trace_id,
        span_id=raw.span_id,
        parent_span_id=raw.parent_span_id,
        kind=raw.kind,
        start_ns=raw.start_ns,
        end_ns=raw.end_ns,
        status_code=raw.status_code,
        is_llm=is_llm,
        attributes=kept_attributes,
        resource=kept_resource,
        **values,
    )


def _next_source(field_name: str, failed_rank: int, attributes: dict[str, Any]) -> Any:
    for source in FIELD_SOURCES[field_name][failed_rank + 1 :]:
        value = attributes.get(source.key)
        if value is not None:
            converted = source.convert(value)
            if converted is not None:
                return converted
    return None


def _normalise_tokens(values: dict[str, Any]) -> None:
    """input includes cache read and write; output includes reasoning.

    Per source (CONVENTIONS.md, checked against the packages): OTel GenAI, OpenInference,
    OpenLLMetry (which adds Anthropic's cache counts back itself) and the anthropic SDK's
    own span (input 1250 = 200 + 1000 read + 50 written) already report input including
    cache; vLLM's prompt_tokens is the whole prompt, prefix-cached or not. Langfuse's
    usage_details excludes cache and reasoning; its converter adds them back. For anything
    else a count smaller than its own parts cannot include them, so the parts are added:
    that is the raw-Anthropic shape, and it never charges a cached token twice. A source
    that excludes cache yet reports more uncached than cached input cannot be told apart
    from one that includes it: name it here when one turns up.
    """
    input_tokens = values.get("input_tokens")
    if input_tokens is not None:
        cached = values.get("cache_read_tokens", 0) + values.get("cache_write_tokens", 0)
        if input_tokens < cached:
            values["input_tokens"] = input_tokens + cached
    output_tokens = values.get("output_tokens")
    reasoning = values.get("reasoning_tokens")
    if output_tokens is not None and reasoning is not None and output_tokens < reasoning:
        values["output_tokens"] = output_tokens + reasoning


def _first_tag(keys: Sequence[str], attributes: dict[str, Any], resource: dict[str, Any]) -> str | None:
    # The span is more specific than its process: all span keys before any resource key.
    for source in (attributes, resource):
        for key in keys:
            value = source.get(key)
            if value is None:
                continue
            if type(value) is str:
                if value:
                    return strip_nul(value[:_MAX_TEXT_CHARS]) or None
            elif type(value) is int:
                return str(value)
    return None


def _check_table() -> None:
    # A typo in a field name would otherwise surface as a TypeError on the first span.
    unknown = [name for name in FIELD_SOURCES if not name.startswith("_") and name not in _FIELD_NAMES]
    unknown += [name for name in EVENT_SOURCES if not name.startswith("_")]  # all are combined in map_span
    if unknown:
        raise RuntimeError(f"FIELD_SOURCES names fields CanonicalSpan lacks: {unknown}")


_check_table()
