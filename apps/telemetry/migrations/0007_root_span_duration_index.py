"""Root spans by duration, for the traces explorer's duration sorts.

Built on the partitioned table, so every partition (and each one created later) gets its
own; like 0003's, a plain CREATE INDEX: it holds writes to each partition while it builds
(about a second a day of 300k spans).
"""

from __future__ import annotations

from typing import ClassVar

from django.db import migrations

CREATE = """
CREATE INDEX IF NOT EXISTS telemetry_span_root_duration ON telemetry_span (duration_ms) WHERE parent_span_id IS NULL;
COMMENT ON INDEX telemetry_span_root_duration IS
    'dashboard.traces.search_traces, sort=duration/shortest: root spans by duration, a merge of each partition''s';
"""


class Migration(migrations.Migration):
    dependencies: ClassVar[list[tuple[str, str]]] = [("telemetry", "0006_span_drift_flags")]
    operations = [migrations.RunSQL(CREATE, "DROP INDEX IF EXISTS telemetry_span_root_duration;")]
