"""The shipped GPU price catalog and the GPU price book."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from apps.gpu.attribution import GpuPriceBook, gpu_cost_units
from apps.gpu.catalog import CatalogError, read_catalog
from apps.gpu.models import GpuPrice


def test_every_shipped_row_has_a_source_and_says_how_sure_it_is() -> None:
    rows = read_catalog()
    assert len(rows) >= 5
    for row in rows:
        assert row.source_url.startswith("https://"), row
        # A figure nobody confirmed says so; a confirmed one carries its retrieval date.
        assert row.retrieved_on is not None or "UNCONFIRMED" in row.notes, row
        assert Decimal("0.1") < row.usd_per_gpu_hour < Decimal("50"), row


def test_a_broken_file_names_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "gpu_prices.csv"
    header = "provider,gpu_model_pattern,effective_from,effective_to,usd_per_gpu_hour,source_url,retrieved_on,notes"
    broken.write_text(f"{header}\naws,NVIDIA (H100,2025-01-01,,2.0,https://x,,\n")
    with pytest.raises(CatalogError, match="line 2"):
        read_catalog(broken)


@pytest.mark.django_db
def test_loading_is_idempotent_and_keeps_admin_rows() -> None:
    shipped = GpuPrice.objects.count()  # the data migration loaded the file
    assert shipped == len(read_catalog())
    GpuPrice.objects.create(provider="on-prem", gpu_model_pattern=".*", effective_from=datetime(2024, 1, 1, tzinfo=UTC),
                            usd_per_gpu_hour=Decimal("1.1"))  # fmt: skip
    out = io.StringIO()
    call_command("load_gpu_prices", stdout=out)
    assert "0 created" in out.getvalue()
    assert GpuPrice.objects.count() == shipped + 1


@pytest.mark.django_db
def test_price_book_picks_the_longest_pattern_in_force() -> None:
    jan, jul = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
    GpuPrice.objects.all().delete()
    broad = GpuPrice.objects.create(provider="p", gpu_model_pattern="NVIDIA .*", effective_from=jan,
                                    usd_per_gpu_hour=Decimal("1"))  # fmt: skip
    exact = GpuPrice.objects.create(provider="p", gpu_model_pattern="NVIDIA H100 80GB HBM3", effective_from=jan,
                                    effective_to=jul, usd_per_gpu_hour=Decimal("3"))  # fmt: skip
    book = GpuPriceBook.load()
    assert book.price_for("P", "nvidia h100 80gb hbm3", datetime(2025, 3, 1, tzinfo=UTC)) == exact
    assert book.price_for("p", "NVIDIA H100 80GB HBM3", jul) == broad  # the exact row ended
    assert book.price_for("p", "NVIDIA L4", datetime(2024, 12, 31, tzinfo=UTC)) is None  # not yet in force
    assert book.price_for("other", "NVIDIA L4", jul) is None


def test_gpu_cost_units_round_half_up() -> None:
    # $3.60/h for 300 s = $0.30 exactly; $2.99/h = $0.24916666...6 -> 0.2491666667.
    assert gpu_cost_units(Decimal("3.60"), 300) == 3_000_000_000
    assert gpu_cost_units(Decimal("2.99"), 300) == 2_491_666_667


@pytest.mark.django_db
def test_admin_validation_refuses_a_broken_pattern() -> None:
    jan = datetime(2025, 1, 1, tzinfo=UTC)
    price = GpuPrice(provider=" AWS ", gpu_model_pattern="NVIDIA (H100", effective_from=jan, usd_per_gpu_hour=2)
    with pytest.raises(ValidationError, match="regular expression"):
        price.full_clean()
    assert price.provider == "aws"
