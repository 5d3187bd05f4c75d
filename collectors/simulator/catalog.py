"""Who sends the simulated traffic, to which models, and how each model behaves.

Plain data, no randomness: `plan.py` draws from these profiles. The numbers are shaped to make
the demo look like a real product (a cheap default model per feature, a premium one for hard
cases, a self-hosted tier for bulk work) while giving every page something to show: cached
input, reasoning tokens, a self-hosted model, a model the price catalog does not know.
"""

from __future__ import annotations

from dataclasses import dataclass

# Conventions a service's instrumentation speaks (see emit.py for the attribute sets).
GENAI = "genai"  # OTel GenAI, current names
GENAI_LEGACY = "genai-legacy"  # OTel GenAI, deprecated names (gen_ai.system, prompt_tokens)
OPENINFERENCE = "openinference"  # Arize OpenInference (llm.token_count.*)


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    name: str  # gen_ai.provider.name
    server_address: str
    server_port: int
    instrumentation_scope: str
    # Per-call probabilities at full load; rate limits scale with the traffic shape.
    rate_limit_p: float
    server_error_p: float
    timeout_p: float
    server_error_type: str
    # Self-hosted calls go through vLLM, which emits its own server span.
    self_hosted: bool = False


@dataclass(frozen=True, slots=True)
class ModelProfile:
    name: str  # what the application asks for (gen_ai.request.model)
    provider: str
    response_model: str  # what the provider says answered (often a dated snapshot)
    # Backends serving the model; the first answers most calls (OpenAI only).
    fingerprints: tuple[str, ...] = ()
    ttft_s: float = 0.4  # median time to first token, before prefill of uncached input
    tokens_per_s: float = 90.0  # median decode speed seen by the client
    prefill_tokens_per_s: float = 25_000.0
    output_scale: float = 1.0  # some models are wordier than others for the same task
    reasoning: bool = False  # output includes hidden reasoning tokens
    # How a snapshot name is written when the provider silently moves the model on.
    snapshot_style: str = "openai"


@dataclass(frozen=True, slots=True)
class FeatureProfile:
    name: str  # app.feature
    service: str  # service.name of the application that serves it
    root_name: str
    root_is_server: bool  # SERVER span for HTTP endpoints, INTERNAL for background jobs
    http_route: str | None
    models: tuple[tuple[str, float], ...]  # (model name, weight)
    input_median: int
    input_sigma: float
    output_median: int
    output_sigma: float
    max_tokens: int
    stream_p: float
    cache_hit_p: float  # share of calls whose prompt prefix is in the provider's cache
    cache_share: float  # share of the input that prefix is
    validation_fail_p: float  # the app rejects the output and asks again
    temperature: float
    pre_span: str | None = None  # an app step before the model call (retrieval, search)
    pre_span_p: float = 0.0
    validates: bool = False  # emits a validate_output span after each call
    tool_calls_p: float = 0.0
    content_capture_p: float = 0.0  # calls that carry gen_ai.input.messages
    conversational: bool = False  # LLM spans carry gen_ai.conversation.id


@dataclass(frozen=True, slots=True)
class TenantProfile:
    name: str  # tenant.id
    weight: float  # share of all traffic
    utc_offset_h: int  # where its users work: shifts its busy hours
    users: int
    features: tuple[tuple[str, float], ...]  # (feature name, weight)


@dataclass(frozen=True, slots=True)
class ServiceProfile:
    name: str
    version: str
    convention: str  # how its LLM client instrumentation writes hosted calls


PROVIDERS: dict[str, ProviderProfile] = {
    p.name: p
    for p in (
        ProviderProfile(
            "openai", "api.openai.com", 443, "opentelemetry.instrumentation.openai_v2", 0.02, 0.004, 0.002,
            "InternalServerError",
        ),
        ProviderProfile(
            "anthropic", "api.anthropic.com", 443, "opentelemetry.instrumentation.anthropic", 0.015, 0.006, 0.002,
            "OverloadedError",
        ),
        ProviderProfile(
            "gcp.gemini", "generativelanguage.googleapis.com", 443, "opentelemetry.instrumentation.google_genai",
            0.01, 0.004, 0.002, "ServerError",
        ),
        ProviderProfile(
            "mistral_ai", "api.mistral.ai", 443, "opentelemetry.instrumentation.mistralai", 0.01, 0.004, 0.002,
            "SDKError",
        ),
        # The app reaches vLLM through the OpenAI SDK, so its client span comes from openai_v2;
        # vLLM queues instead of rate limiting, and aborts rather than timing out.
        ProviderProfile(
            "vllm", "vllm-llama.serving.svc", 8000, "opentelemetry.instrumentation.openai_v2", 0.0, 0.001, 0.003,
            "InternalServerError", self_hosted=True,
        ),
    )
}  # fmt: skip

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
# A customer fine-tune that no public price list can know: the "unpriced models" page needs one.
UNPRICED_FINE_TUNE = "ft:invoice-extractor-v3"

MODELS: dict[str, ModelProfile] = {
    m.name: m
    for m in (
        ModelProfile("gpt-4o", "openai", "gpt-4o-2024-08-06", ("fp_a7d06e42a7", "fp_07871e2ad8"), 0.45, 80),
        ModelProfile(
            "gpt-4o-mini", "openai", "gpt-4o-mini-2024-07-18", ("fp_560af6e559", "fp_01aeff40ea"), 0.35, 110,
        ),
        ModelProfile("gpt-4.1", "openai", "gpt-4.1-2025-04-14", ("fp_b3f1157249",), 0.5, 75, output_scale=1.1),
        ModelProfile("gpt-4.1-mini", "openai", "gpt-4.1-mini-2025-04-14", ("fp_6f2eabb9a5",), 0.35, 120),
        ModelProfile(
            "o3-mini", "openai", "o3-mini-2025-01-31", ("fp_42bfad963b",), 1.2, 150, reasoning=True,
        ),
        ModelProfile(
            "claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5-20250929", (), 0.8, 65, output_scale=1.25,
            snapshot_style="anthropic",
        ),
        ModelProfile(
            "claude-haiku-4-5", "anthropic", "claude-haiku-4-5-20251001", (), 0.45, 110, snapshot_style="anthropic",
        ),
        ModelProfile(
            "claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-20241022", (), 0.5, 95,
            snapshot_style="anthropic",
        ),
        ModelProfile(
            "gemini-2.5-flash", "gcp.gemini", "gemini-2.5-flash", (), 0.4, 180, output_scale=0.9,
            snapshot_style="gemini",
        ),
        ModelProfile(
            "mistral-small-latest", "mistral_ai", "mistral-small-2506", (), 0.3, 130, snapshot_style="mistral",
        ),
        ModelProfile(UNPRICED_FINE_TUNE, "openai", UNPRICED_FINE_TUNE, ("fp_9c1e3b7d20",), 0.4, 100),
        # vLLM: ttft and speed here are the engine's own (prefill, per-request decode at low load).
        ModelProfile(LLAMA_8B, "vllm", LLAMA_8B, (), 0.0, 85, prefill_tokens_per_s=9_000.0, snapshot_style="vllm"),
    )
}  # fmt: skip

SERVICES: dict[str, ServiceProfile] = {
    s.name: s
    for s in (
        ServiceProfile("support-api", "2.14.1", GENAI),
        ServiceProfile("docs-api", "1.8.0", GENAI),
        # Instrumented with LlamaIndex + OpenInference by its team.
        ServiceProfile("search-api", "0.9.3", OPENINFERENCE),
        ServiceProfile("devtools-api", "3.2.0", GENAI),
        # Pinned to an old instrumentation release: deprecated attribute names.
        ServiceProfile("ingest-worker", "1.1.7", GENAI_LEGACY),
    )
}

FEATURES: dict[str, FeatureProfile] = {
    f.name: f
    for f in (
        FeatureProfile(
            "support-chat", "support-api", "POST /v1/chat", True, "/v1/chat",
            (("gpt-4o-mini", 0.45), ("claude-sonnet-4-5", 0.25), ("gpt-4o", 0.15), ("gemini-2.5-flash", 0.10),
             ("claude-haiku-4-5", 0.05)),
            input_median=2200, input_sigma=0.6, output_median=260, output_sigma=0.7, max_tokens=1024,
            stream_p=0.95, cache_hit_p=0.75, cache_share=0.6, validation_fail_p=0.0, temperature=0.7,
            pre_span="retrieve_context", pre_span_p=0.6, tool_calls_p=0.08, content_capture_p=0.02,
            conversational=True,
        ),
        FeatureProfile(
            "summarize", "docs-api", "POST /v1/summarize", True, "/v1/summarize",
            (("claude-3-5-haiku-latest", 0.35), ("gpt-4.1-mini", 0.25), (LLAMA_8B, 0.25), ("gemini-2.5-flash", 0.15)),
            input_median=6500, input_sigma=0.7, output_median=420, output_sigma=0.5, max_tokens=2048,
            stream_p=0.5, cache_hit_p=0.15, cache_share=0.2, validation_fail_p=0.01, temperature=0.3,
            content_capture_p=0.01,
        ),
        FeatureProfile(
            "search-rerank", "search-api", "POST /v1/search", True, "/v1/search",
            ((LLAMA_8B, 0.7), ("gpt-4o-mini", 0.3)),
            input_median=1400, input_sigma=0.4, output_median=60, output_sigma=0.5, max_tokens=256,
            stream_p=0.0, cache_hit_p=0.4, cache_share=0.5, validation_fail_p=0.02, temperature=0.0,
            pre_span="vector_search", pre_span_p=1.0,
        ),
        FeatureProfile(
            "code-review", "devtools-api", "review_pull_request", False, None,
            (("o3-mini", 0.35), ("claude-sonnet-4-5", 0.40), ("gpt-4.1", 0.25)),
            input_median=9000, input_sigma=0.8, output_median=900, output_sigma=0.6, max_tokens=8192,
            stream_p=0.3, cache_hit_p=0.5, cache_share=0.45, validation_fail_p=0.04, temperature=0.2,
            validates=True,
        ),
        FeatureProfile(
            "extraction", "ingest-worker", "extract_document_fields", False, None,
            (("gpt-4o-mini", 0.45), (UNPRICED_FINE_TUNE, 0.2), ("gpt-4.1-mini", 0.2), ("mistral-small-latest", 0.15)),
            input_median=3000, input_sigma=0.5, output_median=350, output_sigma=0.4, max_tokens=1024,
            stream_p=0.0, cache_hit_p=0.3, cache_share=0.4, validation_fail_p=0.08, temperature=0.0,
            validates=True,
        ),
    )
}  # fmt: skip

TENANTS: dict[str, TenantProfile] = {
    t.name: t
    for t in (
        TenantProfile(
            "acme", 0.40, -5, 500,
            (("support-chat", 0.45), ("summarize", 0.2), ("search-rerank", 0.2), ("code-review", 0.05),
             ("extraction", 0.1)),
        ),
        TenantProfile(
            "globex", 0.30, 1, 300,
            (("support-chat", 0.2), ("summarize", 0.15), ("search-rerank", 0.15), ("code-review", 0.4),
             ("extraction", 0.1)),
        ),
        TenantProfile(
            "initech", 0.20, -8, 150,
            (("support-chat", 0.1), ("summarize", 0.2), ("search-rerank", 0.1), ("code-review", 0.1),
             ("extraction", 0.5)),
        ),
        TenantProfile(
            "umbrella", 0.10, 9, 80,
            (("support-chat", 0.3), ("summarize", 0.3), ("search-rerank", 0.3), ("code-review", 0.1)),
        ),
    )
}  # fmt: skip

VLLM_SERVICE = "vllm-serving"
VLLM_VERSION = "0.11.0"
# Replicas behind the vLLM service; the older one still runs the V0 engine, which sets
# gen_ai.response.model on its span (V1 does not), so Observatory sees both shapes.
VLLM_INSTANCES: tuple[tuple[str, bool], ...] = (("vllm-0", False), ("vllm-1", False), ("vllm-legacy-0", True))


def heaviest_feature(tenant: str) -> str:
    """The feature a tenant uses most: where a runaway client would hurt the bill."""
    return max(TENANTS[tenant].features, key=lambda fw: fw[1])[0]


@dataclass(frozen=True, slots=True)
class SimulatedGpu:
    """A GPU of the simulated serving tier, as NVML would name it."""

    uuid: str
    model: str
    memory_bytes: int
    idle_watts: float
    max_watts: float


H100_SXM = "NVIDIA H100 80GB HBM3"
A100_SXM = "NVIDIA A100-SXM4-80GB"
_GIB = 1024**3
# The GPUs each vLLM instance runs on (one GPU each: an 8B model fits); the legacy replica is
# on an older A100. The shipped GPU price catalog prices both (provider lambda by default).
VLLM_GPUS: dict[str, tuple[SimulatedGpu, ...]] = {
    "vllm-0": (SimulatedGpu("GPU-3f6c2a0e-8d1b-4b7e-9c55-0a1d2e3f4a50", H100_SXM, 80 * _GIB, 70.0, 700.0),),
    "vllm-1": (SimulatedGpu("GPU-9a4e7b21-5c3d-4f60-8e19-1b2c3d4e5f61", H100_SXM, 80 * _GIB, 70.0, 700.0),),
    "vllm-legacy-0": (SimulatedGpu("GPU-c1d2e3f4-0a9b-4c8d-a7e6-2f3a4b5c6d72", A100_SXM, 80 * _GIB, 55.0, 400.0),),
}
