from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.accounts.models import IngestKey, Project


class Command(BaseCommand):
    help = "Create an ingest key for a project (the project is created if it does not exist). Prints the key once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project name")
        parser.add_argument("--name", default="default", help="a label for the key")

    def handle(self, *args: Any, **options: Any) -> None:
        project, _ = Project.objects.get_or_create(name=options["project"])
        key, plaintext = IngestKey.issue(project, options["name"])
        self.stderr.write(f"Created key {key.prefix}… for project {project.name!r}. It is shown once; store it now.")
        self.stdout.write(plaintext)
