"""Presented keys are checked in constant time: the stored hash is compared with
hmac.compare_digest, and a key with an unknown prefix is still hashed (no early exit that would
tell existing prefixes from unknown ones by timing)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from rest_framework.test import APIClient

from groups.models import Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys import hashing
from keys.selectors import management_key_authenticate
from keys.services import management_key_create
from tests.proxy.conftest import GatewayThread, Tenant

UNKNOWN_MANAGEMENT = "gwm_000000000000.unknownunknownunknownunknownunknown0000"
UNKNOWN_FEDERATED = "sky_000000000000.unknownunknownunknownunknownunknown0000"


class Recorder:
    """Wraps a stdlib function, recording each call's arguments."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args)
        return self.real(*args, **kwargs)


@pytest.fixture
def compare_digest(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", recorder)
    return recorder


@pytest.fixture
def hmac_digest(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(hmac.digest)
    monkeypatch.setattr(hmac, "digest", recorder)
    return recorder


def hashed(recorder: Recorder, plaintext: str) -> bool:
    """Whether `plaintext` went through the key HMAC."""
    return any(len(args) > 1 and args[1] == plaintext.encode() for args in recorder.calls)


def test_key_matches_compares_with_compare_digest(compare_digest: Recorder) -> None:
    stored = hashing.key_hash("gwm_abcdefghijkl.secret")

    assert hashing.key_matches("gwm_abcdefghijkl.secret", stored)
    assert not hashing.key_matches("gwm_abcdefghijkl.wrong", stored)
    assert compare_digest.calls == [
        (stored, stored),
        (hashing.key_hash("gwm_abcdefghijkl.wrong"), stored),
    ]


@pytest.mark.django_db
def test_a_wrong_secret_on_a_known_prefix_goes_through_compare_digest(
    workspace: Workspace, compare_digest: Recorder
) -> None:
    key, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    forged = key.prefix + "." + "x" * 40

    assert management_key_authenticate(plaintext=forged) is None
    assert management_key_authenticate(plaintext=plaintext) == key
    assert [args[1] for args in compare_digest.calls] == [key.key_hash, key.key_hash]


@pytest.mark.django_db
@pytest.mark.parametrize("presented", [UNKNOWN_MANAGEMENT, UNKNOWN_FEDERATED])
def test_the_management_api_hashes_a_key_with_an_unknown_prefix(
    workspace: Workspace, hmac_digest: Recorder, presented: str
) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {presented}")

    response = client.get("/v1/gateway/groups")

    assert response.status_code == 401
    assert hashed(hmac_digest, presented)


def test_the_inference_path_hashes_a_key_with_an_unknown_prefix(
    gateway: GatewayThread,  # noqa: F811
    tenant: Tenant,  # noqa: F811
    hmac_digest: Recorder,
) -> None:
    response = httpx.get(
        gateway.url + "/v1/models", headers={"Authorization": f"Bearer {UNKNOWN_FEDERATED}"}
    )

    assert response.status_code == 401
    assert hashed(hmac_digest, UNKNOWN_FEDERATED)


def test_a_key_is_stored_as_its_hmac_sha256_under_the_pepper(settings) -> None:
    # Keys issued by any earlier version keep authenticating: the stored form never changes.
    settings.GATEWAY_KEY_PEPPER = "pepper-for-this-test"
    plaintext = "sky_0123456789ab.secretsecretsecretsecretsecretsecret"

    stored = hashing.key_hash(plaintext)

    assert stored == hmac.new(b"pepper-for-this-test", plaintext.encode(), "sha256").hexdigest()
    assert stored == "a0000841537e45f50f8589cef15ed8cce8c039e4bda859e58d0d5f6795597939"
