"""The admin usage dashboard shows spend next to tokens for priced slugs, exact to the decimal."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from django.test import Client
from django.utils import timezone

from billing.models import UsageEvent
from groups.models import Workspace

DASHBOARD = "/admin/billing/usageevent/dashboard/"


def test_a_priced_slug_charts_its_spend_next_to_its_tokens(
    admin_client: Client, workspace: Workspace, make_event: Callable[..., UsageEvent]
) -> None:
    now = timezone.now()
    priced = {"cost_currency": "USD", "model_slug": "acme/llama"}
    make_event(timestamp=now - timedelta(minutes=5), cost_amount=Decimal("0.000125"), **priced)
    make_event(timestamp=now - timedelta(minutes=4), cost_amount=Decimal("0.00000175"), **priced)
    make_event(timestamp=now - timedelta(days=3), cost_amount=Decimal("1.5"), **priced)
    make_event(timestamp=now - timedelta(minutes=3), model_slug="acme/qwen")

    response = admin_client.get(DASHBOARD, {"workspace": workspace.pk})

    charts = dict(response.context["charts"])
    titles = [chart.title for chart in charts["acme/llama"]]
    assert titles == [
        "Requests, last 24 h",
        "Tokens, last 24 h",
        "Spend (USD), last 24 h",
        "Requests, last 30 days",
        "Tokens, last 30 days",
        "Spend (USD), last 30 days",
    ]
    assert charts["acme/llama"][2].total == "0.00012675 USD"
    assert charts["acme/llama"][5].total == "1.50012675 USD"
    assert [chart.title for chart in charts["acme/qwen"]] == [
        "Requests, last 24 h",
        "Tokens, last 24 h",
        "Requests, last 30 days",
        "Tokens, last 30 days",
    ]
    assert b"Spend (USD), last 24 h: 0.00012675 USD" in response.content
