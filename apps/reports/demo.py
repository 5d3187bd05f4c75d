"""The demo's mail: a local SMTP sink and the demo user's review of the last complete week.

`run.py demo` (observatory/launcher.py) starts `smtp_sink()` before the Celery worker, with
EMAIL_HOST/EMAIL_PORT pointing the children at it, and runs `send_demo_review()` once the
backfill is rolled up, so the archive and the preview page show a review out of the box.
"""

from __future__ import annotations

import io
import mailbox
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

HOST, PORT = "127.0.0.1", 1025


def smtp_sink(maildir: Path, host: str = HOST, port: int = PORT) -> Controller:
    """A started SMTP server on loopback that keeps every message in a Maildir; `.stop()` it."""
    maildir.parent.mkdir(parents=True, exist_ok=True)
    if not (maildir / "new").is_dir():
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
    controller = Controller(Mailbox(maildir), hostname=host, port=port)
    controller.start()
    return controller


def messages(maildir: Path) -> list[Any]:
    return list(mailbox.Maildir(str(maildir), create=False))


def send_demo_review(username: str = "demo") -> str:
    """Send `username` the review of the last complete week now (again if it was sent);
    returns the command's report line. Needs Django set up."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    user = get_user_model().objects.get(username=username)
    if not user.email:
        user.email = f"{username}@localhost"
        user.save(update_fields=["email"])
    out = io.StringIO()
    call_command("send_weekly_review", user=username, resend=True, stdout=out)
    return out.getvalue().strip()
