"""Versioned prices: one row per (provider, model pattern, effective period)."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, models, transaction

from apps.pricing.providers import canonical_provider


class Price(models.Model):
    provider = models.CharField(
        max_length=64,
        help_text="gen_ai.provider.name, e.g. openai, anthropic, gcp.gemini, mistral_ai (aliases are normalised)",
    )
    model_pattern = models.CharField(
        max_length=200,
        help_text=(
            "Regular expression matched against the whole model name, ignoring case. Keep to the syntax "
            "Python and PostgreSQL share: literals, \\. \\d [...] (?:...) ? * + {n,m} |"
        ),
    )
    effective_from = models.DateTimeField()
    effective_to = models.DateTimeField(null=True, blank=True, help_text="exclusive; empty = still in force")
    # USD per one million tokens.
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="cache reads; empty = priced as input"
    )
    cache_write_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="cache writes; empty = priced as input"
    )
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    reasoning_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="empty = priced as output"
    )
    source_url = models.URLField(max_length=500, blank=True)
    retrieved_on = models.DateField(null=True, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["provider", "model_pattern", "-effective_from"]
        constraints = [
            # The catalog's natural key: load_prices upserts on it, so re-running it is a no-op.
            models.UniqueConstraint(
                fields=["provider", "model_pattern", "effective_from"], name="pricing_price_natural_key"
            ),
            models.CheckConstraint(
                condition=models.Q(effective_to__isnull=True) | models.Q(effective_to__gt=models.F("effective_from")),
                name="pricing_price_period_not_empty",
            ),
            # Cost arithmetic rounds half up, which is only the same in Python and SQL for
            # non-negative amounts.
            models.CheckConstraint(
                condition=models.Q(input_per_mtok__gte=0)
                & models.Q(output_per_mtok__gte=0)
                & (models.Q(cached_input_per_mtok__isnull=True) | models.Q(cached_input_per_mtok__gte=0))
                & (models.Q(cache_write_per_mtok__isnull=True) | models.Q(cache_write_per_mtok__gte=0))
                & (models.Q(reasoning_per_mtok__isnull=True) | models.Q(reasoning_per_mtok__gte=0)),
                name="pricing_price_rates_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model_pattern} from {self.effective_from:%Y-%m-%d}"

    def clean(self) -> None:
        super().clean()
        self.provider = canonical_provider(self.provider) or ""
        if not self.provider:
            raise ValidationError({"provider": "A provider is required."})
        problem = pattern_problem(self.model_pattern)
        if problem:
            raise ValidationError({"model_pattern": problem})


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be a price pattern, or None when it can.

    Ingest matches with Python's re, and SQL tools may match with PostgreSQL's `~*`: a
    pattern must compile in both, so an admin edit can never break either.
    """
    if not pattern:
        return "A pattern is required."
    try:
        re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        return f"Not a valid Python regular expression: {exc}"
    try:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SELECT '' ~* %s", [f"^(?:{pattern})$"])
    except DatabaseError as exc:
        return f"Not a valid PostgreSQL regular expression: {exc}".strip()
    return None
