"""Staff admin for keys: lists without secrets, mint shows the plaintext once, revoke action."""

from __future__ import annotations

import re

from django.test import Client
from django.urls import reverse

from groups.models import AuditEvent, Group, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ApiKey, ManagementKey
from keys.selectors import api_key_resolve, management_key_authenticate
from keys.services import api_key_create, management_key_create

KEY_IN_PAGE = re.compile(r'<code id="minted-key">([^<]+)</code>')


def test_api_key_pages_render_without_the_hash(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    key, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, name="ci")

    listing = admin_client.get(reverse("admin:keys_apikey_changelist"), {"q": key.prefix})
    detail = admin_client.get(reverse("admin:keys_apikey_change", args=[key.pk]))
    add = admin_client.get(reverse("admin:keys_apikey_add"))

    assert listing.status_code == detail.status_code == add.status_code == 200
    assert key.prefix in listing.content.decode()
    assert key.prefix in detail.content.decode()
    for page in (listing, detail, add):
        assert key.key_hash not in page.content.decode()
        assert "key_hash" not in page.content.decode()


def test_api_keys_are_searchable_by_group_external_id(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    key, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    found = admin_client.get(reverse("admin:keys_apikey_changelist"), {"q": "cust_1"})
    missed = admin_client.get(reverse("admin:keys_apikey_changelist"), {"q": "cust_999"})

    assert key.prefix in found.content.decode()
    assert key.prefix not in missed.content.decode()


def test_minting_an_api_key_shows_the_plaintext_exactly_once(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    posted = admin_client.post(
        reverse("admin:keys_apikey_add"), {"group": group.id, "name": "support"}
    )
    response = admin_client.get(posted["Location"])
    reloaded = admin_client.get(posted["Location"])

    assert posted.status_code == 303 and response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    plaintext = KEY_IN_PAGE.search(response.content.decode()).group(1)  # type: ignore[union-attr]
    assert plaintext not in reloaded.content.decode()
    assert "already shown" in reloaded.content.decode()
    assert ApiKey.objects.filter(group=group).count() == 1
    key = api_key_resolve(plaintext=plaintext)
    assert key is not None and key.group_id == group.id and key.name == "support"
    assert AuditEvent.objects.get(object_id=key.id, action="api_key.create").actor == "staff:admin"
    for url in (
        reverse("admin:keys_apikey_change", args=[key.pk]),
        reverse("admin:keys_apikey_changelist"),
    ):
        assert plaintext not in admin_client.get(url).content.decode()


def test_minting_a_management_key_shows_the_plaintext_once(
    admin_client: Client, workspace: Workspace
) -> None:
    response = admin_client.post(
        reverse("admin:keys_managementkey_add"),
        {"workspace": workspace.id, "name": "ops", "scope": "VIEW"},
        follow=True,
    )

    plaintext = KEY_IN_PAGE.search(response.content.decode()).group(1)  # type: ignore[union-attr]
    key = management_key_authenticate(plaintext=plaintext)
    assert key is not None and key.scope == "VIEW" and key.workspace_id == workspace.id
    detail = admin_client.get(reverse("admin:keys_managementkey_change", args=[key.pk]))
    assert detail.status_code == 200 and plaintext not in detail.content.decode()


def test_revoke_action_revokes_through_the_service(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    first, first_plain = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    second, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    asked = admin_client.post(
        reverse("admin:keys_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [first.pk]},
    )
    still_live = api_key_resolve(plaintext=first_plain) is not None
    response = admin_client.post(
        reverse("admin:keys_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [first.pk], "confirm": "yes"},
        follow=True,
    )

    assert "cannot be undone" in asked.content.decode() and still_live
    assert "Revoked 1 key(s)." in response.content.decode()
    assert api_key_resolve(plaintext=first_plain) is None
    assert ApiKey.objects.get(pk=second.pk).revoked_at is None
    assert (
        AuditEvent.objects.get(object_id=first.id, action="api_key.revoke").actor == "staff:admin"
    )


def test_management_key_revoke_action(admin_client: Client, workspace: Workspace) -> None:
    key, plaintext = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)

    admin_client.post(
        reverse("admin:keys_managementkey_changelist"),
        {"action": "revoke_selected", "_selected_action": [key.pk], "confirm": "yes"},
    )

    assert management_key_authenticate(plaintext=plaintext) is None
    assert ManagementKey.objects.get(pk=key.pk).revoked_at is not None


def test_keys_cannot_be_deleted_in_the_admin(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    key, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    response = admin_client.get(reverse("admin:keys_apikey_delete", args=[key.pk]))

    assert response.status_code == 403
