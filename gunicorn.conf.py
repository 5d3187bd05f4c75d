"""gunicorn reads this file from its working directory (the repository root, /app in the
image) whatever command line starts it: `run.py serve`, the demo, docker-compose's web and
collector services. Settings stay on the command lines; this file only adds the hook below."""

from __future__ import annotations

from typing import Any


def post_worker_init(worker: Any) -> None:
    # The worker has loaded the WSGI application (Django set up, middleware loaded); import
    # and compile the rest, and start reading the dashboard's open hour, before it accepts its
    # first request (observatory/warmup.py).
    from observatory.warmup import warm_web_worker

    took = warm_web_worker()
    worker.log.info("worker %s warmed in %.0f ms", worker.pid, took * 1000)
