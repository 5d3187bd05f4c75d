from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.gpu.partitions import METRIC_POINTS
from apps.gpu.scrape import scrape_due


@shared_task(name="gpu.scrape_endpoints")
def scrape_endpoints() -> dict[str, int]:
    """Scrape the ScrapeTargets that are due (each claims itself; see apps.gpu.scrape)."""
    outcomes = scrape_due()
    return {
        "scraped": sum(1 for o in outcomes if o.ok),
        "failed": sum(1 for o in outcomes if not o.ok),
        "points": sum(o.points for o in outcomes),
    }


@shared_task(name="gpu.maintain_partitions")
def maintain_partitions() -> dict[str, int]:
    """Idempotent: creates the coming days' metric partitions, drops those past retention."""
    created, dropped = METRIC_POINTS.maintain(
        retention_days=settings.METRIC_RETENTION_DAYS, ahead_days=settings.METRIC_PARTITIONS_AHEAD_DAYS
    )
    return {"created": len(created), "dropped": len(dropped)}


@shared_task(name="gpu.attribute_costs")
def attribute_costs() -> dict[str, int]:
    """Attribute the GPU cost of due intervals, and redo those that late data changed
    (each project's cursor is claimed with a lease; see apps.gpu.sweep)."""
    from apps.gpu.sweep import sweep

    results = sweep()
    return {
        "projects": sum(1 for r in results if not r.skipped),
        "busy": sum(1 for r in results if r.skipped),
        "intervals": sum(r.due for r in results),
        "late_intervals": sum(r.late for r in results),
        "spans_changed": sum(r.spans_changed for r in results),
    }
