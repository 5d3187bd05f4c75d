"""Two indexes on telemetry_span that the rollup query (apps/rollups/compute.py) relies on.

They live with the rollups because the rollup is the query that needs them; the table and
its other indexes are the telemetry app's. Created on the partitioned parent, so every day
partition (existing and future) gets its own.
"""

from __future__ import annotations

from django.db import migrations

CREATE = """
CREATE INDEX IF NOT EXISTS telemetry_span_start_brin ON telemetry_span USING brin (start_time);
COMMENT ON INDEX telemetry_span_start_brin IS
    'rollups.compute.rollup_rows_sql: all spans of an hour (or any part of a day partition), '
    'for the hourly recompute and the query layer''s open edge; BRIN because spans arrive in time order';
CREATE INDEX IF NOT EXISTS telemetry_span_task ON telemetry_span (project_id, task_id, start_time)
    WHERE task_id IS NOT NULL;
COMMENT ON INDEX telemetry_span_task IS
    'rollups.compute.rollup_rows_sql: the other traces of a task (observatory.task.id), to find its root';
"""

DROP = """
DROP INDEX IF EXISTS telemetry_span_task;
DROP INDEX IF EXISTS telemetry_span_start_brin;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("rollups", "0001_initial"),
        ("telemetry", "0002_span_model_state"),
    ]
    operations = [migrations.RunSQL(CREATE, DROP)]
