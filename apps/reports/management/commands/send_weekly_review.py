from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from apps.reports import delivery
from apps.reports.compose import html_with_data_uris
from apps.reports.models import ReviewSubscription, WeeklyReview
from apps.reports.weeks import ReviewWeek


class Command(BaseCommand):
    help = (
        "Build and send the weekly cost review of one user (--user) or of every subscriber, for "
        "the last complete week or --week YYYY-Www. A review already sent for that week is not "
        "sent again unless --resend. --dry-run prints the text part and writes the HTML part to "
        "a file (images inlined), sending nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", help="username (default: every subscriber)")
        parser.add_argument("--week", help="ISO week, e.g. 2026-W48 (default: the last complete week)")
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--html-out", default="weekly-review-{user}-{week}.html",
                            help="where --dry-run writes the HTML ({user} and {week} are filled in)")  # fmt: skip
        parser.add_argument("--resend", action="store_true", help="build and send again a review already sent")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"no user {options['user']!r}")
            users = [user]
        else:
            users = delivery.users_subscribed()
        cache = delivery.BuildCache()
        now = timezone.now()
        for user in users:
            zone = ReviewSubscription.for_user(user).timezone
            try:
                week = (
                    ReviewWeek.parse(options["week"], zone) if options["week"] else ReviewWeek.last_complete(now, zone)
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            if week.end > now:
                raise CommandError(f"{week.label} has not ended yet in {zone}")
            if options["dry_run"]:
                composed = cache.review(user, week)
                path = Path(options["html_out"].format(user=user.username, week=week.label))
                path.write_text(html_with_data_uris(composed.html, composed.images))
                self.stdout.write(f"Subject: {composed.subject}\nTo: {user.email}\n\n{composed.text}")
                self.stdout.write(f"[HTML part written to {path}]\n")
                continue
            if not user.email:
                self.stderr.write(f"{user.username}: no email address, skipped")
                continue
            review_id = delivery.build_one(user, week, resend=options["resend"], cache=cache)
            if review_id is None:
                self.stdout.write(f"{user.username} {week.label}: already claimed or sent (--resend sends again)")
                continue
            outcome, error = delivery.send_review(review_id, final_attempt=True)
            status = WeeklyReview.objects.get(pk=review_id).status
            self.stdout.write(f"{user.username} {week.label}: {outcome} ({status}){' ' + error if error else ''}")
