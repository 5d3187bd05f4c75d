"""Read keys: stored hashed, shown once (admin, create_read_key), revocable."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from apps.accounts.models import READ_KEY_PREFIX, ReadKey, hash_key

pytestmark = pytest.mark.django_db


def test_issue_stores_only_the_hash(outsider: Any) -> None:
    key, plaintext = ReadKey.issue(outsider, "cron")
    stored = ReadKey.objects.get(pk=key.pk)
    assert plaintext.startswith(READ_KEY_PREFIX) and len(plaintext) > 40
    assert stored.key_hash == hash_key(plaintext) and plaintext not in stored.key_hash
    assert stored.prefix == plaintext[:12]
    assert all(plaintext not in str(value) for value in vars(stored).values())


def test_authenticate_finds_active_keys_only(outsider: Any) -> None:
    key, plaintext = ReadKey.issue(outsider, "cron")
    assert ReadKey.authenticate(plaintext) == key
    assert ReadKey.authenticate(plaintext + "x") is None
    assert ReadKey.authenticate("") is None
    assert ReadKey.authenticate("x" * 500) is None
    key.revoked_at = key.created_at
    key.save()
    assert ReadKey.authenticate(plaintext) is None


def test_a_key_of_an_inactive_user_does_not_authenticate(outsider: Any) -> None:
    _, plaintext = ReadKey.issue(outsider, "cron")
    outsider.is_active = False
    outsider.save()
    assert ReadKey.authenticate(plaintext) is None


def test_create_read_key_command_prints_the_key_once(outsider: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_read_key", "outsider", "--name", "reports", stdout=out, stderr=err)
    plaintext = out.getvalue().strip()
    key = ReadKey.authenticate(plaintext)
    assert key is not None and key.user == outsider and key.name == "reports"
    assert plaintext not in err.getvalue() and key.prefix in err.getvalue()
    assert "Warning" not in err.getvalue()


def test_create_read_key_warns_when_the_user_sees_nothing() -> None:
    get_user_model().objects.create_user("newcomer")
    err = io.StringIO()
    call_command("create_read_key", "newcomer", stdout=io.StringIO(), stderr=err)
    assert "sees no data" in err.getvalue()


def test_create_read_key_for_unknown_user_fails() -> None:
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        call_command("create_read_key", "ghost", stdout=io.StringIO(), stderr=io.StringIO())


def test_admin_creates_a_key_and_shows_it_once(owner: Any, outsider: Any) -> None:
    owner.is_superuser = True
    owner.save()
    client = Client()
    client.force_login(owner)
    response = client.post("/admin/accounts/readkey/add/", {"user": outsider.pk, "name": "dashboard"}, follow=True)
    assert response.status_code == 200
    messages = [str(message) for message in response.context["messages"]]
    shown = [message.split(": ", 1)[1] for message in messages if "shown once" in message]
    assert len(shown) == 1
    key = ReadKey.authenticate(shown[0])
    assert key is not None and key.user == outsider
    # The change page never shows the secret again.
    page = client.get(f"/admin/accounts/readkey/{key.pk}/change/")
    assert shown[0].encode() not in page.content and key.prefix.encode() in page.content
