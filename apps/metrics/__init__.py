"""The one metrics query layer: every figure a page, the JSON API, an alert or an email
shows comes from apps.metrics.query (docs/metrics.md holds the definitions)."""
