"""telemetry_span.cost_source: tells GPU-attributed cost (apps.gpu.attribution) from cost
priced by a price row or supplied by the instrumentation.

The attributed cost lives in cost_usd itself, so every rollup and query-layer cost sum
includes it exactly with no join; this column only says where it came from. Numbered 0005
to leave 0004 to a parallel branch; a merge migration joins them if both land.
"""

from __future__ import annotations

from django.db import migrations, models

# Nullable, no default: a catalog-only change on the partitioned table and every partition.
ADD = "ALTER TABLE telemetry_span ADD COLUMN IF NOT EXISTS cost_source text;"
DROP = "ALTER TABLE telemetry_span DROP COLUMN IF EXISTS cost_source;"


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0003_root_span_index")]
    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(ADD, DROP)],
            state_operations=[migrations.AddField("span", "cost_source", models.TextField(null=True))],
        )
    ]
