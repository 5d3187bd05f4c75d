"""A covering index on rollups_rolluphour for the query layer's sums (apps/metrics/sql.py).

It lives with the query layer because the sums read is the query that needs it; the table
and its other indexes are the rollups app's. A RollupHour row carries ten distribution
arrays, so reading sums from the heap fetches a wide row (often a page) per hour and group:
30 days by tenant at 10M spans a month is 9,400 heap pages, ~10 ms warm and 30 ms when the
pages have to be read in. With the dimensions and sums in the index the same read is an
Index Only Scan of ~230 pages (~3 ms). errors_by_type is left out (a breakdown read fetches
the heap). Built CONCURRENTLY: rollup writes go on while it builds.
"""

from __future__ import annotations

from django.db import migrations

CREATE = """
CREATE INDEX CONCURRENTLY IF NOT EXISTS rollup_hour_sums ON rollups_rolluphour (project_id, grouping, bucket)
INCLUDE (
    tenant, feature, provider, model, service,
    requests, errors, retries, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens,
    reasoning_tokens, tokens_unknown, cost_usd, cost_unknown, cache_savings_usd, semantic_cache_lookups,
    semantic_cache_hits, tasks, successful_tasks, generation_tokens, generation_ms
);
"""
COMMENT = """
COMMENT ON INDEX rollup_hour_sums IS
    'metrics.sql.sums_sql: sums of one grouping set of a project over a time range, '
    'as Index Only Scans (the heap rows carry the distribution arrays)';
"""
DROP = "DROP INDEX CONCURRENTLY IF EXISTS rollup_hour_sums;"


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction
    dependencies = [("rollups", "0001_initial")]
    operations = [migrations.RunSQL(CREATE, DROP), migrations.RunSQL(COMMENT, migrations.RunSQL.noop)]
