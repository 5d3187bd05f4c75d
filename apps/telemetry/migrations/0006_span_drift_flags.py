"""telemetry_span.output_valid and .refused: the per-call flags the drift detector counts.

output_valid: the application's own verdict on the answer (`observatory.output.valid`;
false = it failed the app's validation), NULL when the app says nothing. refused: the
provider declined to answer (finish reason content_filter / refusal / safety, or a refusal
message), NULL otherwise. Both are rolled up as counts (apps/rollups, migration 0006).
Numbered 0006 after 0005 (cost_source); 0004 is left to a parallel branch.
"""

from __future__ import annotations

from django.db import migrations, models

# Nullable, no default: catalog-only changes on the partitioned table and every partition.
ADD = """
ALTER TABLE telemetry_span ADD COLUMN IF NOT EXISTS output_valid boolean;
ALTER TABLE telemetry_span ADD COLUMN IF NOT EXISTS refused boolean;
"""
DROP = """
ALTER TABLE telemetry_span DROP COLUMN IF EXISTS output_valid;
ALTER TABLE telemetry_span DROP COLUMN IF EXISTS refused;
"""


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0005_span_cost_source")]
    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(ADD, DROP)],
            state_operations=[
                migrations.AddField("span", "output_valid", models.BooleanField(null=True)),
                migrations.AddField("span", "refused", models.BooleanField(null=True)),
            ],
        )
    ]
