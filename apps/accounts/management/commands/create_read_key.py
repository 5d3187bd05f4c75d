from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts.access import scope_for
from apps.accounts.models import ReadKey


class Command(BaseCommand):
    help = "Create a read key for the JSON API that acts as USERNAME, with their tenant scope. Prints the key once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="the user the key acts as")
        parser.add_argument("--name", default="api", help="a label for the key")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(options["username"])
        except user_model.DoesNotExist as exc:
            raise CommandError(f"no user named {options['username']!r}") from exc
        if not user.is_active:
            raise CommandError(f"user {options['username']!r} is inactive; a key of theirs would not work")
        key, plaintext = ReadKey.issue(user, options["name"])
        username = user.get_username()
        self.stderr.write(f"Created read key {key.prefix}… for {username!r}. It is shown once; store it now.")
        if scope_for(user).tenants == ():
            self.stderr.write(
                "Warning: this user is not staff and has no tenant access, so the key sees no data. "
                "Grant tenant access in admin (Users > the user > Tenant access)."
            )
        self.stdout.write(plaintext)
