"""Drift detector (placeholder until it lands): see episodes.py for the contract."""

from __future__ import annotations

from datetime import datetime

from apps.insights.models import Finding


def detect(project_id: int, now: datetime) -> list[Finding]:
    """Run this family's tests for one project at `now` and record the episodes."""
    return []
