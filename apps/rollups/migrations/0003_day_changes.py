"""DayChange, and the statement triggers on rollups_rolluphour that write it.

Statement-level with transition tables: one INSERT ... SELECT DISTINCT per statement, not a
row-level call per rollup row (a range rebuild writes ~100k rows a statement). TRUNCATE has
no transition table and is left alone: nothing but a test's flush truncates rollups, and the
tests empty the kept days themselves.
"""

from __future__ import annotations

from django.db import migrations, models

FUNCTION = """
CREATE FUNCTION rollups_note_day_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rollups_daychange (project_id, day)
        SELECT DISTINCT project_id, date_trunc('day', bucket, 'UTC') FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO rollups_daychange (project_id, day)
        SELECT DISTINCT project_id, date_trunc('day', bucket, 'UTC') FROM old_rows;
    ELSE
        INSERT INTO rollups_daychange (project_id, day)
        SELECT project_id, date_trunc('day', bucket, 'UTC') FROM new_rows
        UNION
        SELECT project_id, date_trunc('day', bucket, 'UTC') FROM old_rows;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER rollup_hour_inserted AFTER INSERT ON rollups_rolluphour
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION rollups_note_day_change();
CREATE TRIGGER rollup_hour_updated AFTER UPDATE ON rollups_rolluphour
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rollups_note_day_change();
CREATE TRIGGER rollup_hour_deleted AFTER DELETE ON rollups_rolluphour
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION rollups_note_day_change();
"""
DROP_FUNCTION = """
DROP TRIGGER IF EXISTS rollup_hour_inserted ON rollups_rolluphour;
DROP TRIGGER IF EXISTS rollup_hour_updated ON rollups_rolluphour;
DROP TRIGGER IF EXISTS rollup_hour_deleted ON rollups_rolluphour;
DROP FUNCTION IF EXISTS rollups_note_day_change();
"""


class Migration(migrations.Migration):
    dependencies = [("rollups", "0002_span_rollup_indexes")]

    operations = [
        migrations.CreateModel(
            name="DayChange",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("project_id", models.BigIntegerField()),
                ("day", models.DateTimeField(help_text="UTC midnight of the day whose rollup rows changed")),
            ],
            options={"indexes": [models.Index(fields=["project_id", "day", "id"], name="day_change_read")]},
        ),
        migrations.RunSQL(FUNCTION, DROP_FUNCTION),
    ]
