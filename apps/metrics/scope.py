"""Who is asking, as the metrics layer sees it: the tenants a person may see.

A Scope is applied by the query layer on top of a question's filters, to every figure,
totals included. It lives here, on its own and free of Django models, so that
apps.accounts.access (which builds one from a user) and the query layer (which applies it)
both depend on this module and never on each other: no import cycle between accounts and
metrics (tests/metrics/test_imports.py fails on one).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["UNATTRIBUTED", "Scope"]

# The tenant of traffic that carries none (docs/metrics.md): a list of tenants never grants it.
UNATTRIBUTED = ""


@dataclass(frozen=True)
class Scope:
    """None = every tenant, unattributed traffic included (staff). A tuple = only these tenants,
    and never the unattributed tenant '' even if listed; () = nothing at all.
    apps.accounts.access.scope_for makes one from a user.
    """

    tenants: tuple[str, ...] | None = None

    @classmethod
    def everything(cls) -> Scope:
        return cls(tenants=None)

    @classmethod
    def nothing(cls) -> Scope:
        return cls(tenants=())

    @property
    def limited(self) -> bool:
        return self.tenants is not None

    def visible_tenants(self, requested: tuple[str, ...] = ()) -> tuple[str, ...] | None:
        """The tenant filter to read with, given the tenants a question asks for: None = no
        tenant filter, () = nothing visible. Asking for a tenant outside the scope gives no
        data rather than an error, so a name cannot be probed for."""
        if self.tenants is None:
            return requested or None
        allowed = [tenant for tenant in self.tenants if tenant != UNATTRIBUTED]
        if requested:
            allowed = [tenant for tenant in requested if tenant in allowed]
        return tuple(dict.fromkeys(allowed))
