"""A leaked key's rotation: a replacement shown once, the old key revoked now or at a chosen time,
all audited; revoke asks first; a reload never repeats a write."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway_project.kernel.errors import ValidationFailed
from groups.models import AuditEvent, Group, Workspace
from groups.services.audit import SYSTEM_ACTOR
from keys.models import ApiKey, ManagementKey
from keys.selectors import api_key_resolve, management_key_authenticate
from keys.services import (
    SCHEDULED_ACTOR,
    api_key_create,
    api_key_register,
    api_key_rotate,
    management_key_create,
    scheduled_revokes_run,
)

KEY_IN_PAGE = re.compile(r'<code id="minted-key">([^<]+)</code>')


def _rotate(client: Client, key: ApiKey, **form: str) -> tuple[str, str]:
    """Post the rotate form; (the redirect's target, the plaintext that page shows)."""
    url = reverse("admin:keys_apikey_rotate", args=[key.pk])
    posted = client.post(url, form)
    assert posted.status_code == 303, posted.content.decode()[:2000]
    shown = client.get(posted["Location"]).content.decode()
    match = KEY_IN_PAGE.search(shown)
    assert match is not None
    return posted["Location"], match.group(1)


def test_rotating_now_shows_the_replacement_once_and_revokes_the_leaked_key(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    old, old_plain = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR, name="ci")
    form = admin_client.get(reverse("admin:keys_apikey_rotate", args=[old.pk]))

    location, new_plain = _rotate(admin_client, old, revoke="now")
    reloaded = admin_client.get(location).content.decode()

    assert form.status_code == 200 and "Mint the replacement" in form.content.decode()
    assert api_key_resolve(plaintext=old_plain) is None
    new = api_key_resolve(plaintext=new_plain)
    assert new is not None and new.group_id == group.pk and new.name == "ci"
    assert new_plain not in reloaded and "already shown" in reloaded
    assert ApiKey.objects.filter(group=group).count() == 2
    rotation = AuditEvent.objects.get(action="api_key.rotate", object_id=old.pk)
    assert rotation.actor == "staff:admin"
    assert (rotation.after or {})["replacement_prefix"] == new.prefix
    assert AuditEvent.objects.filter(action="api_key.revoke", object_id=old.pk).count() == 1


def test_a_scheduled_revoke_keeps_the_old_key_working_until_its_time(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    old, old_plain = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    at = timezone.now() + timedelta(hours=2)

    _, new_plain = _rotate(
        admin_client, old, revoke="at", revoke_at=at.strftime("%Y-%m-%d %H:%M:%S")
    )
    still_working = api_key_resolve(plaintext=old_plain) is not None
    early = scheduled_revokes_run(now=timezone.now())
    due = scheduled_revokes_run(now=at + timedelta(seconds=1))

    assert still_working and early == []
    assert due == [old.prefix]
    assert api_key_resolve(plaintext=old_plain) is None
    assert api_key_resolve(plaintext=new_plain) is not None
    revoke = AuditEvent.objects.get(action="api_key.revoke", object_id=old.pk)
    assert revoke.actor == SCHEDULED_ACTOR


def test_the_rotate_form_refuses_a_revoke_time_in_the_past(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    old, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    past = (timezone.now() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")

    response = admin_client.post(
        reverse("admin:keys_apikey_rotate", args=[old.pk]), {"revoke": "at", "revoke_at": past}
    )

    assert response.status_code == 200
    assert "Pick a time in the future" in response.content.decode()
    assert ApiKey.objects.filter(group=group).count() == 1


def test_a_registered_key_is_not_rotated_by_minting(workspace: Workspace, group: Group) -> None:
    key = api_key_register(
        workspace=workspace,
        group=group,
        actor=SYSTEM_ACTOR,
        key="acme_reg1.Zq8xv2LmN4pR7tYwKd93Hs0Q",
    )

    with pytest.raises(ValidationFailed) as caught:
        api_key_rotate(workspace=workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)

    assert caught.value.code == "registered_key_rotation"
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_another_tenants_key_cannot_be_rotated(
    workspace: Workspace, other_workspace: Workspace, group: Group
) -> None:
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    with pytest.raises(Exception) as caught:
        api_key_rotate(workspace=other_workspace, prefix=key.prefix, actor=SYSTEM_ACTOR)

    assert getattr(caught.value, "code", "") == "key_not_found"
    assert api_key_resolve(plaintext=plaintext) is not None


def test_a_management_key_rotates_with_its_scope(
    admin_client: Client, workspace: Workspace
) -> None:
    old, old_plain = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR, scope="VIEW")

    posted = admin_client.post(
        reverse("admin:keys_managementkey_rotate", args=[old.pk]), {"revoke": "now"}
    )
    new_plain = KEY_IN_PAGE.search(  # type: ignore[union-attr]
        admin_client.get(posted["Location"]).content.decode()
    ).group(1)

    assert management_key_authenticate(plaintext=old_plain) is None
    new = management_key_authenticate(plaintext=new_plain)
    assert new is not None and new.scope == "VIEW"
    assert ManagementKey.objects.count() == 2


def test_the_revoke_page_asks_then_revokes_and_redirects(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    url = reverse("admin:keys_apikey_revoke", args=[key.pk])

    asked = admin_client.get(url)
    unconfirmed = admin_client.post(url, {})
    live_after_asking = api_key_resolve(plaintext=plaintext) is not None
    done = admin_client.post(url, {"confirm": "yes"})

    assert asked.status_code == unconfirmed.status_code == 200
    assert "cannot be undone" in asked.content.decode() and live_after_asking
    assert done.status_code == 303
    assert done["Location"] == reverse("admin:keys_apikey_change", args=[key.pk])
    assert api_key_resolve(plaintext=plaintext) is None


def test_the_key_page_offers_rotate_and_revoke_and_no_save_button(
    admin_client: Client, workspace: Workspace, group: Group
) -> None:
    key, _ = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)

    page = admin_client.get(reverse("admin:keys_apikey_change", args=[key.pk])).content.decode()

    assert 'id="rotate-link"' in page and 'id="revoke-link"' in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page
