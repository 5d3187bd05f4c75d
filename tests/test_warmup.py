"""A fresh process's one-time Python work is done when it starts (observatory/warmup.py):
checked in a fresh interpreter, where nothing is imported yet, and in a real gunicorn worker
started from the repository root as every command line starts it (gunicorn.conf.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

# In a fresh interpreter: what is imported and compiled after django.setup(), then after the
# warm-up. The cached template loader keeps compiled templates in get_template_cache.
PROBE = """
import json, sys
import django
django.setup()
from django.template import engines

def state():
    loader = engines["django"].engine.template_loaders[0]
    return {
        "views": [name for name in ("apps.dashboard.views", "apps.api.views", "apps.rollups.compute")
                  if name in sys.modules],
        "templates": sorted(name for name in loader.get_template_cache if name.startswith("dashboard/")),
    }

before = state()
from observatory.warmup import warm_process
warm_process()
print(json.dumps({"before": before, "after": state()}))
"""


def test_warm_process_imports_the_views_and_compiles_the_templates() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "observatory.settings"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["before"] == {"views": [], "templates": []}
    assert found["after"]["views"] == ["apps.dashboard.views", "apps.api.views", "apps.rollups.compute"]
    assert {"dashboard/overview.html", "dashboard/detail.html", "dashboard/_chart.html"} <= set(
        found["after"]["templates"]
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_gunicorn_worker_warms_before_its_first_request(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as log_file:
        # No --config: gunicorn finds gunicorn.conf.py in its working directory, as in the
        # image, `run.py serve` and the demo.
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "observatory.wsgi", "--workers", "1", "--threads", "2",
             "--bind", f"127.0.0.1:{port}", "--log-level", "info"],
            cwd=ROOT, env={**os.environ, "ALLOWED_HOSTS": "127.0.0.1"}, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "warmed in" not in log.read_text(errors="replace"):
            assert server.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"no warm-up logged:\n{log.read_text(errors='replace')}"
            time.sleep(0.2)
        # The worker serves once warmed: the health check answers (its database may be any).
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert answer.status_code in (200, 503)
    finally:
        server.terminate()
        server.wait(timeout=30)
    output = log.read_text(errors="replace")
    assert "Booting worker" in output and output.index("Booting worker") < output.index("warmed in")
