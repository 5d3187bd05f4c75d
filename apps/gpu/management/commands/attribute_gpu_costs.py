from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.accounts.models import Project
from apps.gpu.attribution import attribute_range
from observatory.moments import command_moment


class Command(BaseCommand):
    help = "Recompute the GPU cost attribution of every interval in a range (after a GPU price edit, say)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="ISO date or date-time (UTC when no offset)")
        parser.add_argument("--until", required=True, help="ISO date or date-time, exclusive")
        parser.add_argument("--project", type=int, action="append", help="project id (repeatable); default all")

    def handle(self, *args: Any, **options: Any) -> None:
        since, until = command_moment(options["since"]), command_moment(options["until"])
        projects = options["project"] or list(Project.objects.values_list("id", flat=True))
        for project_id in projects:
            results = attribute_range(project_id, since, until)
            changed = sum(r.spans_changed for r in results)
            self.stdout.write(f"project {project_id}: {len(results)} intervals, {changed} spans changed")
