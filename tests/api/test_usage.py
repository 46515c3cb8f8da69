"""GET /v1/gateway/groups/{id}/usage: the final shape, nulls before the first request."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_usage_lists_effective_daily_limits_with_nulls_before_any_request(
    api: APIClient, group: dict
) -> None:
    response = api.get(f"/v1/gateway/groups/{group['id']}/usage")

    assert response.status_code == 200
    assert response.json() == {
        "customer_id": "cust_1",
        "usage": {
            "acme/llama": [
                {
                    "type": "TOKEN",
                    "unit": "DAY",
                    "threshold": 10_000,
                    "current_usage": None,
                    "reset_at": None,
                }
            ]
        },
    }


def test_usage_of_a_deleted_group_is_404(api: APIClient, group: dict) -> None:
    api.delete(f"/v1/gateway/groups/{group['id']}")

    response = api.get(f"/v1/gateway/groups/{group['id']}/usage")

    assert response.status_code == 404
