from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from collectors import gpu_sampler


class Command(BaseCommand):
    help = "Send NVML GPU readings to Observatory's /v1/metrics as OTLP metrics (collectors.gpu_sampler)."

    def add_arguments(self, parser: CommandParser) -> None:
        for action in gpu_sampler.parser()._actions:
            if action.dest == "help":
                continue
            kwargs: dict[str, Any] = {"dest": action.dest, "default": action.default, "help": action.help}
            if action.nargs == 0:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = action.type
            parser.add_argument(*action.option_strings, **kwargs)

    def handle(self, *args: Any, **options: Any) -> None:
        argv: list[str] = []
        for action in gpu_sampler.parser()._actions:
            value = options.get(action.dest)
            if action.dest == "help" or value in (None, "", False):
                continue
            argv += [action.option_strings[0]] if value is True else [action.option_strings[0], str(value)]
        code = gpu_sampler.run(argv)
        if code:
            raise CommandError(f"gpu_sampler exited with status {code}", returncode=code)
