"""Management API of money and time: endpoint pricing, SPEND and MONTH limits, expiring keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rest_framework.test import APIClient

from groups.models import AuditEvent, Workspace
from keys.models import ApiKey
from routing.models import Endpoint
from tests.api.conftest import TARGET, error_code, group_body
from tests.api.test_keys import REGISTERED, keys_path, signed_post, signer

pytestmark = pytest.mark.django_db
__all__ = ["signer"]  # the keys suite's registration key pair, used here

PRICING = {
    "currency": "USD",
    "input_per_million": "0.50",
    "output_per_million": "1.50",
    "cached_input_per_million": "0.25",
}
SPEND_DAY = {"type": "SPEND", "unit": "DAY", "threshold": 1000}


def create(api: APIClient, **body: Any) -> Any:
    payload = {"slug": "acme/llama", "targets": [dict(TARGET)], **body}
    return api.post("/v1/gateway/endpoints", payload, format="json")


def patch(api: APIClient, endpoint: dict[str, Any], body: dict[str, Any]) -> Any:
    return api.patch(f"/v1/gateway/endpoints/{endpoint['id']}", body, format="json")


def spend_group(api: APIClient, *limits: dict[str, Any], slug: str = "acme/llama") -> Any:
    model = {"slug": slug, "usage_limits": list(limits)}
    return api.post("/v1/gateway/groups", group_body("cust_s", model), format="json")


def test_an_endpoint_is_created_with_its_prices_and_cached_defaults_to_input(
    api: APIClient,
) -> None:
    response = create(api, pricing={k: v for k, v in PRICING.items() if "cached" not in k})

    assert response.status_code == 200, response.content
    assert response.json()["pricing"] == {**PRICING, "cached_input_per_million": "0.50"}
    assert api.get(f"/v1/gateway/endpoints/{response.json()['id']}").json()["pricing"] == {
        **PRICING,
        "cached_input_per_million": "0.50",
    }


def test_an_unpriced_endpoint_answers_without_pricing(api: APIClient) -> None:
    assert "pricing" not in create(api).json()


def test_patch_sets_changes_and_removes_prices_with_an_audit_row(api: APIClient) -> None:
    endpoint = create(api).json()

    priced = patch(api, endpoint, {"pricing": PRICING})
    repriced = patch(api, endpoint, {"pricing": {**PRICING, "output_per_million": "2"}})
    removed = patch(api, endpoint, {"pricing": None})

    assert priced.json()["pricing"] == PRICING
    assert repriced.json()["pricing"]["output_per_million"] == "2"
    assert removed.status_code == 200 and "pricing" not in removed.json()
    assert Endpoint.objects.get(pk=endpoint["id"]).pricing is None
    last = AuditEvent.objects.filter(action="endpoint.update").order_by("created_at").last()
    assert last is not None and last.before is not None and last.after is not None
    assert last.before["pricing"]["output_per_million"] == "2"
    assert "pricing" not in last.after


@pytest.mark.parametrize(
    ("pricing", "param"),
    [
        ({**PRICING, "input_per_million": "-1"}, "pricing.input_per_million"),
        ({**PRICING, "input_per_million": "0.1234567"}, "pricing.input_per_million"),
        ({**PRICING, "output_per_million": 1.5}, "pricing.output_per_million"),
        ({**PRICING, "output_per_million": "1e3"}, "pricing.output_per_million"),
        ({**PRICING, "output_per_million": "NaN"}, "pricing.output_per_million"),
        ({**PRICING, "output_per_million": "1000000.000001"}, "pricing.output_per_million"),
        ({**PRICING, "currency": "usd"}, "pricing.currency"),
        ({**PRICING, "currency": "XYZ"}, "pricing.currency"),
        ({k: v for k, v in PRICING.items() if k != "output_per_million"}, None),
        ("0.50", "pricing"),
    ],
)
def test_bad_prices_are_400_naming_the_field(api: APIClient, pricing: Any, param: Any) -> None:
    response = create(api, pricing=pricing)

    assert response.status_code == 400, response.content
    assert error_code(response) == "invalid_pricing"
    if param is not None:
        assert response.json()["error"]["param"] == param
    assert not Endpoint.objects.exists()


def test_an_unknown_pricing_field_is_400(api: APIClient) -> None:
    response = create(api, pricing={**PRICING, "per_request": "1"})

    assert response.status_code == 400
    assert error_code(response) == "unknown_field"


def test_zero_prices_and_six_decimals_are_accepted(api: APIClient) -> None:
    pricing = {"currency": "EUR", "input_per_million": "0", "output_per_million": "0.000001"}

    assert create(api, pricing=pricing).status_code == 200


def test_a_spend_limit_needs_a_priced_slug(api: APIClient) -> None:
    create(api)

    response = spend_group(api, SPEND_DAY)

    assert response.status_code == 400
    assert error_code(response) == "spend_limit_unpriced"
    assert response.json()["error"]["param"] == "models[0].usage_limits"


def test_a_spend_limit_on_a_priced_slug_is_kept(api: APIClient) -> None:
    create(api, pricing=PRICING)

    response = spend_group(api, SPEND_DAY, {"type": "SPEND", "unit": "MONTH", "threshold": 20000})

    assert response.status_code == 200, response.content
    assert response.json()["models"][0]["usage_limits"] == [
        SPEND_DAY,
        {"type": "SPEND", "unit": "MONTH", "threshold": 20000},
    ]


def test_prices_under_a_spend_limit_may_change_but_not_go_away_or_change_currency(
    api: APIClient,
) -> None:
    endpoint = create(api, pricing=PRICING).json()
    spend_group(api, SPEND_DAY)

    removed = patch(api, endpoint, {"pricing": None})
    euros = patch(api, endpoint, {"pricing": {**PRICING, "currency": "EUR"}})
    dearer = patch(api, endpoint, {"pricing": {**PRICING, "input_per_million": "0.60"}})

    assert removed.status_code == 400 and error_code(removed) == "pricing_in_use"
    assert euros.status_code == 400 and error_code(euros) == "pricing_in_use"
    assert dearer.status_code == 200
    assert (Endpoint.objects.get(pk=endpoint["id"]).pricing or {})["currency"] == "USD"


@pytest.mark.parametrize(
    ("usage_limits", "rate_limits", "code"),
    [
        ([], [{"type": "SPEND", "unit": "MINUTE", "threshold": 5}], "invalid_limit_type"),
        ([{"type": "SPEND", "unit": "WEEK", "threshold": 5}], [], "invalid_limit_unit"),
        ([{**SPEND_DAY, "threshold": 2**53}], [], "invalid_threshold"),
        ([SPEND_DAY, {**SPEND_DAY, "threshold": 5}], [], "duplicate_limit"),
        ([], [{"type": "TOKEN", "unit": "MONTH", "threshold": 5}], "invalid_limit_unit"),
    ],
)
def test_spend_and_month_limit_rules(
    api: APIClient, usage_limits: list, rate_limits: list, code: str
) -> None:
    create(api, pricing=PRICING)
    model = {"slug": "acme/llama", "usage_limits": usage_limits, "rate_limits": rate_limits}

    response = api.post("/v1/gateway/groups", group_body("cust_s", model), format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code


def test_month_limits_of_every_type_next_to_day_limits(api: APIClient) -> None:
    create(api)
    limits = [
        {"type": "TOKEN", "unit": "DAY", "threshold": 10},
        {"type": "TOKEN", "unit": "MONTH", "threshold": 100},
        {"type": "REQUEST", "unit": "MONTH", "threshold": 50},
    ]

    created = spend_group(api, *limits)
    usage = api.get(f"/v1/gateway/groups/{created.json()['id']}/usage").json()

    assert created.status_code == 200, created.content
    assert [(row["type"], row["unit"]) for row in usage["usage"]["acme/llama"]] == [
        ("TOKEN", "DAY"),
        ("TOKEN", "MONTH"),
        ("REQUEST", "MONTH"),
    ]


def test_a_cascading_child_spend_limit_may_not_exceed_its_parent(api: APIClient) -> None:
    create(api, pricing=PRICING)
    parent = api.post(
        "/v1/gateway/groups",
        group_body(
            "parent",
            {"slug": "acme/llama", "usage_limits": [SPEND_DAY]},
            limit_enforcement="CASCADING",
        ),
        format="json",
    ).json()
    child = group_body(
        "child",
        {"slug": "acme/llama", "usage_limits": [{**SPEND_DAY, "threshold": 1001}]},
        parent_group_id=parent["id"],
    )

    response = api.post("/v1/gateway/groups", child, format="json")

    assert response.status_code == 400
    assert error_code(response) == "ceiling_exceeded"


# Expiring keys


def _future(seconds: int = 3600) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def test_a_key_minted_with_expires_at_answers_it(api: APIClient, group: dict) -> None:
    expires = _future()

    minted = api.post(keys_path(group), {"name": "t", "expires_at": expires}, format="json")
    fetched = api.get(f"{keys_path(group)}/{minted.json()['prefix']}")

    assert minted.status_code == 200, minted.content
    assert minted.json()["expires_at"] == expires.replace("Z", ".000Z")
    assert fetched.json()["expires_at"] == expires.replace("Z", ".000Z")
    assert ApiKey.objects.get().expires_at == datetime.fromisoformat(expires)


def test_a_key_minted_with_a_null_expiry_never_expires(api: APIClient, group: dict) -> None:
    minted = api.post(keys_path(group), {"expires_at": None}, format="json")

    assert minted.status_code == 200
    assert "expires_at" not in minted.json()
    assert ApiKey.objects.get().expires_at is None


@pytest.mark.parametrize(
    ("expires_at", "code"),
    [
        ("2020-01-01T00:00:00Z", "expires_at_past"),
        ("2099-01-01T00:00:00", "invalid_expires_at"),
        ("2099-01-01", "invalid_expires_at"),
        ("tomorrow", "invalid_expires_at"),
        ("2099-02-30T00:00:00Z", "invalid_expires_at"),
        ("9999-12-31T23:59:59-23:59", "invalid_expires_at"),
        (4102444800, "invalid_type"),
    ],
)
def test_bad_expiries_are_400(api: APIClient, group: dict, expires_at: Any, code: str) -> None:
    response = api.post(keys_path(group), {"expires_at": expires_at}, format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code
    assert not ApiKey.objects.exists()


def test_offsets_and_nanoseconds_are_read_as_rfc_3339(api: APIClient, group: dict) -> None:
    response = api.post(
        keys_path(group), {"expires_at": "2099-01-01T02:00:00.123456789+02:00"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["expires_at"] == "2099-01-01T00:00:00.123Z"


def test_any_rfc_3339_offset_is_stored_in_utc(api: APIClient, group: dict) -> None:
    response = api.post(
        keys_path(group), {"expires_at": "8574-07-19T22:12:37+19:55"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["expires_at"] == "8574-07-19T02:17:37.000Z"


def test_a_legacy_user_key_may_expire(api: APIClient, user: dict) -> None:
    expires = _future()

    response = api.post(
        f"/v1/gateway/users/{user['id']}/api_keys", {"expires_at": expires}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["expires_at"] == expires.replace("Z", ".000Z")


def test_a_registered_key_may_expire(
    api: APIClient, group: dict, signer: Ed25519PrivateKey, workspace: Workspace
) -> None:
    expires = _future()
    raw = json.dumps({"key": REGISTERED, "expires_at": expires}).encode()

    response = signed_post(api, f"{keys_path(group)}/register", raw, signer.sign(raw))

    assert response.status_code == 200, response.content
    assert api.get(f"{keys_path(group)}/reg_Zq8Kd2Lm9Pw4").json()["expires_at"] == expires.replace(
        "Z", ".000Z"
    )
