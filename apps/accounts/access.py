"""Who may see which tenants: the one place that turns a user into a metrics Scope.

Every page, API view, CSV export and email asks `scope_for(user)` and hands the Scope to
the metrics query layer, which applies it to every figure, totals included. The rules:

- staff (and superusers) see everything;
- a user whose TenantAccess has `all_tenants` sees everything, unattributed traffic included;
- a user with a TenantAccess list sees only those tenants (never unattributed traffic);
- anyone else (no TenantAccess row, an inactive or anonymous user) sees nothing: access
  is denied by default, so a new account shows no data until someone grants it.
"""

from __future__ import annotations

from typing import Any

from apps.accounts.models import TenantAccess
from apps.metrics.scope import Scope


def scope_for(user: Any) -> Scope:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return Scope.nothing()
    if user.is_staff or user.is_superuser:
        return Scope.everything()
    try:
        access = user.tenant_access
    except TenantAccess.DoesNotExist:
        return Scope.nothing()
    if access.all_tenants:
        return Scope.everything()
    # The empty string is the unattributed tenant: a list of tenants never grants it.
    return Scope(tenants=tuple(sorted({tenant for tenant in access.tenants if tenant})))
