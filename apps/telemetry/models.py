"""The span store.

`telemetry_span` is a PostgreSQL table partitioned by day on start_time (see
migrations/0001 and partitions.py), written with COPY by store.py. Django does not manage
its DDL; this model lets the ORM read it.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models


class Span(models.Model):
    pk = models.CompositePrimaryKey("trace_id", "span_id", "start_time")
    project = models.ForeignKey("accounts.Project", on_delete=models.DO_NOTHING, db_constraint=False)
    trace_id = models.UUIDField()
    span_id = models.BigIntegerField()
    parent_span_id = models.BigIntegerField(null=True)
    start_time = models.DateTimeField()
    end_time = models.DateTimeField()
    duration_ms = models.FloatField()
    name = models.TextField()
    kind = models.SmallIntegerField()
    status_code = models.SmallIntegerField()
    status_message = models.TextField(null=True)
    service_name = models.TextField(null=True)
    scope_name = models.TextField(null=True)

    is_llm = models.BooleanField()
    provider = models.TextField(null=True)
    operation = models.TextField(null=True)
    request_model = models.TextField(null=True)
    response_model = models.TextField(null=True)

    input_tokens = models.IntegerField(null=True)
    cache_read_tokens = models.IntegerField(null=True)
    cache_write_tokens = models.IntegerField(null=True)
    output_tokens = models.IntegerField(null=True)
    reasoning_tokens = models.IntegerField(null=True)

    ttft_ms = models.FloatField(null=True)
    queue_ms = models.FloatField(null=True)
    prefill_ms = models.FloatField(null=True)
    decode_ms = models.FloatField(null=True)
    server_e2e_ms = models.FloatField(null=True)

    finish_reasons = ArrayField(models.TextField(), null=True)
    error_type = models.TextField(null=True)
    is_streaming = models.BooleanField(null=True)

    tenant = models.TextField(null=True)
    feature = models.TextField(null=True)
    user_id = models.TextField(null=True)
    session_id = models.TextField(null=True)
    task_id = models.TextField(null=True)
    retry_attempt = models.IntegerField(null=True)
    semantic_cache_hit = models.BooleanField(null=True)
    # The app's verdict on the answer (observatory.output.valid); the provider declined to answer.
    output_valid = models.BooleanField(null=True)
    refused = models.BooleanField(null=True)

    system_fingerprint = models.TextField(null=True)
    service_tier = models.TextField(null=True)
    response_id = models.TextField(null=True)

    supplied_cost_usd = models.DecimalField(max_digits=20, decimal_places=10, null=True)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=10, null=True)
    price = models.ForeignKey("pricing.Price", on_delete=models.DO_NOTHING, db_constraint=False, null=True)
    # Where cost_usd came from when no price row made it: NULL = priced at ingest (price_id,
    # or the instrumentation's supplied cost); 'attributed' = a share of self-hosted GPU time
    # (apps.gpu.attribution), which re-pricing leaves alone.
    cost_source = models.TextField(null=True)

    prompt_chars = models.IntegerField(null=True)
    completion_chars = models.IntegerField(null=True)
    prompt_hash = models.TextField(null=True)

    attributes = models.JSONField(default=dict)
    resource = models.JSONField(default=dict)
    received_at = models.DateTimeField()

    class Meta:
        managed = False
        db_table = "telemetry_span"

    @property
    def trace_hex(self) -> str:
        return self.trace_id.hex

    @property
    def span_hex(self) -> str:
        return (self.span_id & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex()
