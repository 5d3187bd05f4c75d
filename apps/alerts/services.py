"""Alert state transitions: from verdicts to notifications, each exactly once.

Which rules are due is the database's decision: `claim_due_rules` moves their
next_evaluation_at forward in one UPDATE (FOR UPDATE SKIP LOCKED), so of two sweeps running
at once each rule goes to one of them. A transition of an alert (fired, escalated, repeated,
resolved) is claimed by a conditional UPDATE of its AlertState row on the `version` it read;
only the evaluator whose UPDATE touched exactly one row writes the Notification and its
Delivery rows, in the same transaction. Two evaluators of the same rule at once (a test
button, a forced run, a sweep) therefore never notify twice; the Notification's unique key
(state, episode, event, level, sequence) is a second guard.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.urls import reverse

from apps.alerts.evaluate import Cycle, Verdict, judge
from apps.alerts.models import LEVEL_RANK, AlertRule, AlertState, Channel, Delivery, Notification, Silence

log = logging.getLogger(__name__)

Event = Notification.Event


def claim_due_rules(now: datetime, limit: int = 5000) -> list[int]:
    """The ids of enabled rules due at `now`, each claimed for this caller alone: its
    next_evaluation_at moves one interval (less two seconds) past now in the same statement;
    SKIP LOCKED lets a concurrent sweep take the other rules instead of waiting."""
    with connection.cursor() as cur:
        cur.execute(
            """
            WITH due AS (
                SELECT id FROM alerts_alertrule
                WHERE enabled AND next_evaluation_at <= %s
                ORDER BY next_evaluation_at
                LIMIT %s
                FOR UPDATE SKIP LOCKED
            )
            UPDATE alerts_alertrule AS rule
            -- Two seconds early, so a sweep that beat starts a moment early still finds it due
            -- and a rule evaluated every 30 s goes every sweep, not every other one.
            SET next_evaluation_at = %s + make_interval(secs => rule.evaluate_every_seconds) - interval '2 seconds'
            FROM due WHERE rule.id = due.id
            RETURNING rule.id
            """,
            [now, limit, now],
        )
        return sorted(row[0] for row in cur.fetchall())


def _states_for(
    rules: Sequence[AlertRule], keys: Sequence[tuple[int, str]] | None = None
) -> dict[tuple[int, str], AlertState]:
    """The rules' alert states (only those of `keys`, when given), each holding its rule."""
    by_id = {rule.pk: rule for rule in rules}
    rule_ids = list(by_id) if keys is None else sorted({rule_id for rule_id, _ in keys})
    found = AlertState.objects.filter(rule__in=rule_ids)
    wanted = None if keys is None else set(keys)
    states = {}
    for state in found:
        if wanted is None or (state.rule_id, state.group_key) in wanted:
            state.rule = by_id[state.rule_id]  # no query per state for its rule (titles, labels)
            states[(state.rule_id, state.group_key)] = state
    return states


@dataclass
class _Recipients:
    """Read once per cycle instead of once per transition: the silences in force and each
    rule's active channels (a cycle may fire hundreds of alerts; each read was a round trip)."""

    silences: list[Silence]
    channels: dict[int, list[Channel]]

    @classmethod
    def of(cls, rules: Sequence[AlertRule], now: datetime) -> _Recipients:
        channels: dict[int, list[Channel]] = {rule.pk: [] for rule in rules}
        active = Channel.objects.filter(status=Channel.Status.ACTIVE, rules__in=list(channels))
        for channel in active.annotate(for_rule=F("rules")):
            channels[channel.for_rule].append(channel)
        return cls(Silence.active(now), channels)

    def silence_for(self, state: AlertState) -> Silence | None:
        """The silence holding back `state`'s deliveries (the longest in force), if any."""
        return next((silence for silence in self.silences if silence.covers(state)), None)


def evaluate_rules(rules: Sequence[AlertRule], now: datetime) -> tuple[Cycle, list[Notification]]:
    """Judge the rules and apply every verdict: transitions claimed, notifications written,
    deliveries queued. Returns the cycle and the notifications this caller wrote."""
    states = _states_for(rules)
    cycle = judge(rules, now, states)
    by_id = {rule.pk: rule for rule in rules}
    # New alerts' states in one statement (another evaluator may create some first: both then
    # race on version), read back in one.
    missing = [
        (rule_id, verdict)
        for rule_id, verdicts in cycle.verdicts.items()
        for verdict in verdicts
        if (rule_id, verdict.group_key) not in states and verdict.level in ("warning", "critical")
    ]
    if missing:
        AlertState.objects.bulk_create(
            [AlertState(rule=by_id[rule_id], group_key=verdict.group_key, group=verdict.group, tenant=verdict.tenant)
             for rule_id, verdict in missing],
            ignore_conflicts=True,
        )  # fmt: skip
        states.update(_states_for(rules, [(rule_id, verdict.group_key) for rule_id, verdict in missing]))
    recipients = _Recipients.of(rules, now) if cycle.verdicts else None
    notifications: list[Notification] = []
    touched: list[AlertState] = []
    for rule_id, verdicts in cycle.verdicts.items():
        rule = by_id[rule_id]
        for verdict in verdicts:
            state = states.get((rule_id, verdict.group_key))
            if state is None:
                continue
            found = _transition(rule, state, verdict, now, recipients)
            if found is not None:
                notifications.append(found)
            else:
                touched.append(state)
    # Figures of alerts without a transition, in one statement (no claim needed: last writer wins).
    for state in touched:
        state.last_evaluated_at = now
    if touched:
        AlertState.objects.bulk_update(touched, ["value", "summary", "last_evaluated_at"], batch_size=500)
    return cycle, notifications


def _event_for(state: AlertState, verdict: Verdict, rule: AlertRule, now: datetime) -> str | None:
    old, new = state.level, verdict.level
    if new is None:
        return None
    if old == "ok":
        return Event.FIRED if new != "ok" else None
    if new == "ok":
        return Event.RESOLVED
    if LEVEL_RANK[new] > LEVEL_RANK[old]:
        return Event.ESCALATED
    if LEVEL_RANK[new] < LEVEL_RANK[old]:
        return "downgraded"  # quieter, not news: the level changes without a notification
    cooldown = timedelta(minutes=rule.cooldown_minutes)
    if state.last_notified_at is None or now - state.last_notified_at >= cooldown:
        return Event.REPEATED
    return None


def _transition(
    rule: AlertRule, state: AlertState, verdict: Verdict, now: datetime, recipients: _Recipients | None = None
) -> Notification | None:
    state.value, state.summary = verdict.value, verdict.summary
    event = _event_for(state, verdict, rule, now)
    if event is None or verdict.level is None:
        return None
    changes: dict[str, Any] = {
        "version": F("version") + 1,
        "level": verdict.level,
        "value": verdict.value,
        "summary": verdict.summary,
        "last_evaluated_at": now,
    }
    episode, sequence = state.episode, 0
    if event == Event.FIRED:
        episode += 1
        changes.update(episode=episode, opened_at=now, resolved_at=None, repeats=0, last_notified_at=now)
    elif event == Event.RESOLVED:
        changes.update(resolved_at=now, last_notified_at=now)
    elif event == Event.REPEATED:
        sequence = state.repeats + 1
        changes.update(repeats=sequence, last_notified_at=now)
    elif event == Event.ESCALATED:
        sequence = state.version + 1  # an episode may escalate again after a downgrade
        changes.update(last_notified_at=now)
    with transaction.atomic():
        # The claim: only the evaluator that still sees the version it read moves it on.
        claimed = AlertState.objects.filter(pk=state.pk, version=state.version).update(**changes)
        if claimed != 1:
            log.info("alert %s: transition %s taken by another evaluator", state.pk, event)
            return None
        if event == "downgraded":
            return None
        level = verdict.level if event != Event.RESOLVED else state.level
        try:
            with transaction.atomic():
                notification = Notification.objects.create(
                    state=state,
                    rule=rule,
                    episode=episode,
                    event=event,
                    level=level,
                    sequence=sequence,
                    tenant=state.tenant,
                    title=_title(rule, state, verdict, event, level),
                    text=verdict.summary,
                    details={
                        **verdict.details,
                        "value": verdict.value,
                        "samples": verdict.samples,
                        "group": verdict.group,
                        "rule": rule.describe(),
                    },
                    created_at=now,
                )
        except IntegrityError:
            return None
        recipients = recipients or _Recipients.of([rule], now)
        if recipients.silence_for(state) is not None:
            Notification.objects.filter(pk=notification.pk).update(silenced=True)
            notification.silenced = True
        else:
            queue_deliveries(notification, recipients.channels[rule.pk], now)
    log.info("alert %s %s: %s", state.pk, event, notification.title)
    return notification


def _title(rule: AlertRule, state: AlertState, verdict: Verdict, event: str, level: str) -> str:
    group = verdict.details.get("title") if rule.is_finding_rule else state.group_label
    head = "RESOLVED" if event == Event.RESOLVED else level.upper()
    return f"[{head}] {rule.name}" + (f" ({group})" if group and group != "whole slice" else "")


def queue_deliveries(
    notification: Notification | None, channels: Sequence[Channel], now: datetime, *, is_test: bool = False
) -> list[Delivery]:
    """A pending first attempt per channel, due now; sent by `alerts.deliver` right after the
    commit, or by the next sweep if that message is lost."""
    deliveries = Delivery.objects.bulk_create(
        [
            Delivery(
                notification=notification,
                channel=channel,
                attempt=1,
                created_at=now,
                target=channel.target,
                result=Delivery.Result.PENDING,
                next_attempt_at=now,
                is_test=is_test,
            )
            for channel in channels
        ]
    )
    ids = [delivery.pk for delivery in deliveries]
    if ids:
        transaction.on_commit(lambda: _send_tasks(ids))
    return deliveries


def _send_tasks(ids: list[int]) -> None:
    from apps.alerts.tasks import deliver

    for delivery_id in ids:
        try:
            deliver.apply_async((delivery_id,), retry=False)
        except Exception as exc:  # the broker is down: the next sweep finds the pending row
            log.warning("could not queue delivery %s (%s); the next sweep sends it", delivery_id, exc)


def notification_url(notification: Notification | None) -> str:
    from django.conf import settings

    if notification is None:
        return settings.ALERTS_SITE_URL + reverse("alert-history")
    return settings.ALERTS_SITE_URL + reverse("alert-rule", args=[notification.rule_id])
