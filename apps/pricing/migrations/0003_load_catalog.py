"""Load the shipped price catalog, so a fresh install prices spans from its first one.

It loads prices.csv as the file is when the migration runs; later changes to the file reach
an existing install through `manage.py load_prices` (the same idempotent upsert).
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def load_catalog(apps: Any, schema_editor: Any) -> None:
    from apps.pricing.catalog import read_catalog, upsert_prices

    upsert_prices(read_catalog(), price_model=apps.get_model("pricing", "Price"))


class Migration(migrations.Migration):
    dependencies = [("pricing", "0002_price_natural_key")]
    # Unloading would delete rows that admin users may since have edited: nothing to undo.
    operations = [migrations.RunPython(load_catalog, migrations.RunPython.noop)]
