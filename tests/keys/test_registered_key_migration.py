"""Keys registered before the prefix became the part before the dot: re-prefixed, still working."""

from __future__ import annotations

import importlib
import secrets
import string

from django.apps import apps

from groups.models import AuditEvent, Group, Workspace
from groups.services.audit import audit_record
from keys.hashing import key_hash, key_well_formed
from keys.models import ApiKey
from keys.selectors import api_key_resolve

migration = importlib.import_module("keys.migrations.0002_registered_key_prefixes")


def _random(length: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


def _legacy(workspace: Workspace, group: Group, plaintext: str) -> ApiKey:
    """A registered key as stored before: its first 16 characters as the prefix."""
    key = ApiKey.objects.create(
        workspace=workspace,
        group=group,
        prefix=plaintext[:16],
        key_hash=key_hash(plaintext),
        registered=True,
    )
    audit_record(
        actor="system",
        action="api_key.register",
        obj_type="api_key",
        obj_id=key.id,
        workspace_id=workspace.id,
        after={"prefix": key.prefix, "name": ""},
    )
    return key


def test_legacy_prefixes_lose_every_secret_character_and_keys_keep_working(
    workspace: Workspace, group: Group
) -> None:
    dotted = f"acme.{_random(40)}"
    undotted = f"sky_{_random(44)}"
    minted_shape = ApiKey.objects.create(
        workspace=workspace, group=group, prefix="sky_000000000000", key_hash="0" * 64
    )
    rows = [_legacy(workspace, group, dotted), _legacy(workspace, group, undotted)]

    migration.forwards(apps, None)

    [cut, handle] = [ApiKey.objects.get(pk=row.pk).prefix for row in rows]
    assert cut == "acme"
    assert handle.startswith("reg_") and len(handle) == 16 and handle not in undotted
    assert ApiKey.objects.get(pk=minted_shape.pk).prefix == "sky_000000000000"
    for plaintext, row in ((dotted, rows[0]), (undotted, rows[1])):
        resolved = api_key_resolve(plaintext=plaintext)
        assert resolved is not None and resolved.pk == row.pk
        assert key_well_formed(plaintext)
    registrations = AuditEvent.objects.filter(action="api_key.register")
    audited = [(event.after or {})["prefix"] for event in registrations]
    assert sorted(audited) == sorted([cut, handle])


def test_a_cut_prefix_that_is_taken_becomes_an_opaque_handle(
    workspace: Workspace, group: Group
) -> None:
    first = _legacy(workspace, group, f"acme.{_random(40)}")
    second = _legacy(workspace, group, f"acme.{_random(40)}")

    migration.forwards(apps, None)

    assert ApiKey.objects.get(pk=first.pk).prefix == "acme"
    assert ApiKey.objects.get(pk=second.pk).prefix.startswith("reg_")
