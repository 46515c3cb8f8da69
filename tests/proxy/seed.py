"""Seeds a file database for multi-process tests and bench: `python -m tests.proxy.seed ...`.

Runs in its own process (the gunicorn workers share the file DB, not the test's in-memory one).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import django


def _create(upstream_url: str, requests_per_minute: str = "") -> dict[str, str]:
    from django.core.management import call_command

    from groups.services import group_create, org_prefix_register, workspace_create
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import api_key_create
    from routing.services import endpoint_create

    call_command("migrate", verbosity=0)
    workspace = workspace_create(name="Acme", actor=SYSTEM_ACTOR, onboarded=True)
    org_prefix_register(workspace=workspace, prefix="acme", actor=SYSTEM_ACTOR)
    target = {
        "provider": "OPENAI_COMPATIBLE",
        "base_url": upstream_url,
        "target_model": "fake-model",
    }
    endpoint_create(workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/llama", targets=[target])
    rate = (
        [{"type": "REQUEST", "unit": "MINUTE", "threshold": int(requests_per_minute)}]
        if requests_per_minute
        else []
    )
    model = {"slug": "acme/llama", "rate_limits": rate, "usage_limits": []}
    group = group_create(
        workspace=workspace, actor=SYSTEM_ACTOR, external_entity_id="c1", models=[model]
    )
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=SYSTEM_ACTOR)
    return {"key": plaintext, "prefix": key.prefix, "workspace_id": workspace.id}


def _key(workspace_id: str) -> dict[str, str]:
    from groups.models import Group
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import api_key_create

    group = Group.objects.select_related("workspace").get(workspace_id=workspace_id)
    key, plaintext = api_key_create(workspace=group.workspace, group=group, actor=SYSTEM_ACTOR)
    return {"key": plaintext, "prefix": key.prefix, "workspace_id": workspace_id}


def _revoke(workspace_id: str, prefix: str) -> dict[str, str]:
    from groups.models import Workspace
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import api_key_revoke

    workspace = Workspace.objects.get(id=workspace_id)
    api_key_revoke(workspace=workspace, prefix=prefix, actor=SYSTEM_ACTOR)
    return {"revoked": prefix}


def main(argv: list[str]) -> None:
    """Entry point."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    django.setup()
    command, *args = argv
    commands: dict[str, Callable[..., dict[str, str]]] = {
        "create": _create,
        "key": _key,
        "revoke": _revoke,
    }
    result = commands[command](*args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
