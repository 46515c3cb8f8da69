"""The support staff's admin: pages render and every write goes through the services."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from gateway_project.kernel.encryption import decrypt
from groups.models import AuditEvent, CustomDomain, Group, OrgPrefix, Secret, Workspace
from groups.selectors import group_models
from tests.groups.conftest import GroupFactory, model


def _url(name: str, *args: Any) -> str:
    return reverse(f"admin:groups_{name}", args=args)


@pytest.mark.parametrize(
    "name", ["workspace", "orgprefix", "customdomain", "secret", "group", "auditevent"]
)
def test_changelist_and_add_pages_render(
    admin_client: Client, make_group: GroupFactory, name: str
) -> None:
    make_group()

    listing = admin_client.get(_url(f"{name}_changelist"))
    adding = admin_client.get(_url(f"{name}_add"))

    assert listing.status_code == 200
    assert adding.status_code == (403 if name == "auditevent" else 200)


def test_group_change_page_shows_effective_limits_with_their_source(
    admin_client: Client, make_group: GroupFactory
) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 777})], external_entity_id="the-root")
    child = make_group([model()], parent=root)

    page = admin_client.get(_url("group_change", child.pk))

    html = page.content.decode()
    assert page.status_code == 200
    assert "777" in html and _url("group_change", root.pk) in html


def test_group_search_finds_by_external_id(admin_client: Client, make_group: GroupFactory) -> None:
    make_group(external_entity_id="needle-42")
    make_group(external_entity_id="hay")

    page = admin_client.get(_url("group_changelist"), {"q": "needle"})

    assert "needle-42" in page.content.decode() and "hay" not in page.content.decode()


def test_group_add_form_creates_through_the_service(
    admin_client: Client, workspace: Workspace, endpoints: tuple[str, ...]
) -> None:
    body = {
        "workspace": workspace.pk,
        "external_entity_id": "from-admin",
        "name": "Admin made",
        "parent_group_id": "",
        "limit_enforcement": "CASCADING",
        "models_json": json.dumps([model(usage={"TOKEN/DAY": 5})]),
        **_empty_inline(),
    }

    response = admin_client.post(_url("group_add"), body)

    assert response.status_code == 302
    group = Group.objects.get(external_entity_id="from-admin")
    assert group.limit_enforcement == "CASCADING"
    assert AuditEvent.objects.get(object_id=group.pk, action="group.create").actor == "staff:admin"


def _rows(*rows: tuple[str, str, str, str]) -> dict[str, str]:
    """The limits page's formset post: (slug, type, period, threshold) per row."""
    data = {"rows-TOTAL_FORMS": str(len(rows)), "rows-INITIAL_FORMS": "0"}
    for index, (slug, type_, period, threshold) in enumerate(rows):
        data.update(
            {
                f"rows-{index}-slug": slug,
                f"rows-{index}-type": type_,
                f"rows-{index}-period": period,
                f"rows-{index}-threshold": threshold,
            }
        )
    return data


def test_limits_page_shows_a_service_error_on_the_row_that_caused_it(
    admin_client: Client, make_group: GroupFactory
) -> None:
    root = make_group([model(rate={"TOKEN/MINUTE": 100})], limit_enforcement="CASCADING")
    child = make_group([model(rate={"TOKEN/MINUTE": 50})], parent=root)

    response = admin_client.post(
        _url("group_limits", child.pk), _rows(("acme/llama", "TOKEN", "RATE:MINUTE", "500"))
    )

    assert response.status_code == 200
    [row] = response.context["rows"].forms
    assert "raise ancestors first" in row.errors["threshold"][0]
    assert (
        group_models(group=Group.objects.get(pk=child.pk))[0]["rate_limits"][0]["threshold"] == 50
    )


def test_limits_page_checks_each_field_before_the_service_runs(
    admin_client: Client, make_group: GroupFactory
) -> None:
    group = make_group([model()])

    response = admin_client.post(
        _url("group_limits", group.pk),
        _rows(
            ("acme/llama", "TOKEN", "RATE:MINUTE", "-5"),
            ("acme/llama", "BYTES", "RATE:FORTNIGHT", "10"),
            ("acme/llama", "REQUEST", "", ""),
        ),
    )

    assert response.status_code == 200
    negative, unknown, partial = response.context["rows"].forms
    assert "threshold" in negative.errors
    assert {"type", "period"} <= set(unknown.errors)
    assert {"period", "threshold"} <= set(partial.errors)
    assert group_models(group=Group.objects.get(pk=group.pk)) == [model()]


def test_limits_page_replaces_models_and_redirects(
    admin_client: Client, make_group: GroupFactory
) -> None:
    group = make_group([model()])
    page = admin_client.get(_url("group_limits", group.pk))

    response = admin_client.post(
        _url("group_limits", group.pk),
        _rows(("acme/qwen", "REQUEST", "RATE:SECOND", "2"), ("acme/llama", "", "", "")),
    )

    assert page.status_code == 200 and 'value="acme/llama"' in page.content.decode()
    assert response.status_code == 303
    assert group_models(group=Group.objects.get(pk=group.pk)) == [
        model("acme/qwen", rate={"REQUEST/SECOND": 2}),
        model(),
    ]
    assert AuditEvent.objects.filter(action="group.update", object_id=group.pk).exists()


def test_group_change_form_renames(admin_client: Client, make_group: GroupFactory) -> None:
    group = make_group([model()])

    response = admin_client.post(
        _url("group_change", group.pk), {"name": "renamed", **_empty_inline()}
    )

    assert response.status_code == 302
    fresh = Group.objects.get(pk=group.pk)
    assert fresh.name == "renamed" and group_models(group=fresh) == [model()]


def test_group_delete_in_admin_soft_deletes_the_subtree(
    admin_client: Client, make_group: GroupFactory
) -> None:
    root = make_group()
    child = make_group(parent=root)

    response = admin_client.post(_url("group_delete", root.pk), {"post": "yes"})

    assert response.status_code == 302
    assert Group.objects.filter(pk__in=[root.pk, child.pk], deleted_at__isnull=False).count() == 2


def test_secret_form_encrypts_and_never_shows_the_value(
    admin_client: Client, workspace: Workspace
) -> None:
    response = admin_client.post(
        _url("secret_add"), {"workspace": workspace.pk, "name": "openai", "value": "sk-very-secret"}
    )
    secret = Secret.objects.get(name="openai")
    page = admin_client.get(_url("secret_change", secret.pk))

    assert response.status_code == 302
    assert decrypt(secret.ciphertext) == "sk-very-secret"
    assert "sk-very-secret" not in page.content.decode()
    assert bytes(secret.ciphertext).decode() not in page.content.decode()


def test_secret_change_with_a_value_rotates_it(admin_client: Client, workspace: Workspace) -> None:
    admin_client.post(_url("secret_add"), {"workspace": workspace.pk, "name": "k", "value": "one"})
    secret = Secret.objects.get(name="k")

    admin_client.post(_url("secret_change", secret.pk), {"value": "two"})

    assert decrypt(Secret.objects.get(pk=secret.pk).ciphertext) == "two"


def test_duplicate_secret_name_is_a_form_error(admin_client: Client, workspace: Workspace) -> None:
    admin_client.post(_url("secret_add"), {"workspace": workspace.pk, "name": "k", "value": "one"})

    response = admin_client.post(
        _url("secret_add"), {"workspace": workspace.pk, "name": "k", "value": "x"}
    )

    assert response.status_code == 200
    assert "name" in response.context["adminform"].form.errors


def test_offboard_action_goes_through_the_service(
    admin_client: Client, workspace: Workspace
) -> None:
    response = admin_client.post(
        _url("workspace_changelist"), {"action": "offboard", "_selected_action": [workspace.pk]}
    )

    assert response.status_code == 302
    assert Workspace.objects.get(pk=workspace.pk).onboarded is False
    assert AuditEvent.objects.filter(action="workspace.offboard", actor="staff:admin").exists()


def test_workspace_change_page_lists_prefixes_and_domains(
    admin_client: Client, workspace: Workspace
) -> None:
    CustomDomain.objects.create(workspace=workspace, host="api.acme.test")

    page = admin_client.get(_url("workspace_change", workspace.pk))

    assert page.status_code == 200
    assert "api.acme.test" in page.content.decode() and "acme" in page.content.decode()


def test_org_prefix_and_domain_forms_validate_through_the_services(
    admin_client: Client, workspace: Workspace
) -> None:
    ok = admin_client.post(_url("orgprefix_add"), {"workspace": workspace.pk, "prefix": "initech"})
    taken = admin_client.post(_url("orgprefix_add"), {"workspace": workspace.pk, "prefix": "acme"})
    domain = admin_client.post(
        _url("customdomain_add"), {"workspace": workspace.pk, "host": "not a host"}
    )

    assert ok.status_code == 302 and OrgPrefix.objects.filter(prefix="initech").exists()
    assert taken.status_code == 200 and domain.status_code == 200
    assert not CustomDomain.objects.exists()


def test_audit_events_are_filterable_and_searchable(
    admin_client: Client, make_group: GroupFactory
) -> None:
    group = make_group()

    page = admin_client.get(
        _url("auditevent_changelist"),
        {"action": "group.create", "object_type": "group", "q": group.pk},
    )

    assert page.status_code == 200 and group.pk in page.content.decode()


def _empty_inline() -> dict[str, str]:
    """The management form of the read-only models inline."""
    prefix = "model_access"
    return {
        f"{prefix}-TOTAL_FORMS": "0",
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def test_workspace_add_form_creates_through_the_service(admin_client: Client, db: None) -> None:
    response = admin_client.post(
        _url("workspace_add"),
        {
            "name": "Initech",
            "onboarded": "on",
            "ed25519_public_key": "",
        },
    )

    assert response.status_code == 302
    workspace = Workspace.objects.get(name="Initech")
    assert workspace.onboarded is True
    assert AuditEvent.objects.filter(object_id=workspace.pk, action="workspace.create").exists()


def test_deleted_group_page_is_read_only(
    admin_client: Client, make_group: GroupFactory, workspace: Workspace
) -> None:
    from groups.services import group_delete

    group = make_group()
    group_delete(workspace=workspace, group_id=group.pk, actor="staff:admin")

    page = admin_client.get(_url("group_change", group.pk))
    post = admin_client.post(_url("group_change", group.pk), {"name": "nope"})

    assert page.status_code == 200 and "models_json" not in page.content.decode()
    assert post.status_code == 403
