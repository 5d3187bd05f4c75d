"""Named incidents: scenarios that change the simulated traffic inside a time window.

A spec reads `NAME:TARGET@START[..END]`, e.g. `silent-model-change:support-chat@-2d`,
`p99-regression:gpt-4o@2026-11-18T09:00..2026-11-19T09:00` or `error-burst:anthropic@-3h..-2h`.
Times are `now`, relative to now (`-2d`, `-6h30m`, `+10m`) or ISO 8601 (naive means UTC);
without END the incident lasts to the end of the run.

To add a scenario, subclass `Incident`, give it a `name`, override `traffic_multiplier` (more or
fewer requests) and/or `apply` (tweak one call's drawn parameters before its timing is derived),
and decorate it with `@register`. Each incident draws from its own per-request Random, so the
requests it does not touch are identical to a run without it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from typing import ClassVar

from collectors.simulator.catalog import FEATURES, MODELS, PROVIDERS, TENANTS, heaviest_feature
from collectors.simulator.plan import (
    RATE_LIMIT_ERROR,
    CallPlan,
    RequestPlan,
    new_fingerprint,
    set_output_tokens,
)
from collectors.simulator.traffic import from_ns, parse_time, to_ns


class Incident:
    """Base scenario: a target and a window. Subclasses override whichever hooks they need."""

    name: ClassVar[str]
    target_help: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, target: str, start_ns: int, end_ns: int | None, spec: str) -> None:
        self.target = target
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.spec = spec
        self.check_target()

    def check_target(self) -> None:
        """Raise ValueError naming the valid choices when the target does not exist."""

    def active(self, at_ns: int) -> bool:
        return at_ns >= self.start_ns and (self.end_ns is None or at_ns < self.end_ns)

    def traffic_multiplier(self, tenant: str, feature: str, at_ns: int) -> float:
        """How many times the usual traffic of (tenant, feature) arrives at this instant."""
        return 1.0

    def apply(self, request: RequestPlan, call: CallPlan, rng: random.Random) -> bool:
        """Tweak a call of an active request; return True when it changed something."""
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


INCIDENTS: dict[str, type[Incident]] = {}


def register(cls: type[Incident]) -> type[Incident]:
    INCIDENTS[cls.name] = cls
    return cls


@register
class SilentModelChange(Incident):
    name = "silent-model-change"
    target_help = "FEATURE"
    description = (
        "From START the providers answer FEATURE's requested models with a new snapshot (another "
        "gen_ai.response.model and system fingerprint) whose answers are ~60% longer."
    )
    output_growth = 1.6

    def check_target(self) -> None:
        _check_choice("feature", self.target, FEATURES)

    def apply(self, request: RequestPlan, call: CallPlan, rng: random.Random) -> bool:
        # Self-hosted models change only when we deploy them; this is a hosted provider's doing.
        if request.feature.name != self.target or call.failed or call.provider.self_hosted:
            return False
        call.response_model = drifted_snapshot(call.model.name, call.model.snapshot_style, from_ns(self.start_ns))
        if call.system_fingerprint is not None:
            call.system_fingerprint = new_fingerprint(f"{call.model.name}:{self.start_ns}")
        visible = call.output_tokens - call.reasoning_tokens
        set_output_tokens(
            call, int(visible * self.output_growth * rng.uniform(0.9, 1.1)), int(call.reasoning_tokens * 1.2)
        )
        return True


@register
class P99Regression(Incident):
    name = "p99-regression"
    target_help = "MODEL|FEATURE"
    description = (
        "From START, 10% of calls to MODEL (the requested model name), or of FEATURE's calls, take 5x as "
        "long: p95 and p99 move, the median does not."
    )
    # Strong enough to be told apart from the tail's own noise at the demo's volume (~30 calls an
    # hour of one feature); 5% x 4 hardly moved a p99 that is already ~4x the median.
    share = 0.10
    slowdown = 5.0

    def check_target(self) -> None:
        if self.target not in FEATURES:
            _check_choice("model or feature", self.target, {**MODELS, **FEATURES})

    def _hits(self, request: RequestPlan, call: CallPlan) -> bool:
        if self.target in FEATURES:
            return request.feature.name == self.target
        return call.model.name == self.target

    def apply(self, request: RequestPlan, call: CallPlan, rng: random.Random) -> bool:
        if not self._hits(request, call) or call.failed or rng.random() >= self.share:
            return False
        call.latency_factor *= self.slowdown
        return True


@register
class CostSpike(Incident):
    name = "cost-spike"
    target_help = "TENANT[/FEATURE]"
    description = (
        "From START, TENANT sends 5x its usual traffic to FEATURE (default: its busiest feature), "
        "like a client stuck in a retry loop."
    )
    multiplier = 5.0

    def check_target(self) -> None:
        tenant, _, feature = self.target.partition("/")
        _check_choice("tenant", tenant, TENANTS)
        self.tenant = tenant
        self.feature = feature or heaviest_feature(tenant)
        _check_choice("feature", self.feature, FEATURES)

    def traffic_multiplier(self, tenant: str, feature: str, at_ns: int) -> float:
        if tenant == self.tenant and feature == self.feature and self.active(at_ns):
            return self.multiplier
        return 1.0

    def apply(self, request: RequestPlan, call: CallPlan, rng: random.Random) -> bool:
        return request.tenant.name == self.tenant and request.feature.name == self.feature


@register
class CacheHitDrop(Incident):
    name = "cache-hit-drop"
    target_help = "FEATURE|TENANT"
    description = (
        "From START, the provider's prompt cache stops matching FEATURE's (or TENANT's) prompts, like "
        "a prompt template that gained a timestamp at its top: cached input falls to ~0, Anthropic "
        "writes the prefix again on every call, and uncached input makes first tokens slower and "
        "input cost higher."
    )
    # A few calls still hit: a cache that collapsed, not a switch turned off.
    residual_hit_p = 0.02

    def check_target(self) -> None:
        if self.target not in FEATURES:
            _check_choice("feature or tenant", self.target, {**FEATURES, **TENANTS})

    def apply(self, request: RequestPlan, call: CallPlan, rng: random.Random) -> bool:
        if self.target not in (request.feature.name, request.tenant.name) or not call.cache_read_tokens:
            return False
        if rng.random() < self.residual_hit_p:
            return False
        if call.provider.name == "anthropic":
            # Explicit cache_control: a miss writes the prefix, charged at the write rate.
            call.cache_write_tokens = call.cache_read_tokens
        call.cache_read_tokens = 0
        return True


@register
class ErrorBurst(Incident):
    name = "error-burst"
    target_help = "PROVIDER|MODEL"
    description = (
        "From START, about a third of the calls to PROVIDER (or to MODEL) fail: rate limits (429), the "
        "provider's overloaded/5xx error, and plain 500s, each with its error.type, as during a "
        "provider's partial outage. The app resends rate-limited calls as usual."
    )
    share = 0.33
    # (share of the failures, error type, message, seconds until the error came back)
    causes: ClassVar[tuple[tuple[float, str, str, tuple[float, float]], ...]] = (
        (0.45, RATE_LIMIT_ERROR, "Error code: 429 - rate limit exceeded", (0.05, 0.4)),
        (0.35, "", "Error code: 529 - overloaded", (0.2, 2.5)),
        (0.20, "InternalServerError", "Error code: 500 - internal server error", (0.3, 4.0)),
    )

    def check_target(self) -> None:
        if self.target not in PROVIDERS:
            _check_choice("provider or model", self.target, {**PROVIDERS, **MODELS})

    def apply(self, request: RequestPlan, call: CallPlan, rng: random.Random) -> bool:
        target = call.provider.name if self.target in PROVIDERS else call.model.name
        if target != self.target or call.failed or rng.random() >= self.share:
            return False
        _, error_type, message, (low, high) = rng.choices(self.causes, weights=[c[0] for c in self.causes])[0]
        # The middle cause is the provider's own overloaded/5xx error type (OverloadedError, ...).
        call.error_type = error_type or call.provider.server_error_type
        call.error_message = message
        call.fixed_duration_s = rng.uniform(low, high)
        call.output_tokens = call.reasoning_tokens = 0
        call.vllm = None  # a rejected or failed request writes no llm_request span
        return True


def drifted_snapshot(model: str, style: str, at: datetime) -> str:
    """The name a provider gives a new snapshot of `model` released at `at`."""
    base = model.removesuffix("-latest")
    if style == "anthropic":
        return f"{base}-{at:%Y%m%d}"
    if style == "gemini":
        return f"{base}-preview-{at:%m-%Y}"
    if style == "mistral":
        return f"{base.removesuffix('-small')}-small-{at:%y%m}"
    return f"{base}-{at:%Y-%m-%d}"


def parse_incident(spec: str, now: datetime) -> Incident:
    """Build an incident from `NAME:TARGET@START[..END]`; relative times count from `now`."""
    name, sep, rest = spec.partition(":")
    if not sep or name not in INCIDENTS:
        raise ValueError(f"unknown incident {name!r} in {spec!r}; known: {', '.join(sorted(INCIDENTS))}")
    cls = INCIDENTS[name]
    target, sep, window = rest.rpartition("@")
    if not sep or not target:
        raise ValueError(f"incident {spec!r} must read {name}:{cls.target_help}@START[..END]")
    start_text, _, end_text = window.partition("..")
    start = parse_time(start_text, now)
    end = parse_time(end_text, now) if end_text else None
    if end is not None and end <= start:
        raise ValueError(f"incident {spec!r} ends before it starts")
    return cls(target, to_ns(start), to_ns(end) if end else None, spec)


def describe_incidents() -> str:
    scenarios = [f"{name}:{cls.target_help}@START[..END]\n    {cls.description}" for name, cls in INCIDENTS.items()]
    targets = [
        f"TENANT: {', '.join(TENANTS)}",
        f"FEATURE: {', '.join(FEATURES)}",
        f"MODEL: {', '.join(MODELS)}",
        f"PROVIDER: {', '.join(PROVIDERS)}",
    ]
    return "\n".join(scenarios + targets)


def _check_choice(kind: str, value: str, choices: Mapping[str, object]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")
