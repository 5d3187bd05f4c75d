from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _fresh_gpu_caches() -> Iterator[None]:
    # Process-level caches must not carry rows from one test's (rolled back) database to the next.
    from apps.gpu import store
    from apps.gpu.partitions import METRIC_POINTS

    store.forget_known_series()
    METRIC_POINTS.forget()
    yield
    store.forget_known_series()
    METRIC_POINTS.forget()


@pytest.fixture(autouse=True)
def _truncate_metrics_after_transactional_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Django's flush skips unmanaged tables: the metric tables are ours (RunSQL)."""
    yield
    marker = request.node.get_closest_marker("django_db")
    transactional = (marker is not None and marker.kwargs.get("transaction")) or "live_server" in request.fixturenames
    if transactional:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("TRUNCATE gpu_metric_point, gpu_metric_series")


# GPU cost attribution (test_attribution*.py).


@pytest.fixture
def t0() -> datetime:
    """The start of an interval two hours ago (inside every retention and lookback)."""
    from apps.gpu.attribution import floor_interval

    return floor_interval(datetime.now(UTC) - timedelta(hours=2), 300)


@pytest.fixture
def h100_price(db: None) -> Any:
    from apps.gpu.models import GpuPrice

    return GpuPrice.objects.create(
        provider="test", gpu_model_pattern="NVIDIA H100.*", effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        usd_per_gpu_hour=Decimal("3.60"),
    )  # fmt: skip
