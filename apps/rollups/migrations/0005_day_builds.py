"""DayBuild: the version of each (project, day)'s RollupDay rows, for the query layer's
in-process second level (apps/metrics/days.py). Days already built get one."""

from __future__ import annotations

from django.db import migrations, models

BUILDS_OF_EXISTING_DAYS = """
INSERT INTO rollups_daybuild (project_id, day) SELECT DISTINCT project_id, bucket FROM rollups_rollupday;
"""


class Migration(migrations.Migration):
    dependencies = [("rollups", "0004_day_rows_and_failures")]

    operations = [
        migrations.CreateModel(
            name="DayBuild",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("project_id", models.BigIntegerField()),
                ("day", models.DateTimeField(help_text="UTC midnight")),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("project_id", "day"), include=("id",), name="day_build_identity")
                ],
            },
        ),
        migrations.RunSQL(BUILDS_OF_EXISTING_DAYS, migrations.RunSQL.noop),
    ]
