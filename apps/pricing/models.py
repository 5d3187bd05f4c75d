"""Versioned prices: one row per (provider, model pattern, effective period)."""

from __future__ import annotations

from django.db import models


class Price(models.Model):
    provider = models.CharField(max_length=64, help_text="gen_ai provider name, e.g. openai, anthropic, vllm")
    model_pattern = models.CharField(
        max_length=200, help_text="Python regular expression matched against the whole model name (fullmatch)"
    )
    effective_from = models.DateTimeField()
    effective_to = models.DateTimeField(null=True, blank=True, help_text="exclusive; empty = still in force")
    # USD per one million tokens.
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cached_input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cache_write_per_mtok = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    reasoning_per_mtok = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, help_text="empty = priced as output"
    )
    source_url = models.URLField(max_length=500, blank=True)
    retrieved_on = models.DateField(null=True, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["provider", "model_pattern", "-effective_from"]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model_pattern} from {self.effective_from:%Y-%m-%d}"
