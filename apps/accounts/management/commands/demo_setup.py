from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from apps.accounts.models import IngestKey, Project
from observatory.demo import seed_demo_alerting
from observatory.embedded import STATE_DIR


class Command(BaseCommand):
    help = (
        "Create (or reuse) the demo login, project, ingest key, email channel and alert rules for "
        "`run.py demo`. The demo's "
        "plaintext password and key live in .observatory/ on this machine only."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        password_file = STATE_DIR / "demo-password"
        key_file = STATE_DIR / "demo-ingest-key"
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(12))
            password_file.chmod(0o600)
        password = password_file.read_text().strip()
        user_model = get_user_model()
        user, _ = user_model.objects.get_or_create(username="demo", defaults={"is_staff": True, "is_superuser": True})
        if not user.check_password(password):
            user.set_password(password)
            user.save()
        project, _ = Project.objects.get_or_create(name="demo")
        key = key_file.read_text().strip() if key_file.exists() else ""
        if not key or IngestKey.authenticate(key) is None:
            _, key = IngestKey.issue(project, "demo simulator")
            key_file.write_text(key)
            key_file.chmod(0o600)
        # Its channel and rules: the demo's incidents trip them (observatory/demo.py).
        try:
            seed_demo_alerting(project, user)
        except Exception as exc:  # the demo runs without its rules rather than not at all
            self.stderr.write(f"demo alert rules not created: {type(exc).__name__}: {exc}")
        self.stdout.write(f"user=demo\npassword={password}\nkey={key}\n")
