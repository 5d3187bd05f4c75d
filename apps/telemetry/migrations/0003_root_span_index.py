from __future__ import annotations

from django.db import migrations

CREATE = """
CREATE INDEX IF NOT EXISTS telemetry_span_root_start ON telemetry_span (start_time) WHERE parent_span_id IS NULL;
COMMENT ON INDEX telemetry_span_root_start IS
    'dashboard.traces.search_traces: root spans (one per trace) in a time range, newest first';
"""


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0002_span_model_state")]
    operations = [migrations.RunSQL(CREATE, "DROP INDEX IF EXISTS telemetry_span_root_start;")]
