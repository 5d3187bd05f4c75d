"""Alert pages: rules (list, create, edit, test, preview), channels, history. Thin: the work
is in evaluate.py, preview.py, services.py and delivery.py.

Who sees what: a tenant-limited person (apps.accounts.access.scope_for) sees the rules
visible to their scope (AlertRule.visible_to), only the alerts and notifications of their
own tenants, and only the channels they own. Creating or editing a rule needs
`alerts.change_alertrule`, a channel `alerts.change_channel` (staff have both).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from apps.accounts.access import scope_for
from apps.alerts.evaluate import judge, worst
from apps.alerts.forms import ChannelForm, RuleForm, SilenceForm
from apps.alerts.models import LEVEL_RANK, AlertRule, AlertState, Channel, Delivery, Notification, Silence
from apps.alerts.preview import preview_rule
from apps.metrics.scope import Scope

if TYPE_CHECKING:
    from django.contrib.auth.models import User

log = logging.getLogger(__name__)


def _invalid_status(request: HttpRequest, *forms: Any) -> int:
    """400 for a submitted form with errors (and a log line naming the fields), else 200."""
    bad = [form for form in forms if form is not None and form.is_bound and form.errors]
    if not bad:
        return 200
    log.info(
        "400 on %r: %s",
        request.path,
        "; ".join(f"{name}: {' '.join(errors)}" for form in bad for name, errors in form.errors.items()),
    )
    return 400


def _can(user: Any, perm: str) -> bool:
    return bool(user.is_staff or user.has_perm(perm))


def _visible_tenant_q(scope: Scope, field: str = "tenant") -> Q:
    """Rows about one tenant the scope may see ('' = not one tenant's: everything-scope only)."""
    if not scope.limited:
        return Q()
    return Q(**{f"{field}__in": list(scope.visible_tenants() or ())})


def visible_rules(scope: Scope) -> list[AlertRule]:
    return [rule for rule in AlertRule.objects.prefetch_related("channels") if rule.visible_to(scope)]


def visible_states(scope: Scope) -> QuerySet[AlertState]:
    return AlertState.objects.filter(_visible_tenant_q(scope)).select_related("rule")


def visible_channels(user: Any, scope: Scope) -> QuerySet[Channel]:
    if scope.limited:
        return Channel.objects.filter(owner=user)
    return Channel.objects.all()


@login_required
def index(request: HttpRequest) -> HttpResponse:
    scope = scope_for(request.user)
    rules = visible_rules(scope)
    rule_ids = [rule.pk for rule in rules]
    open_alerts = visible_states(scope).filter(rule__in=rule_ids).exclude(level="ok").order_by("-opened_at")
    levels: dict[int, str] = {}
    for state in visible_states(scope).filter(rule__in=rule_ids).exclude(level="ok"):
        if levels.get(state.rule_id) != "critical":
            levels[state.rule_id] = state.level
    for rule in rules:
        rule.current_level = levels.get(rule.pk, "ok")  # type: ignore[attr-defined]
    context = {"rules": rules, "open_alerts": open_alerts, "can_edit": _can(request.user, "alerts.change_alertrule")}
    return render(request, "alerts/index.html", context)


def _rule_form(request: HttpRequest, scope: Scope, instance: AlertRule | None = None) -> RuleForm:
    channels = visible_channels(request.user, scope)
    data = request.POST if request.method == "POST" else None
    return RuleForm(data, instance=instance, scope=scope, channels=channels)


@login_required
@require_http_methods(["GET", "POST"])
def rule_new(request: HttpRequest) -> HttpResponse:
    if not _can(request.user, "alerts.change_alertrule"):
        return HttpResponseForbidden("You need the permission to change alert rules.")
    scope = scope_for(request.user)
    form = _rule_form(request, scope, AlertRule(created_by=cast("User", request.user)))
    context: dict[str, Any] = {"form": form, "rule": None}
    if request.method == "POST" and form.is_valid():
        if request.POST.get("action") == "preview":
            rule = form.save(commit=False)
            context.update(_try_out(rule))
        else:
            rule = form.save()
            return redirect("alert-rule", rule.pk)
    return render(request, "alerts/rule.html", context, status=_invalid_status(request, form))


def _try_out(rule: AlertRule) -> dict[str, Any]:
    """Evaluate now (no notification, nothing written) and preview 30 days."""
    now = timezone.now()
    if rule.pk is None:
        rule.pk = 0  # unsaved: judged under a placeholder id, never stored
    cycle = judge([rule], now)
    verdicts = cycle.verdicts.get(rule.pk, [])
    return {"test": {"verdicts": verdicts, "level": worst(verdicts), "at": now}, "preview": preview_rule(rule, now)}


@login_required
@require_http_methods(["GET", "POST"])
def rule_detail(request: HttpRequest, pk: int) -> HttpResponse:
    scope = scope_for(request.user)
    rule = get_object_or_404(AlertRule, pk=pk)
    if not rule.visible_to(scope):
        return render(request, "alerts/not_found.html", status=404)
    can_edit = _can(request.user, "alerts.change_alertrule")
    action = request.POST.get("action") if request.method == "POST" else None
    if action and not can_edit:
        return HttpResponseForbidden("You need the permission to change alert rules.")
    form = _rule_form(request, scope, rule) if can_edit else None
    context: dict[str, Any] = {"rule": rule, "form": form, "can_edit": can_edit, "silence_form": SilenceForm()}
    if action == "save" and form is not None and form.is_valid():
        form.save()
        return redirect("alert-rule", rule.pk)
    if action in ("test", "preview"):
        fresh = AlertRule.objects.get(pk=rule.pk)
        context.update(_try_out(fresh))
    if action == "silence":
        silence_form = SilenceForm(request.POST)
        if silence_form.is_valid():
            Silence.objects.create(
                rule=rule,
                ends_at=timezone.now() + timedelta(hours=silence_form.cleaned_data["hours"]),
                reason=silence_form.cleaned_data["reason"],
                created_by=cast("User", request.user),
            )
            return redirect("alert-rule", rule.pk)
        context["silence_form"] = silence_form
    if action == "delete":
        rule.delete()
        return redirect("alerts-index")
    if request.method == "GET" and "preview" in request.GET:
        context["preview"] = preview_rule(rule, timezone.now())
    states = sorted(
        visible_states(scope).filter(rule=rule).order_by("group_key"), key=lambda state: -LEVEL_RANK[state.level]
    )
    context.update(
        states=states,
        silences=rule.silences.filter(ends_at__gt=timezone.now()),
        notifications=_notifications(scope).filter(rule=rule)[:20],
    )
    silence_form = context["silence_form"]
    return render(request, "alerts/rule.html", context, status=_invalid_status(request, form, silence_form))


def _notifications(scope: Scope) -> QuerySet[Notification]:
    deliveries = Prefetch("deliveries", queryset=Delivery.objects.select_related("channel").order_by("created_at"))
    return Notification.objects.filter(_visible_tenant_q(scope)).select_related("rule").prefetch_related(deliveries)


@login_required
def history(request: HttpRequest) -> HttpResponse:
    scope = scope_for(request.user)
    visible = {rule.pk for rule in visible_rules(scope)}
    notifications = [n for n in _notifications(scope)[:300] if n.rule_id in visible][:100]
    return render(request, "alerts/history.html", {"notifications": notifications})


@login_required
def channels(request: HttpRequest) -> HttpResponse:
    scope = scope_for(request.user)
    found = visible_channels(request.user, scope).select_related("owner")
    return render(
        request, "alerts/channels.html", {"channels": found, "can_edit": _can(request.user, "alerts.change_channel")}
    )


@login_required
@require_http_methods(["GET", "POST"])
def channel_new(request: HttpRequest) -> HttpResponse:
    if not _can(request.user, "alerts.change_channel"):
        return HttpResponseForbidden("You need the permission to change alert channels.")
    form = ChannelForm(request.POST or None, instance=Channel(owner=cast("User", request.user)))
    if request.method == "POST" and form.is_valid():
        channel = form.save()
        return redirect("alert-channel", channel.pk)
    context = {"form": form, "channel": None}
    return render(request, "alerts/channel.html", context, status=_invalid_status(request, form))


@login_required
@require_http_methods(["GET", "POST"])
def channel_detail(request: HttpRequest, pk: int) -> HttpResponse:
    scope = scope_for(request.user)
    channel = get_object_or_404(visible_channels(request.user, scope), pk=pk)
    can_edit = _can(request.user, "alerts.change_channel")
    action = request.POST.get("action") if request.method == "POST" else None
    if action and not can_edit:
        return HttpResponseForbidden("You need the permission to change alert channels.")
    form = ChannelForm(request.POST if action == "save" else None, instance=channel) if can_edit else None
    context: dict[str, Any] = {"channel": channel, "form": form, "can_edit": can_edit}
    if action == "save" and form is not None and form.is_valid():
        form.save()
        return redirect("alert-channel", channel.pk)
    if action == "test":
        from apps.alerts.tasks import send_test

        try:
            send_test.apply_async((channel.pk,), retry=False)
            context["queued"] = True
        except Exception:
            log.warning("could not queue a test notification for channel %s", channel.pk, exc_info=True)
            context["queue_error"] = "The task queue is unavailable; try again in a minute."
    if action == "enable":
        with transaction.atomic():
            Channel.objects.filter(pk=channel.pk).update(
                status=Channel.Status.ACTIVE,
                disabled_reason="",
                disabled_at=None,
                consecutive_failures=0,
                owner_told_at=None,
            )
        return redirect("alert-channel", channel.pk)
    context["deliveries"] = channel.deliveries.select_related("notification")[:50]
    return render(request, "alerts/channel.html", context, status=_invalid_status(request, form))
