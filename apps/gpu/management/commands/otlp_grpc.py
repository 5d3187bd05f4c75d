from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from apps.gpu.grpc_server import build_server


class Command(BaseCommand):
    help = "Serve OTLP/gRPC (traces and metrics) on --port (default OTLP_GRPC_PORT, 4317)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="0.0.0.0")
        parser.add_argument("--port", type=int, default=settings.OTLP_GRPC_PORT)
        parser.add_argument("--threads", type=int, default=settings.OTLP_GRPC_THREADS)

    def handle(self, *args: Any, **options: Any) -> None:
        server, port = build_server(f"{options['host']}:{options['port']}", threads=options["threads"])
        address = f"{options['host']}:{port}"
        server.start()
        stopping = threading.Event()

        def stop(signum: int, frame: object) -> None:
            stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.stdout.write(f"OTLP/gRPC receiver listening on {address} ({options['threads']} threads)", ending="\n")
        self.stdout.flush()
        stopping.wait()
        # Let calls in flight finish (and commit) before the process exits.
        server.stop(grace=10).wait()
        self.stdout.write("OTLP/gRPC receiver stopped")
