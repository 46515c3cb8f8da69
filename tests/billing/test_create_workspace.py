"""`manage.py create_workspace` (workspaces are created by staff only)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from billing.models import WebhookEndpoint, WebhookSecret
from billing.services.webhooks import webhook_endpoint_create
from gateway_project.kernel.encryption import decrypt
from gateway_project.kernel.errors import ValidationFailed
from groups.models import OrgPrefix, Workspace
from keys.models import ManagementKey
from keys.selectors import management_key_authenticate


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("create_workspace", *args, stdout=out)
    return out.getvalue()


def test_creates_workspace_prefix_and_a_working_management_key(db: Any) -> None:
    result = json.loads(
        run("--name", "Initech", "--org-prefix", "initech", "--onboarded", "--json")
    )

    workspace = Workspace.objects.get(id=result["workspace_id"])
    assert workspace.name == "Initech" and workspace.onboarded
    assert OrgPrefix.objects.get(prefix="initech").workspace_id == workspace.id
    key = management_key_authenticate(plaintext=result["management_key"])
    assert key is not None and key.workspace_id == workspace.id and key.scope == "MANAGE"
    assert "webhook_secret" not in result


def test_without_onboarded_the_workspace_is_not_onboarded(db: Any) -> None:
    result = json.loads(run("--name", "Initech", "--org-prefix", "initech", "--json"))

    assert not Workspace.objects.get(id=result["workspace_id"]).onboarded


def test_webhook_url_adds_an_endpoint_and_prints_its_secret_once(db: Any) -> None:
    result = json.loads(
        run(
            "--name",
            "I",
            "--org-prefix",
            "initech",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--json",
        )
    )

    endpoint = WebhookEndpoint.objects.get(workspace_id=result["workspace_id"])
    assert endpoint.url == "http://127.0.0.1:9/hook"
    assert result["webhook_secret"].startswith("whsec_")
    assert len(base64.b64decode(result["webhook_secret"].removeprefix("whsec_"))) == 32
    stored = WebhookSecret.objects.get(endpoint=endpoint)
    assert decrypt(stored.ciphertext) == result["webhook_secret"]
    assert result["webhook_secret"].encode() not in bytes(stored.ciphertext)


def test_plain_output_names_each_value(db: Any) -> None:
    out = run("--name", "Initech", "--org-prefix", "initech")

    assert "workspace_id: ws_" in out and "management_key: gwm_" in out


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--name", "X", "--org-prefix", "Bad Prefix"], "invalid_prefix"),
        (["--name", "", "--org-prefix", "ok"], "invalid_name"),
        (
            ["--name", "X", "--org-prefix", "ok", "--webhook-url", "https://10.0.0.1/hook"],
            "unsafe_url",
        ),
        (
            ["--name", "X", "--org-prefix", "ok", "--webhook-url", "http://8.8.8.8/hook"],
            "unsafe_url",
        ),
    ],
)
def test_bad_input_fails_cleanly_and_writes_nothing(db: Any, args: list[str], code: str) -> None:
    with pytest.raises(CommandError, match=code):
        run(*args)

    assert not Workspace.objects.exists()
    assert not OrgPrefix.objects.exists()
    assert not ManagementKey.objects.exists()


def test_a_taken_prefix_fails_and_writes_nothing(workspace: Workspace) -> None:
    with pytest.raises(CommandError, match="prefix_taken"):
        run("--name", "Copycat", "--org-prefix", "acme")

    assert list(Workspace.objects.values_list("name", flat=True)) == ["Acme Labs"]


def test_webhook_endpoint_create_refuses_unsafe_urls(workspace: Workspace) -> None:
    with pytest.raises(ValidationFailed) as exc:
        webhook_endpoint_create(
            workspace=workspace, url="https://169.254.169.254/", actor="staff:a"
        )

    assert exc.value.code == "unsafe_url"
    assert not WebhookEndpoint.objects.exists()


def test_upstream_allowlist_is_the_new_workspace_s_own(db: Any, settings: Any) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    url = "http://10.20.0.5/hook"

    result = json.loads(
        run(
            *("--name", "Lab", "--org-prefix", "lab", "--webhook-url", url),
            *("--upstream-allowlist", "10.20.0.0/16,vllm.lab.internal", "--json"),
        )
    )

    workspace = Workspace.objects.get(id=result["workspace_id"])
    assert workspace.upstream_allowlist == ["10.20.0.0/16", "vllm.lab.internal"]
    assert WebhookEndpoint.objects.get(workspace=workspace).url == url
    with pytest.raises(CommandError, match="unsafe_url"):
        run("--name", "Other", "--org-prefix", "other", "--webhook-url", url)


def test_a_bad_upstream_allowlist_fails_cleanly(db: Any) -> None:
    with pytest.raises(CommandError, match="invalid_allowlist"):
        run("--name", "Lab", "--org-prefix", "lab", "--upstream-allowlist", "10.0.0")

    assert not Workspace.objects.exists()
