from __future__ import annotations

from typing import Any

from django.apps import AppConfig


def drop_price_book(**_: Any) -> None:
    # An edit in this process (admin, load_prices) takes effect here at once; other processes
    # (ingest workers) pick it up within PRICEBOOK_TTL_SECONDS.
    from apps.pricing.pricebook import PriceBook

    PriceBook.forget()


class PricingConfig(AppConfig):
    name = "apps.pricing"
    label = "pricing"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.pricing.models import Price

        post_save.connect(drop_price_book, sender=Price, dispatch_uid="pricing.drop_price_book.save")
        post_delete.connect(drop_price_book, sender=Price, dispatch_uid="pricing.drop_price_book.delete")
