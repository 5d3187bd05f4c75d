"""scope_for: who sees which tenants. Staff everything, TenantAccess what it grants, and
everyone else nothing (deny by default)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from apps.accounts.access import scope_for
from apps.accounts.models import TenantAccess
from apps.metrics.query import Scope

pytestmark = pytest.mark.django_db


def test_owner_sees_everything(owner: Any) -> None:
    assert scope_for(owner) == Scope.everything()


def test_teammate_with_all_tenants_sees_everything(teammate: Any) -> None:
    assert scope_for(teammate) == Scope.everything()


def test_outsider_sees_only_their_tenant(outsider: Any) -> None:
    assert scope_for(outsider) == Scope(tenants=("globex",))


def test_superuser_without_staff_flag_sees_everything() -> None:
    user = get_user_model().objects.create_user("root", is_superuser=True)
    assert scope_for(user) == Scope.everything()


def test_user_without_access_row_sees_nothing() -> None:
    user = get_user_model().objects.create_user("newcomer")
    assert scope_for(user) == Scope(tenants=())


def test_empty_tenant_list_sees_nothing() -> None:
    user = get_user_model().objects.create_user("emptied")
    TenantAccess.objects.create(user=user, tenants=[])
    assert scope_for(user) == Scope(tenants=())


def test_anonymous_and_inactive_users_see_nothing(outsider: Any) -> None:
    assert scope_for(AnonymousUser()) == Scope(tenants=())
    assert scope_for(None) == Scope(tenants=())
    outsider.is_active = False
    outsider.save()
    assert scope_for(outsider) == Scope(tenants=())


def test_a_tenant_list_never_grants_unattributed_traffic() -> None:
    user = get_user_model().objects.create_user("listed")
    TenantAccess.objects.create(user=user, tenants=["globex", "", "acme", "globex"])
    assert scope_for(user) == Scope(tenants=("acme", "globex"))


def test_clean_sorts_and_drops_repeated_tenants(outsider: Any) -> None:
    access = outsider.tenant_access
    access.tenants = ["initech ", "globex", "initech"]
    access.full_clean()
    assert access.tenants == ["globex", "initech"]


def test_tenant_access_is_edited_inline_on_the_user_admin_page(owner: Any, outsider: Any) -> None:
    owner.is_superuser = True
    owner.save()
    client = Client()
    client.force_login(owner)
    page = client.get(f"/admin/auth/user/{outsider.pk}/change/")
    assert page.status_code == 200
    assert b"tenant_access-0-tenants" in page.content
    assert b"globex" in page.content
    assert b"read_keys-TOTAL_FORMS" in page.content


def test_admin_grants_tenants_through_the_user_page(owner: Any) -> None:
    owner.is_superuser = True
    owner.save()
    user = get_user_model().objects.create_user("analyst")
    client = Client()
    client.force_login(owner)
    page = client.get(f"/admin/auth/user/{user.pk}/change/")
    form = page.context["adminform"].form
    data = {key: value for key, value in form.initial.items() if value is not None and key != "password"}
    data.update(
        {
            "username": "analyst",
            "date_joined_0": "2025-01-01",
            "date_joined_1": "00:00:00",
            "tenant_access-TOTAL_FORMS": "1",
            "tenant_access-INITIAL_FORMS": "0",
            "tenant_access-0-tenants": "globex, initech",
            "read_keys-TOTAL_FORMS": "0",
            "read_keys-INITIAL_FORMS": "0",
        }
    )
    data.pop("last_login", None)
    data.pop("groups", None)
    data.pop("user_permissions", None)
    response = client.post(f"/admin/auth/user/{user.pk}/change/", data)
    assert response.status_code == 302, response.context["errors"] if response.context else response
    user.refresh_from_db()
    assert scope_for(user) == Scope(tenants=("globex", "initech"))
