"""Projects own telemetry; ingest keys let an app send it. Keys are stored hashed."""

from __future__ import annotations

import hashlib
import secrets

from django.db import models
from django.utils import timezone

KEY_PREFIX = "obs_"


def hash_key(plaintext: str) -> str:
    # Keys are 32 random bytes, so a fast hash is enough: there is nothing to brute-force,
    # and ingest looks a key up on every request.
    return hashlib.sha256(plaintext.encode()).hexdigest()


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class IngestKeyQuerySet(models.QuerySet["IngestKey"]):
    def active(self) -> IngestKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class IngestKey(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="ingest_keys")
    name = models.CharField(max_length=200)
    # The first characters of the key, shown in admin so a person can tell keys apart.
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = IngestKeyQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.project} / {self.name} ({self.prefix}…)"

    def set_new_secret(self) -> str:
        """Give this key a fresh secret and return its plaintext, which is shown once and never stored."""
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix = plaintext[:10]
        self.key_hash = hash_key(plaintext)
        return plaintext

    @classmethod
    def issue(cls, project: Project, name: str) -> tuple[IngestKey, str]:
        key = cls(project=project, name=name)
        plaintext = key.set_new_secret()
        key.save()
        return key, plaintext

    @classmethod
    def authenticate(cls, plaintext: str) -> IngestKey | None:
        if not plaintext or len(plaintext) > 200:
            return None
        return cls.objects.active().select_related("project").filter(key_hash=hash_key(plaintext)).first()
