from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

# (label, url name, url names that light it up). A page not built yet is left out.
NAVIGATION = (
    ("Overview", "overview", ("overview",)),
    ("Features", "features", ("features", "feature-detail")),
    ("Tenants", "tenants", ("tenants", "tenant-detail")),
    ("Models", "models", ("models", "model-detail")),
    ("Compare", "compare", ("compare",)),
    ("Traces", "traces", ("traces", "trace-detail")),
    ("Prices", "prices", ("prices",)),
    ("Findings", "findings", ("findings", "finding-detail")),
    (
        "Alerts",
        "alerts-index",
        (
            "alerts-index",
            "alert-rules",
            "alert-rule",
            "alert-rule-new",
            "alert-channels",
            "alert-channel",
            "alert-channel-new",
            "alert-history",
        ),
    ),
    ("Reviews", "reports:reviews", ("reviews", "review-detail", "review-preview", "review-settings")),
    ("GPU tier", "gpu-tier", ("gpu-tier", "gpu-compare")),
)


def navigation(request: HttpRequest) -> dict[str, Any]:
    links = []
    for label, url_name, names in NAVIGATION:
        try:
            links.append({"label": label, "url": reverse(url_name), "names": names})
        except NoReverseMatch:
            continue
    return {"nav_links": links}
