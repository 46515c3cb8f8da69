"""Federated keys of groups: mint, list, get, revoke, signed registration."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from rest_framework.test import APIClient

from groups.models import AuditEvent, Workspace
from keys.models import ApiKey
from tests.api.conftest import error_code

pytestmark = pytest.mark.django_db

REGISTERED = "reg_Zq8Kd2Lm9Pw4.Xv7Bn3Hs6Tg1Yc5Jr0Ua8Ie2Ow4Qk"


def keys_path(group: dict) -> str:
    return f"/v1/gateway/groups/{group['id']}/api_keys"


@pytest.fixture
def signer(workspace: Workspace) -> Ed25519PrivateKey:
    """The workspace's registration key pair (public half set as staff would in the admin)."""
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    Workspace.objects.filter(pk=workspace.pk).update(
        ed25519_public_key=base64.b64encode(raw).decode()
    )
    return private


def signed_post(api: APIClient, path: str, raw: bytes, signature: bytes | None) -> Any:
    headers: dict[str, Any] = (
        {} if signature is None else {"HTTP_X_SIGNATURE": base64.b64encode(signature).decode()}
    )
    return api.post(path, raw, content_type="application/json", **headers)


def test_mint_returns_the_plaintext_once(api: APIClient, group: dict) -> None:
    response = api.post(keys_path(group), {"name": "prod"}, format="json")

    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"api_key", "prefix", "name"}
    assert body["api_key"].startswith(body["prefix"] + ".")
    assert body["prefix"].startswith("sky_") and len(body["prefix"]) == 16
    assert body["name"] == "prod"
    assert not ApiKey.objects.filter(key_hash__contains=body["api_key"]).exists()


def test_a_key_is_revoked_only_through_its_own_live_owner(
    api: APIClient, other_api: APIClient, group: dict, user: dict
) -> None:
    minted = api.post(keys_path(group), {"name": "a"}, format="json").json()
    sibling = api.post(
        "/v1/gateway/groups",
        {"metadata": {"external_entity_id": "cust_2"}, "models": [{"slug": "acme/llama"}]},
        format="json",
    ).json()
    prefix = minted["prefix"]

    through_sibling = api.delete(f"{keys_path(sibling)}/{prefix}")
    through_unknown = api.delete(f"/v1/gateway/groups/grp_unknown/api_keys/{prefix}")
    through_user_route = api.delete(f"/v1/gateway/users/{group['id']}/api_keys/{prefix}")
    through_a_user = api.delete(f"/v1/gateway/users/{user['id']}/api_keys/{prefix}")
    from_other_tenant = other_api.delete(f"{keys_path(group)}/{prefix}")

    assert (through_sibling.status_code, error_code(through_sibling)) == (404, "key_not_found")
    assert (through_unknown.status_code, error_code(through_unknown)) == (404, "not_found")
    assert (through_user_route.status_code, error_code(through_user_route)) == (404, "not_found")
    assert (through_a_user.status_code, error_code(through_a_user)) == (404, "key_not_found")
    assert (from_other_tenant.status_code, error_code(from_other_tenant)) == (404, "not_found")
    assert ApiKey.objects.get(prefix=prefix).revoked_at is None


def test_revoking_a_key_is_one_locked_read_an_update_and_its_audit_row(
    api: APIClient, group: dict, django_assert_num_queries: Any
) -> None:
    minted = api.post(keys_path(group), {"name": "a"}, format="json").json()
    api.get(keys_path(group))  # the management key verified: authentication reads nothing

    # Inside the test's transaction the service's own is a savepoint: SAVEPOINT and RELEASE.
    with django_assert_num_queries(3 + 2):
        revoked = api.delete(f"{keys_path(group)}/{minted['prefix']}")

    assert revoked.status_code == 200
    assert ApiKey.objects.get(prefix=minted["prefix"]).revoked_at is not None


def test_minting_a_key_reads_its_owner_and_prefix_then_writes_it_and_its_audit_row(
    api: APIClient, group: dict, django_assert_num_queries: Any
) -> None:
    api.get(keys_path(group))  # the management key verified: authentication reads nothing

    # Inside the test's transaction the service's own is a savepoint: SAVEPOINT and RELEASE.
    with django_assert_num_queries(4 + 2):
        minted = api.post(keys_path(group), {"name": "a"}, format="json")

    assert minted.status_code == 200
    assert ApiKey.objects.filter(prefix=minted.json()["prefix"]).exists()


def test_mint_without_a_body_is_allowed(api: APIClient, group: dict) -> None:
    response = api.post(keys_path(group))

    assert response.status_code == 200
    assert response.json()["name"] == ""


def test_list_get_and_revoke_by_prefix(api: APIClient, group: dict, manage_key: str) -> None:
    minted = api.post(keys_path(group), {"name": "a"}, format="json").json()
    path = f"{keys_path(group)}/{minted['prefix']}"

    listed = api.get(keys_path(group)).json()["items"]
    fetched = api.get(path)
    revoked = api.delete(path)
    again = api.delete(path)
    gone = api.get(path)

    assert listed == [{"prefix": minted["prefix"], "name": "a"}]
    assert fetched.json() == {"prefix": minted["prefix"], "name": "a"}
    assert revoked.status_code == 200
    assert revoked.json() == {"prefix": minted["prefix"]}
    assert again.status_code == 404
    assert gone.status_code == 404
    assert api.get(keys_path(group)).json()["items"] == []
    actors = set(
        AuditEvent.objects.filter(action__startswith="api_key.").values_list("actor", flat=True)
    )
    assert actors == {f"mgmt:{manage_key[:16]}"}


def test_a_key_is_only_found_under_its_own_group(
    api: APIClient, group: dict, endpoints: list
) -> None:
    from tests.api.conftest import group_body, model

    other = api.post(
        "/v1/gateway/groups", group_body("o", model("acme/llama")), format="json"
    ).json()
    minted = api.post(keys_path(group), {}, format="json").json()

    response = api.get(f"{keys_path(other)}/{minted['prefix']}")

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "n" * 256}, "max_length"),
        ({"name": 5}, "invalid_type"),
        ({"label": "x"}, "unknown_field"),
        ({"name": None}, "null"),
    ],
)
def test_mint_validation_codes(api: APIClient, group: dict, body: dict, code: str) -> None:
    response = api.post(keys_path(group), body, format="json")

    assert response.status_code == 400, response.content
    assert error_code(response) == code


def test_register_with_a_valid_signature(
    api: APIClient, group: dict, signer: Ed25519PrivateKey, manage_key: str
) -> None:
    raw = json.dumps({"key": REGISTERED, "name": "byok"}).encode()

    response = signed_post(api, f"{keys_path(group)}/register", raw, signer.sign(raw))

    assert response.status_code == 200, response.content
    assert response.json() == {"ok": True}
    assert api.get(f"{keys_path(group)}/reg_Zq8Kd2Lm9Pw4").json() == {
        "prefix": "reg_Zq8Kd2Lm9Pw4",
        "name": "byok",
    }
    assert AuditEvent.objects.filter(
        action="api_key.register", actor=f"mgmt:{manage_key[:16]}"
    ).exists()


def test_signature_covers_the_exact_raw_bytes(
    api: APIClient, group: dict, signer: Ed25519PrivateKey
) -> None:
    signed = json.dumps({"key": REGISTERED}).encode()
    sent = json.dumps({"key": REGISTERED}, indent=2).encode()

    response = signed_post(api, f"{keys_path(group)}/register", sent, signer.sign(signed))

    assert response.status_code == 400
    assert error_code(response) == "invalid_signature"


def test_register_without_signature_or_public_key_is_400(
    api: APIClient, group: dict, workspace: Workspace
) -> None:
    raw = json.dumps({"key": REGISTERED}).encode()

    no_public_key = signed_post(api, f"{keys_path(group)}/register", raw, b"x" * 64)
    Workspace.objects.filter(pk=workspace.pk).update(
        ed25519_public_key=base64.b64encode(b"\x01" * 32).decode()
    )
    no_header = signed_post(api, f"{keys_path(group)}/register", raw, None)

    assert error_code(no_public_key) == "invalid_signature"
    assert error_code(no_header) == "invalid_signature"


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("short", "key_too_short"),
        ("a" * 129, "key_too_long"),
        ("acme." + "ab" * 20, "key_low_entropy"),
        ("gwm_" + REGISTERED, "invalid_key"),
        ("Zq8Kd2Lm9Pw4Xv7Bn3Hs6Tg1Yc5Jr0Ua8Ie2Ow4Qk", "invalid_key_format"),
    ],
)
def test_register_validation_codes(
    api: APIClient, group: dict, signer: Ed25519PrivateKey, key: str, code: str
) -> None:
    raw = json.dumps({"key": key}).encode()

    response = signed_post(api, f"{keys_path(group)}/register", raw, signer.sign(raw))

    assert response.status_code == 400
    assert error_code(response) == code


def test_register_duplicate_prefix_is_400(
    api: APIClient, group: dict, signer: Ed25519PrivateKey
) -> None:
    raw = json.dumps({"key": REGISTERED}).encode()
    signed_post(api, f"{keys_path(group)}/register", raw, signer.sign(raw))

    response = signed_post(api, f"{keys_path(group)}/register", raw, signer.sign(raw))

    assert response.status_code == 400
    assert error_code(response) == "key_prefix_taken"


def test_register_rejects_unknown_fields(
    api: APIClient, group: dict, signer: Ed25519PrivateKey
) -> None:
    raw = json.dumps({"key": REGISTERED, "group": "x"}).encode()

    response = signed_post(api, f"{keys_path(group)}/register", raw, signer.sign(raw))

    assert response.status_code == 400
    assert error_code(response) == "unknown_field"
