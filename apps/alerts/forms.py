"""Forms of the alert pages: a rule, a channel, a silence."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError

from apps.alerts.models import FILTER_FIELD, RULE_DIMENSIONS, AlertRule, Channel, validated_config
from apps.metrics.scope import Scope


def _split(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    for value in values:
        if "\x00" in value:
            raise ValidationError("a value may not hold a NUL character")
    return list(dict.fromkeys(values))


class ListField(forms.CharField):
    """A comma-separated list of names (tenant ids, features, ...)."""

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        return _split(super().to_python(value) or "")


class RuleForm(forms.ModelForm):
    tenants = ListField(required=False, help_text="Comma-separated tenant ids; empty = every tenant.")
    features = ListField(required=False, help_text="Comma-separated; empty = every feature.")
    providers = ListField(required=False, help_text="Comma-separated (openai, anthropic, vllm, ...).")
    model_names = ListField(required=False, label="Models", help_text="Comma-separated model names.")
    group_by = forms.MultipleChoiceField(
        choices=[(dim, dim) for dim in RULE_DIMENSIONS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="One alert per value of these dimensions (e.g. per tenant).",
    )

    class Meta:
        model = AlertRule
        fields = [
            "name",
            "kind",
            "enabled",
            "project",
            "tenants",
            "features",
            "providers",
            "model_names",
            "group_by",
            "distribution",
            "percentile",
            "window_minutes",
            "warning_threshold",
            "critical_threshold",
            "budget_period",
            "min_severity",
            "min_samples",
            "cooldown_minutes",
            "evaluate_every_seconds",
            "channels",
        ]
        widgets = {"channels": forms.CheckboxSelectMultiple}
        help_texts = {
            "percentile": "Digits: 50, 95, 99, 999 (= 99.9th).",
            "warning_threshold": "Latency in ms, error rate as a fraction (0.05), cache drop in points. "
            "Budgets: unused (warning = the forecast passes the budget).",
            "critical_threshold": "Same units; for a budget, the budget in USD.",
            "min_samples": "Fewer calls (or percentile samples) than this in the window: no verdict.",
            "cooldown_minutes": "A still-firing alert is sent again after this long.",
        }

    def __init__(self, *args: Any, scope: Scope, channels: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scope = scope
        cast(forms.ModelMultipleChoiceField, self.fields["channels"]).queryset = channels

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.scope.limited:
            allowed = set(self.scope.visible_tenants() or ())
            tenants = set(data.get("tenants") or [])
            if not tenants or not tenants <= allowed:
                self.add_error("tenants", f"name one or more of your tenants: {', '.join(sorted(allowed)) or 'none'}")
        return data


class ChannelForm(forms.ModelForm):
    to = forms.CharField(required=False, label="Email addresses", help_text="Comma-separated (email channels).")
    url = forms.CharField(
        required=False,
        label="Webhook URL",
        max_length=2000,
        help_text="http:// or https://. Addresses on your own network are allowed (self-hosting).",
    )

    class Meta:
        model = Channel
        fields = ["name", "kind"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["to"].initial = ", ".join(self.instance.config.get("to", []))
            self.fields["url"].initial = self.instance.config.get("url", "")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = data.get("kind")
        raw = {"to": data.get("to") or ""} if kind == Channel.Kind.EMAIL else {"url": (data.get("url") or "").strip()}
        try:
            self.instance.config = validated_config(kind or "", raw)
        except ValidationError as exc:
            for message in exc.message_dict.get("config", exc.messages):
                self.add_error("to" if kind == Channel.Kind.EMAIL else "url", message)
        return data

    def _post_clean(self) -> None:
        # The model's clean() validates the same config again; with the form's own error
        # already on the field, it would only repeat it under a field the form lacks.
        if not self.errors:
            super()._post_clean()  # type: ignore[misc]


class SilenceForm(forms.Form):
    hours = forms.IntegerField(min_value=1, max_value=24 * 30, initial=4, label="Silence for (hours)")
    reason = forms.CharField(required=False, max_length=300)


__all__ = ["FILTER_FIELD", "ChannelForm", "RuleForm", "SilenceForm"]
