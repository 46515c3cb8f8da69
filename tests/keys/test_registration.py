"""Registering workspace-generated keys: Ed25519-signed bodies and key quality rules."""

from __future__ import annotations

import base64
import json
import secrets
import string

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway_project.kernel.errors import NotFound, ValidationFailed
from groups.models import AuditEvent, Group, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ApiKey
from keys.selectors import api_key_resolve
from keys.services import api_key_register, shannon_entropy
from keys.signatures import registration_signature_verify

ALPHABET = string.ascii_letters + string.digits


def random_text(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def strong_key(length: int = 48, prefix: str = "") -> str:
    """`prefix.secret` of `length` characters (a random 10-character prefix by default)."""
    prefix = prefix or "acme_" + random_text(5)
    return f"{prefix}.{random_text(length - len(prefix) - 1)}"


def signed(private: Ed25519PrivateKey, body: bytes) -> str:
    return base64.b64encode(private.sign(body)).decode()


def verify_code(workspace: Workspace, body: bytes, signature: str | None) -> str | None:
    try:
        registration_signature_verify(workspace=workspace, body=body, signature=signature)
    except ValidationFailed as exc:
        return exc.code
    return None


def test_a_correctly_signed_body_verifies(
    workspace: Workspace, signing_key: Ed25519PrivateKey
) -> None:
    body = json.dumps({"key": strong_key()}).encode()

    assert verify_code(workspace, body, signed(signing_key, body)) is None


def test_a_pem_public_key_is_accepted(workspace: Workspace) -> None:
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    workspace.ed25519_public_key = pem.decode()
    body = b'{"key": "x"}'

    assert verify_code(workspace, body, signed(private, body)) is None
    assert verify_code(workspace, body, signed(Ed25519PrivateKey.generate(), body)) == (
        "invalid_signature"
    )


def test_a_tampered_body_is_refused(workspace: Workspace, signing_key: Ed25519PrivateKey) -> None:
    body = json.dumps({"key": strong_key()}).encode()
    signature = signed(signing_key, body)

    assert verify_code(workspace, body + b" ", signature) == "invalid_signature"


def test_a_signature_by_another_key_is_refused(
    workspace: Workspace, signing_key: Ed25519PrivateKey
) -> None:
    body = b'{"key": "x"}'

    assert verify_code(workspace, body, signed(Ed25519PrivateKey.generate(), body)) == (
        "invalid_signature"
    )


@pytest.mark.parametrize(
    "signature", [None, "", "not base64 !!", base64.b64encode(b"short").decode()]
)
def test_a_missing_or_malformed_signature_is_refused(
    workspace: Workspace, signing_key: Ed25519PrivateKey, signature: str | None
) -> None:
    assert verify_code(workspace, b"{}", signature) == "invalid_signature"


def test_a_workspace_without_a_public_key_cannot_register(workspace: Workspace) -> None:
    private = Ed25519PrivateKey.generate()

    assert verify_code(workspace, b"{}", signed(private, b"{}")) == "invalid_signature"


def test_a_registered_key_is_stored_hashed_and_resolves(workspace: Workspace, group: Group) -> None:
    plaintext = strong_key()

    key = api_key_register(
        workspace=workspace, group=group, actor=SYSTEM_ACTOR, key=plaintext, name="r"
    )

    assert key.prefix == plaintext.split(".")[0] and key.registered
    assert plaintext not in str(list(ApiKey.objects.values()))
    resolved = api_key_resolve(plaintext=plaintext)
    assert resolved is not None and resolved.id == key.id
    assert AuditEvent.objects.filter(object_id=key.id, action="api_key.register").exists()


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (strong_key(31), "key_too_short"),
        (strong_key(129), "key_too_long"),
        ("acme." + "ab" * 20, "key_low_entropy"),
        ("acme." + "aaaabbbbccccdddd" * 2, "key_low_entropy"),
        ("with space " + strong_key(40), "invalid_key"),
        ("gwm_" + strong_key(40), "invalid_key"),
        (12345, "invalid_key"),
        (random_text(48), "invalid_key_format"),
        ("." + random_text(47), "invalid_key_format"),
        (strong_key(48, prefix="abc"), "invalid_key_format"),
        (strong_key(48, prefix="a" * 17), "invalid_key_format"),
        (strong_key(48, prefix="ac!me"), "invalid_key_format"),
        (strong_key(48, prefix="ac.me"), "invalid_key_format"),
        (strong_key(32, prefix="acme_" + random_text(11)), "invalid_key_format"),
    ],
)
def test_weak_or_malformed_keys_are_refused(
    workspace: Workspace, group: Group, key: object, code: str
) -> None:
    with pytest.raises(ValidationFailed) as exc:
        api_key_register(workspace=workspace, group=group, actor=SYSTEM_ACTOR, key=key)  # type: ignore[arg-type]

    assert (exc.value.code, exc.value.param) == (code, "key")
    assert not ApiKey.objects.exists()


def test_boundary_lengths_are_accepted(workspace: Workspace, group: Group) -> None:
    for length in (32, 128):
        api_key_register(
            workspace=workspace, group=group, actor=SYSTEM_ACTOR, key=strong_key(length)
        )

    assert ApiKey.objects.count() == 2


def test_entropy_is_measured_in_bits_per_character() -> None:
    assert shannon_entropy("abcd" * 8) == pytest.approx(2.0)
    assert shannon_entropy("abcdefgh" * 4) == pytest.approx(3.0)


def test_a_taken_prefix_is_refused(workspace: Workspace, group: Group) -> None:
    first = strong_key()
    api_key_register(workspace=workspace, group=group, actor=SYSTEM_ACTOR, key=first)

    with pytest.raises(ValidationFailed) as exc:
        api_key_register(
            workspace=workspace,
            group=group,
            actor=SYSTEM_ACTOR,
            key=strong_key(prefix=first.split(".")[0]),
        )

    assert exc.value.code == "key_prefix_taken"


def test_registering_into_another_workspaces_group_is_not_found(
    other_workspace: Workspace, group: Group
) -> None:
    with pytest.raises(NotFound):
        api_key_register(
            workspace=other_workspace, group=group, actor=SYSTEM_ACTOR, key=strong_key()
        )
