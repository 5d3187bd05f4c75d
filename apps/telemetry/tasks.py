from __future__ import annotations

from celery import shared_task

from apps.telemetry.partitions import maintain_partitions


@shared_task(name="telemetry.maintain_partitions")
def maintain_partitions_task() -> dict[str, int]:
    """Idempotent: creates the coming days' partitions, drops those past retention."""
    created, dropped = maintain_partitions()
    return {"created": len(created), "dropped": len(dropped)}
