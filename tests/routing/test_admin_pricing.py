"""Staff price an endpoint in the admin through the same service and rules as the API."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client

from groups.models import Workspace
from routing.models import Endpoint

PRICING = {"currency": "USD", "input_per_million": "0.50", "output_per_million": "1.50"}


def _add(admin_client: Client, workspace: Workspace, pricing: Any) -> Any:
    return admin_client.post(
        "/admin/routing/endpoint/add/",
        {
            "workspace": workspace.pk,
            "slug": "acme/llama",
            "region": "UNRESTRICTED",
            "pricing": json.dumps(pricing),
            "targets-TOTAL_FORMS": "1",
            "targets-INITIAL_FORMS": "0",
            "targets-MIN_NUM_FORMS": "0",
            "targets-MAX_NUM_FORMS": "4",
            "targets-0-provider": "OPENAI_COMPATIBLE",
            "targets-0-base_url": "http://127.0.0.1:9/v1",
            "targets-0-target_model": "llama-3",
        },
    )


def test_staff_create_a_priced_endpoint(admin_client: Client, workspace: Workspace) -> None:
    response = _add(admin_client, workspace, PRICING)

    assert response.status_code == 302, response.content[:2000]
    endpoint = Endpoint.objects.get(slug="acme/llama")
    assert endpoint.pricing == {**PRICING, "cached_input_per_million": "0.50"}


def test_a_bad_price_in_the_admin_is_a_form_error(
    admin_client: Client, workspace: Workspace
) -> None:
    response = _add(admin_client, workspace, {**PRICING, "input_per_million": "-1"})

    assert response.status_code == 200
    assert b"pricing.input_per_million" in response.content
    assert not Endpoint.objects.exists()
