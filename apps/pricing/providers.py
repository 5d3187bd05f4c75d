"""Provider names as prices know them: OTel `gen_ai.provider.name` values, plus the aliases
other conventions and older instrumentations send.

This is the one alias table. Price rows are stored under the canonical name; spans keep the
name they arrived with, and every lookup (Python and SQL alike) goes through here.
"""

from __future__ import annotations

# Canonical names, as OTel's gen_ai.provider.name registry spells them.
OPENAI = "openai"
ANTHROPIC = "anthropic"
GEMINI = "gcp.gemini"
MISTRAL = "mistral_ai"

# alias (lower case) -> canonical name. Sources: the deprecated gen_ai.system values,
# OpenInference's llm.provider / llm.system ("google", "mistralai", "vertexai"), LiteLLM and
# Langfuse provider keys ("gemini", "vertex_ai", "mistral").
PROVIDER_ALIASES: dict[str, str] = {
    "gemini": GEMINI,
    "google": GEMINI,
    "google_genai": GEMINI,
    "gcp.gen_ai": GEMINI,
    "gcp.vertex_ai": GEMINI,
    "vertex_ai": GEMINI,
    "vertexai": GEMINI,
    "mistral": MISTRAL,
    "mistralai": MISTRAL,
}

# Self-hosted serving tiers: priced from GPU-hours (GPU price catalog x measured GPU time,
# apps.gpu.attribution), not from a per-token catalog. Token pricing leaves their spans alone
# and the unpriced listing does not nag about them.
SELF_HOSTED_PROVIDERS: frozenset[str] = frozenset({"vllm"})


def canonical_provider(name: str | None) -> str | None:
    """The canonical provider name for `name` (case and surrounding space ignored)."""
    if name is None:
        return None
    key = name.strip().lower()
    if not key:
        return None
    return PROVIDER_ALIASES.get(key, key)


def is_self_hosted(name: str | None) -> bool:
    return canonical_provider(name) in SELF_HOSTED_PROVIDERS
