"""Load the shipped GPU price catalog, so a fresh install prices GPU time from the start.
Later changes to the file reach an existing install through `manage.py load_gpu_prices`."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def load_catalog(apps: Any, schema_editor: Any) -> None:
    from apps.gpu.catalog import read_catalog, upsert_gpu_prices

    upsert_gpu_prices(read_catalog(), price_model=apps.get_model("gpu", "GpuPrice"))


class Migration(migrations.Migration):
    dependencies = [("gpu", "0002_self_hosted_cost")]
    # Unloading would delete rows admin users may have edited since: nothing to undo.
    operations = [migrations.RunPython(load_catalog, migrations.RunPython.noop)]
