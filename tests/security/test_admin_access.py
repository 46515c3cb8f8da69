"""The admin is for staff only (every admin URL, enumerated from the resolver) and every write
needs a CSRF token."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from groups.models import Workspace

pytestmark = pytest.mark.django_db

OPEN = {"login", "logout"}  # the only admin views that do not require staff
KWARGS = {
    "object_id": "x",
    "id": "1",
    "app_label": "groups",
    "content_type_id": 1,
    "token": "x",
}


def _admin_views(patterns: Any, params: frozenset[str]) -> dict[str, frozenset[str]]:
    """Admin view names and the path parameters along their patterns."""
    found: dict[str, frozenset[str]] = {}
    for pattern in patterns:
        here = params | frozenset(pattern.pattern.regex.groupindex)
        if isinstance(pattern, URLResolver):
            found |= _admin_views(pattern.url_patterns, here)
        elif isinstance(pattern, URLPattern) and pattern.name:
            found[pattern.name] = here
    return found


def admin_urls() -> list[str]:
    """One concrete URL for every named admin view."""
    resolver = get_resolver().namespace_dict["admin"][1]
    urls = []
    for name, params in sorted(_admin_views(resolver.url_patterns, frozenset()).items()):
        if name in OPEN:
            continue
        kwargs = {key: value for key, value in KWARGS.items() if key in params}
        try:
            urls.append(reverse(f"admin:{name}", kwargs=kwargs or None))
        except Exception:  # noqa: BLE001 - a view needing other arguments is named in the failure
            urls.append(f"unreversible:{name}")
    return urls


URLS = admin_urls()


def login_client(*, staff: bool, superuser: bool = False, csrf: bool = False) -> Client:
    user = User.objects.create_user(
        "someone", password="pw-123456789", is_staff=staff, is_superuser=superuser
    )
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def test_every_registered_model_has_admin_urls_under_test() -> None:
    assert "/admin/keys/apikey/add/" in URLS
    assert "/admin/billing/usageevent/dashboard/" in URLS
    assert "/admin/billing/webhookdelivery/recover/" in URLS
    assert not [url for url in URLS if url.startswith("unreversible:")]


@pytest.mark.parametrize("url", URLS)
def test_a_non_staff_user_is_sent_to_the_login_page(url: str) -> None:
    client = login_client(staff=False)

    response = client.get(url)

    assert response.status_code == 302, (url, response.status_code)
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", URLS)
def test_an_anonymous_visitor_is_sent_to_the_login_page(url: str) -> None:
    response = Client().get(url)

    assert response.status_code == 302, (url, response.status_code)
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize(
    "url",
    ["/admin/keys/apikey/", "/admin/groups/secret/add/", "/admin/billing/usageevent/dashboard/"],
)
def test_staff_without_permissions_cannot_see_model_pages(url: str) -> None:
    client = login_client(staff=True)

    response = client.get(url)

    assert response.status_code == 403


def test_a_non_staff_user_cannot_log_in_to_the_admin() -> None:
    User.objects.create_user("customer", password="pw-123456789", is_staff=False)
    client = Client()

    response = client.post("/admin/login/", {"username": "customer", "password": "pw-123456789"})

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/admin/groups/workspace/add/", {"name": "Forged"}),
        ("/admin/groups/orgprefix/add/", {"workspace": "WS", "prefix": "forged"}),
        ("/admin/keys/managementkey/add/", {"workspace": "WS", "name": "x", "scope": "MANAGE"}),
        ("/admin/groups/workspace/", {"action": "offboard", "_selected_action": ["WS"]}),
    ],
)
def test_admin_writes_without_a_csrf_token_are_403(
    workspace: Workspace, url: str, data: dict[str, Any]
) -> None:
    data = {k: (workspace.pk if v == "WS" else v) for k, v in data.items()}
    data = {k: ([workspace.pk] if v == ["WS"] else v) for k, v in data.items()}
    client = login_client(staff=True, superuser=True, csrf=True)
    page = client.get(url)

    response = client.post(url, data)

    assert page.status_code == 200
    assert response.status_code == 403
    workspace.refresh_from_db()
    assert workspace.onboarded


def test_the_admin_login_form_needs_a_csrf_token() -> None:
    User.objects.create_user("staff", password="pw-123456789", is_staff=True)

    response = Client(enforce_csrf_checks=True).post(
        "/admin/login/", {"username": "staff", "password": "pw-123456789"}
    )

    assert response.status_code == 403


def test_the_same_admin_write_with_its_token_succeeds(workspace: Workspace) -> None:
    # The control of the CSRF tests: a token is all that was missing.
    client = login_client(staff=True, superuser=True, csrf=True)
    client.get("/admin/groups/workspace/add/")
    token = client.cookies["csrftoken"].value

    response = client.post(
        "/admin/groups/workspace/add/", {"name": "With token", "csrfmiddlewaretoken": token}
    )

    assert response.status_code == 302, response.content[:2000]
    assert Workspace.objects.filter(name="With token").exists()
