"""Fixtures shared by every test: real PostgreSQL (embedded when DATABASE_URL is unset),
a project with an ingest key, and the base set of users."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from apps.accounts.models import IngestKey, Project


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """One test database per run, so two runs on the same (embedded) server never share one."""
    from django.conf import settings

    settings.DATABASES["default"]["TEST"]["NAME"] = f"test_observatory_{os.getpid()}"


@pytest.fixture(autouse=True)
def _fast_passwords(settings: object) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # type: ignore[attr-defined]
    # A background thread has its own connection and cannot see a test's uncommitted rows:
    # the test that covers the refresh turns it on with committed data.
    settings.DASHBOARD_BACKGROUND_REFRESH = False  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    # Process-level caches must not carry rows from one test's (rolled back) database to the next.
    from apps.dashboard import page_reads
    from apps.metrics import days
    from apps.pricing.services import PriceBook
    from apps.telemetry import partitions, views

    def forget() -> None:
        page_reads.forget()
        days.CACHE.clear()
        days.HOURS.clear()
        partitions.forget_known_partitions()
        views.forget_cached_keys()
        PriceBook.forget()

    forget()
    yield
    forget()


@pytest.fixture(autouse=True)
def _validated_charts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pages write their Plotly figure dicts unvalidated (speed); every test's figures go
    # through graph_objects validation, so a misspelt property fails.
    from apps.dashboard import charts

    monkeypatch.setattr(charts, "VALIDATE", True)


@pytest.fixture
def project(db: None) -> Project:
    return Project.objects.create(name="acme-prod")


@pytest.fixture
def ingest_key(project: Project) -> str:
    _, plaintext = IngestKey.issue(project, "test")
    return plaintext


@pytest.fixture(autouse=True)
def _truncate_spans_after_transactional_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Django's flush skips unmanaged tables, and telemetry_span is one (its DDL is ours).

    The flush also empties the price catalog that migrate loaded: transactional tests
    that price spans ask for the `price_catalog` fixture.
    """
    yield
    marker = request.node.get_closest_marker("django_db")
    transactional = (marker is not None and marker.kwargs.get("transaction")) or "live_server" in request.fixturenames
    if transactional:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("TRUNCATE telemetry_span")


@pytest.fixture
def price_catalog(transactional_db: None) -> None:
    """The shipped price catalog, for transactional tests (a flush empties the table the data
    migration filled). load_prices is an idempotent upsert; the process-wide price book is
    re-read so it holds no rows of an earlier database."""
    import io

    from django.core.management import call_command

    from apps.pricing.services import PriceBook

    call_command("load_prices", stdout=io.StringIO())
    PriceBook.forget()


# The base set of users (STYLE.md): an owner who sees everything, a teammate who sees every
# tenant without being staff, and an outsider who must see nothing but tenant "globex".
PASSWORD = "correct horse battery staple"


@pytest.fixture
def owner(db: None) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("owner", "owner@example.com", PASSWORD, is_staff=True)


@pytest.fixture
def teammate(db: None) -> Any:
    from django.contrib.auth import get_user_model

    from apps.accounts.models import TenantAccess

    user = get_user_model().objects.create_user("teammate", "teammate@example.com", PASSWORD)
    TenantAccess.objects.create(user=user, all_tenants=True)
    return user


@pytest.fixture
def outsider(db: None) -> Any:
    from django.contrib.auth import get_user_model

    from apps.accounts.models import TenantAccess

    user = get_user_model().objects.create_user("outsider", "outsider@example.com", PASSWORD)
    TenantAccess.objects.create(user=user, tenants=["globex"])
    return user


@pytest.fixture(scope="session", autouse=True)
def _end_stray_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Server threads and processes the tests started may leave a connection open to the test
    database; end them so it can be dropped instead of piling up on the embedded server."""
    yield
    from django.db import connection

    with django_db_blocker.unblock(), connection.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
