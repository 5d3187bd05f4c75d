"""Findings in admin: searchable and filterable; what the detectors wrote (evidence, slice,
signature, the moments) is read-only, status and the acknowledgement stay editable."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from apps.insights.models import Finding


@admin.register(Finding)
class FindingAdmin(admin.ModelAdmin):
    list_display = ("title", "kind", "metric", "severity", "status", "tenant", "started_at", "last_seen_at")
    list_filter = ("kind", "status", "severity", "metric")
    search_fields = ("title", "signature", "tenant")
    date_hierarchy = "last_seen_at"
    readonly_fields = (
        "project", "kind", "metric", "slice", "tenant", "signature", "title", "evidence_json",
        "started_at", "first_seen_at", "last_seen_at", "resolved_at",
    )  # fmt: skip
    exclude = ("evidence",)

    @admin.display(description="Evidence")
    def evidence_json(self, finding: Finding) -> SafeString:
        return format_html("<pre>{}</pre>", json.dumps(finding.evidence, indent=2, sort_keys=True))
