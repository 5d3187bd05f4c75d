"""A fresh process's one-time Python work, done when it starts rather than by its first request.

A new gunicorn worker (every deploy, every `--max-requests` recycle, every crashed worker)
or Celery pool process imports most of the code lazily: Django resolves the URLconf (and so
imports every view module, the admin and the API) on the first request, the cached template
loader compiles each template on its first render, and a few modules are imported inside
functions. Together that is most of a cold page's time, before any figure is read. Paid here,
from gunicorn's `post_worker_init` (gunicorn.conf.py) and Celery's `worker_process_init`
(observatory/celery.py), it is paid before the process takes its first request or task.

warm_process reads nothing from the database: a worker whose database is down still starts
(and answers 503 where it must), and a forked process never inherits a connection. A web
worker also starts rolling up the dashboard's current-hour piece (warm_web_worker), on a
thread with its own connection, so its first pages do not read the open hour themselves.
"""

from __future__ import annotations

import importlib
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
from django.conf import settings
from django.template import TemplateDoesNotExist, TemplateSyntaxError
from django.template.loader import get_template
from django.urls import get_resolver, reverse

log = logging.getLogger(__name__)

# Modules the request and task paths import inside functions (to keep import cycles or
# optional parts out of module import time); imported here so no first caller pays for them.
LAZY_MODULES = (
    "apps.rollups.compute",
    "apps.accounts.models",
    "apps.pricing.providers",
    "apps.telemetry.partitions",
    "django.contrib.auth.views",
    "django.contrib.admin.views.main",
)


def warm_process() -> float:
    """Import what the URLconf names, the lazily imported modules, and compile every project
    template into the cached loader. Returns the seconds it took. Never raises: a warm-up that
    fails leaves the first request to pay, as before."""
    began = time.perf_counter()
    try:
        # Every view module, the admin's and the API's URLconfs, and their imports.
        get_resolver().url_patterns  # noqa: B018  (the property imports the URLconf)
        reverse("overview")  # builds the reverse() tables every page's navigation uses
        for name in LAZY_MODULES:
            importlib.import_module(name)
        _render_a_figure()
        for name in project_templates():
            try:
                get_template(name)
            except (TemplateDoesNotExist, TemplateSyntaxError):
                # Partial templates and e-mail subjects compile too; one that does not is
                # reported by its own page's render (and its tests), not here.
                log.debug("template %s not warmed", name, exc_info=True)
    except Exception:
        log.exception("process warm-up failed; the first request pays for what was left")
    took = time.perf_counter() - began
    log.info("process warmed in %.0f ms", took * 1000)
    return took


def _render_a_figure() -> None:
    """Plotly imports its JSON encoding (plotly.io.json and what it picks) on the first
    figure drawn: a small one drawn here, as the pages draw theirs (apps/dashboard/charts.py:
    figure dicts, unvalidated), with the kinds of values they carry."""
    import plotly.io as pio

    moment = datetime(2026, 1, 1, tzinfo=UTC)
    figure = {
        "data": [
            {"type": "scatter", "x": [moment], "y": [1.5], "mode": "lines+markers"},
            {"type": "bar", "x": [moment], "y": [np.float64(2.0), Decimal("0.5"), None]},
        ],
        "layout": {"yaxis": {"title": {"text": "ms"}}},
    }
    pio.to_html(figure, full_html=False, include_plotlyjs=False, validate=False)


def warm_web_worker() -> float:
    """A web worker's start (gunicorn.conf.py): the current boundary's raw piece of the
    dashboard starts filling in the background (apps/dashboard/page_reads.py: prefill, on its
    own connection), the Python warm-up runs beside it, and then the worker waits for the
    fill, at most settings.DASHBOARD_PREFILL_WAIT_S: gunicorn hands a worker requests only
    once this hook returns, so its first page finds the open hour read instead of reading it
    (a few hundred ms at 10M spans a month) while a person waits. A fill slower than that
    (a database under load) goes on in the background, and the first page waits for it
    there. Returns the seconds taken."""
    from apps.dashboard import page_reads

    began = time.perf_counter()
    fill = None
    try:
        fill = page_reads.prefill()
    except Exception:
        log.exception("the dashboard's raw pieces were not prefilled; the first page reads them")
    warm_process()
    if fill is not None:
        fill.join(max(0.0, settings.DASHBOARD_PREFILL_WAIT_S - (time.perf_counter() - began)))
        if fill.is_alive():
            log.warning("the dashboard's open hour was still being read after %.0f s; the worker starts serving "
                        "and its first page waits for it", settings.DASHBOARD_PREFILL_WAIT_S)  # fmt: skip
    return time.perf_counter() - began


def project_templates() -> list[str]:
    """The names of the templates under the project's TEMPLATES DIRS (not the admin's: it is
    rarely the first page a worker serves)."""
    names: list[str] = []
    for engine in settings.TEMPLATES:
        directories: list[str] = engine.get("DIRS", [])  # type: ignore[assignment]
        for directory in directories:
            root = Path(directory)
            names.extend(str(path.relative_to(root)) for path in sorted(root.rglob("*.html")))
            names.extend(str(path.relative_to(root)) for path in sorted(root.rglob("*.txt")))
    return names
