"""What one simulated request does, decided before any span exists.

A request becomes a `RequestPlan`: its root (tenant, feature, user), the app steps and LLM calls
in order, each with tokens, outcome and timing. Planning is pure and seeded per request, so the
same arrival always gives the same plan, and incidents (incidents.py) can tweak a call's drawn
parameters before its timing is derived from them (longer outputs take longer).
"""

from __future__ import annotations

import hashlib
import math
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from collectors.simulator.catalog import (
    FEATURES,
    MODELS,
    PROVIDERS,
    SERVICES,
    TENANTS,
    VLLM_INSTANCES,
    FeatureProfile,
    ModelProfile,
    ProviderProfile,
    TenantProfile,
)
from collectors.simulator.traffic import NS_PER_S, Arrival, from_ns, overall_load

if TYPE_CHECKING:
    from collectors.simulator.incidents import Incident

RATE_LIMIT_ERROR = "RateLimitError"
TIMEOUT_ERROR = "APITimeoutError"
VALIDATION_FAILED = "validation_failed"
# The app's own HTTP status when a request fails because of its model call.
HTTP_STATUS_FOR_ERROR = {RATE_LIMIT_ERROR: 429, TIMEOUT_ERROR: 504, VALIDATION_FAILED: 422}
# Client timeouts: interactive endpoints give up sooner than background jobs.
SERVER_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 60.0

_BASE62 = string.ascii_letters + string.digits
_HEX = "0123456789abcdef"

FINISH_REASONS = {
    # provider: (done, hit max_tokens, tool call)
    "openai": ("stop", "length", "tool_calls"),
    "anthropic": ("end_turn", "max_tokens", "tool_use"),
    "gcp.gemini": ("STOP", "MAX_TOKENS", "STOP"),
    "mistral_ai": ("stop", "length", "tool_calls"),
    "vllm": ("stop", "length", "tool_calls"),
}


@dataclass(slots=True)
class VllmTiming:
    """The engine-side view of a self-hosted call (vLLM's llm_request span)."""

    instance: str
    sets_response_model: bool
    queue_s: float
    prefill_s: float
    decode_s: float
    aborted: bool = False


@dataclass(slots=True)
class CallPlan:
    """One provider call: one LLM client span (plus a vLLM server span when self-hosted)."""

    model: ModelProfile
    provider: ProviderProfile
    convention: str
    stream: bool
    max_tokens: int
    temperature: float
    input_tokens: int  # includes cached input, as OTel counts it
    cache_read_tokens: int
    cache_write_tokens: int
    response_model: str
    system_fingerprint: str | None
    service_tier: str | None
    response_id: str
    # Timing draws; duration and TTFT are derived from them in finish_timing().
    ttft_draw_s: float
    tokens_per_s: float
    latency_factor: float = 1.0
    output_tokens: int = 0  # includes reasoning
    reasoning_tokens: int = 0
    finish_reason: str = "stop"
    wants_tool: bool = False
    # http.request.resend_count: 1 when the app resends after a rate limit or a 5xx.
    resend_count: int = 0
    # 1+ when the app asks again because it rejected the previous answer.
    validation_attempt: int = 0
    error_type: str | None = None
    error_message: str = ""
    fixed_duration_s: float | None = None  # failures: how long until the error came back
    vllm: VllmTiming | None = None
    capture_content: bool = False
    offset_s: float = 0.0
    duration_s: float = 0.0
    ttft_s: float | None = None

    @property
    def failed(self) -> bool:
        return self.error_type is not None


@dataclass(slots=True)
class AppStep:
    """A non-LLM span of the application (retrieval, output validation)."""

    name: str
    offset_s: float
    duration_s: float
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(slots=True)
class RequestPlan:
    key: str
    start_ns: int
    tenant: TenantProfile
    feature: FeatureProfile
    user_id: str
    session_id: str
    id_seed: int  # seeds span and trace ids, so they are reproducible too
    load: float
    steps: list[CallPlan | AppStep] = field(default_factory=list)
    duration_s: float = 0.0
    error_type: str | None = None
    error_message: str = ""
    incident_hits: list[str] = field(default_factory=list)

    @property
    def calls(self) -> list[CallPlan]:
        return [s for s in self.steps if isinstance(s, CallPlan)]

    @property
    def end_ns(self) -> int:
        return self.start_ns + int(self.duration_s * NS_PER_S)

    @property
    def http_status(self) -> int:
        if self.error_type is None:
            return 200
        return HTTP_STATUS_FOR_ERROR.get(self.error_type, 502)


def plan_request(arrival: Arrival, incidents: Sequence[Incident] = ()) -> RequestPlan:
    rng = random.Random(arrival.key)
    tenant, feature = TENANTS[arrival.tenant], FEATURES[arrival.feature]
    load = overall_load(from_ns(arrival.at_ns))
    user_n = int(tenant.users * rng.random() ** 2)  # a few heavy users, a long tail of light ones
    user_id = f"user-{tenant.name}-{user_n:04d}"
    day = arrival.at_ns // (86400 * NS_PER_S)
    session_id = "sess_" + _digest(f"{user_id}:{day}:{rng.randrange(3)}")[:20]
    req = RequestPlan(arrival.key, arrival.at_ns, tenant, feature, user_id, session_id, rng.getrandbits(64), load)
    active = [(inc, random.Random(f"{arrival.key}:{inc.spec}")) for inc in incidents if inc.active(arrival.at_ns)]

    model = MODELS[rng.choices([m for m, _ in feature.models], weights=[w for _, w in feature.models], k=1)[0]]
    offset = rng.uniform(0.002, 0.015)  # auth, parsing, loading the tenant's settings
    if feature.pre_span and rng.random() < feature.pre_span_p:
        duration = _lognormal(rng, 0.035, 0.5)
        req.steps.append(AppStep(feature.pre_span, offset, duration))
        offset += duration + rng.uniform(0.0005, 0.003)

    input_tokens = _clamp(int(_lognormal(rng, feature.input_median, feature.input_sigma)), 16, 180_000)
    for validation_attempt in range(2):
        offset, call = _call_with_resend(rng, req, model, input_tokens, validation_attempt, active, offset)
        if call.failed:
            req.error_type, req.error_message = call.error_type, call.error_message
            break
        # An input the model got wrong once is a hard one: the second try fails more often.
        rejected = rng.random() < feature.validation_fail_p * (1 if validation_attempt == 0 else 4)
        if feature.validates:
            duration = _lognormal(rng, 0.012, 0.4)
            req.steps.append(AppStep("validate_output", offset, duration, {"app.validation.passed": not rejected}))
            offset += duration
        if not rejected:
            break
        if validation_attempt == 1:
            req.error_type = VALIDATION_FAILED
            req.error_message = "model output failed schema validation twice"
            break
        # The second attempt resends the prompt with the rejected answer and the error appended.
        input_tokens += call.output_tokens + rng.randint(60, 200)
    req.duration_s = offset + rng.uniform(0.002, 0.02)
    return req


def _call_with_resend(
    rng: random.Random,
    req: RequestPlan,
    model: ModelProfile,
    input_tokens: int,
    validation_attempt: int,
    active: list[tuple[Incident, random.Random]],
    offset: float,
) -> tuple[float, CallPlan]:
    """A call, and one resend after a rate limit (always) or a 5xx (half the time)."""
    call = _place(req, _draw_call(rng, req, model, input_tokens, validation_attempt, 0, active), offset)
    offset += call.duration_s
    if not call.failed or call.error_type == TIMEOUT_ERROR:
        return offset, call
    if call.error_type != RATE_LIMIT_ERROR and rng.random() < 0.5:
        return offset, call
    # Providers answer 429 with retry-after of a second or few; SDKs back off about that long.
    offset += rng.uniform(0.5, 4.0) if call.error_type == RATE_LIMIT_ERROR else rng.uniform(0.2, 1.0)
    retry = _place(req, _draw_call(rng, req, model, input_tokens, validation_attempt, 1, active), offset)
    return offset + retry.duration_s, retry


def _place(req: RequestPlan, call: CallPlan, offset: float) -> CallPlan:
    call.offset_s = offset
    req.steps.append(call)
    return call


def _draw_call(
    rng: random.Random,
    req: RequestPlan,
    model: ModelProfile,
    input_tokens: int,
    validation_attempt: int,
    resend_count: int,
    active: list[tuple[Incident, random.Random]],
) -> CallPlan:
    feature = req.feature
    provider = PROVIDERS[model.provider]
    cache_read, cache_write = _draw_cache(rng, feature, model, input_tokens)
    fingerprint = None
    if model.fingerprints:
        # Most calls land on the current backend; a few on the one being rolled out or back.
        fingerprint = model.fingerprints[0] if rng.random() < 0.85 else rng.choice(model.fingerprints)
    call = CallPlan(
        model=model,
        provider=provider,
        convention=SERVICES[feature.service].convention,
        stream=rng.random() < feature.stream_p,
        max_tokens=feature.max_tokens,
        temperature=feature.temperature,
        input_tokens=input_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        response_model=model.response_model,
        system_fingerprint=fingerprint,
        service_tier=(("default" if rng.random() < 0.96 else "priority") if provider.name == "openai" else None),
        response_id=_response_id(rng, provider.name),
        ttft_draw_s=_lognormal(rng, model.ttft_s, 0.35) if model.ttft_s else 0.0,
        tokens_per_s=_lognormal(rng, model.tokens_per_s, 0.25),
        wants_tool=rng.random() < feature.tool_calls_p,
        resend_count=resend_count,
        validation_attempt=validation_attempt,
        capture_content=rng.random() < feature.content_capture_p,
    )
    # A provider hiccup now and then: the natural tail every p99 chart has.
    if rng.random() < 0.015:
        call.latency_factor = rng.uniform(2.0, 5.0)
    visible = max(1, int(_lognormal(rng, feature.output_median * model.output_scale, feature.output_sigma)))
    reasoning = int(visible * rng.uniform(0.8, 4.0)) if model.reasoning else 0
    set_output_tokens(call, visible, reasoning)
    if provider.self_hosted:
        instance, sets_model = VLLM_INSTANCES[rng.randrange(len(VLLM_INSTANCES))]
        # Queueing grows steeply with load: the GPU tier is sized for the average, not the peak.
        queue_s = rng.expovariate(1 / (0.012 + 0.9 * req.load**4))
        if rng.random() < 0.005:
            queue_s += rng.uniform(2.0, 8.0)  # preemptions under memory pressure
        call.vllm = VllmTiming(
            instance,
            sets_model,
            queue_s,
            (input_tokens - cache_read) / _lognormal(rng, model.prefill_tokens_per_s, 0.2),
            0.0,
        )
    _draw_outcome(rng, req, call)
    for incident, incident_rng in active:
        if incident.apply(req, call, incident_rng) and incident.spec not in req.incident_hits:
            req.incident_hits.append(incident.spec)
    finish_timing(call, req.load)
    return call


def set_output_tokens(call: CallPlan, visible: int, reasoning: int) -> None:
    """Set output (visible + reasoning), clipped at max_tokens as providers do, and the finish reason."""
    done, truncated, tool = FINISH_REASONS[call.provider.name]
    total = visible + reasoning
    if total > call.max_tokens:
        call.output_tokens = call.max_tokens
        call.reasoning_tokens = min(reasoning, call.max_tokens)
        call.finish_reason = truncated
    else:
        call.output_tokens = total
        call.reasoning_tokens = reasoning
        call.finish_reason = tool if call.wants_tool else done


def finish_timing(call: CallPlan, load: float) -> None:
    """Derive TTFT and duration from the drawn speeds, tokens and latency factor."""
    if call.fixed_duration_s is not None:
        call.duration_s = call.fixed_duration_s
        call.ttft_s = None
        if call.vllm is not None and call.vllm.aborted:
            call.vllm.queue_s = max(0.0, call.duration_s - 0.01)
            call.vllm.prefill_s = call.vllm.decode_s = 0.0
        return
    factor = call.latency_factor
    if call.vllm is not None:
        v = call.vllm
        # Continuous batching: each request decodes slower when the batch is full.
        v.decode_s = call.output_tokens / (call.tokens_per_s / (1 + 0.6 * load))
        v.queue_s, v.prefill_s, v.decode_s = v.queue_s * factor, v.prefill_s * factor, v.decode_s * factor
        network_s = 0.004  # both directions, inside one cluster
        call.ttft_s = v.queue_s + v.prefill_s + network_s
        call.duration_s = v.queue_s + v.prefill_s + v.decode_s + network_s
    else:
        uncached = call.input_tokens - call.cache_read_tokens
        ttft = call.ttft_draw_s + uncached / call.model.prefill_tokens_per_s
        call.ttft_s = ttft * factor
        call.duration_s = (ttft + call.output_tokens / call.tokens_per_s) * factor
    if not call.stream:
        call.ttft_s = None


def _draw_outcome(rng: random.Random, req: RequestPlan, call: CallPlan) -> None:
    provider = call.provider
    roll = rng.random()
    # Rate limits bite at the busy hours; a resend is a little less likely to be limited again.
    rate_limit_p = provider.rate_limit_p * (0.3 + req.load) * (0.6 if call.resend_count else 1.0)
    if roll < rate_limit_p:
        call.error_type, call.error_message = RATE_LIMIT_ERROR, "Error code: 429 - rate limit exceeded"
        call.fixed_duration_s = rng.uniform(0.08, 0.5)
    elif roll < rate_limit_p + provider.server_error_p:
        call.error_type, call.error_message = provider.server_error_type, "Error code: 500 - upstream error"
        call.fixed_duration_s = rng.uniform(0.3, 4.0)
    elif roll < rate_limit_p + provider.server_error_p + provider.timeout_p:
        call.error_type, call.error_message = TIMEOUT_ERROR, "Request timed out."
        call.fixed_duration_s = (SERVER_TIMEOUT_S if req.feature.root_is_server else JOB_TIMEOUT_S) + rng.uniform(
            0, 0.05
        )
        if call.vllm is not None:
            call.vllm.aborted = True  # the client hung up; vLLM aborts the queued request
    if call.failed:
        call.output_tokens = call.reasoning_tokens = 0
        if call.error_type != TIMEOUT_ERROR:
            call.vllm = None  # an engine error or a rejection writes no llm_request span


def _draw_cache(rng: random.Random, feature: FeatureProfile, model: ModelProfile, input_tokens: int) -> tuple[int, int]:
    """(cache read, cache write) tokens, each part of input_tokens, as each provider caches."""
    provider = model.provider
    prefix = int(input_tokens * feature.cache_share * rng.uniform(0.7, 1.0))
    hit = rng.random() < feature.cache_hit_p
    if provider == "openai":
        # Automatic caching from 1024 prompt tokens, in 128-token steps; no write charge.
        if hit and input_tokens >= 1024:
            return min(input_tokens, prefix // 128 * 128), 0
        return 0, 0
    if provider == "anthropic":
        # Explicit cache_control: a miss writes the prefix (charged extra), a hit reads it.
        if feature.cache_hit_p == 0 or prefix < 1024:
            return 0, 0
        return (prefix, 0) if hit else (0, prefix)
    if provider == "gcp.gemini":
        return (prefix, 0) if hit and input_tokens >= 1024 else (0, 0)
    return 0, 0  # Mistral and vLLM report no cached input


def _response_id(rng: random.Random, provider: str) -> str:
    if provider == "openai":
        return "chatcmpl-" + "".join(rng.choices(_BASE62, k=29))
    if provider == "anthropic":
        return "msg_01" + "".join(rng.choices(_BASE62, k=22))
    if provider == "vllm":
        return "chatcmpl-" + "".join(rng.choices(_HEX, k=32))
    if provider == "mistral_ai":
        return "".join(rng.choices(_HEX, k=32))
    return "".join(rng.choices(_BASE62, k=22))


def new_fingerprint(seed: str) -> str:
    return "fp_" + _digest(seed)[:10]


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))
