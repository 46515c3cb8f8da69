"""Creates one fault test's tenant through the services, in the private database.

`python -m tests.faults.seed <org_prefix> <upstream_url> <webhook_url>` prints one JSON line:
the federated key, a management key, the group id, the workspace id and the webhook secret.
Runs as its own process because the test process's Django points at another database.
"""

from __future__ import annotations

import json
import os
import sys

import django

REQUESTS_PER_DAY = 10_000_000
TOKENS_PER_DAY = 10_000_000_000


def _create(prefix: str, upstream_url: str, webhook_url: str) -> dict[str, str]:
    from billing.services.webhooks import webhook_endpoint_create
    from groups.services import group_create, org_prefix_register, workspace_create
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import api_key_create, management_key_create
    from routing.services import endpoint_create

    actor = SYSTEM_ACTOR
    workspace = workspace_create(name=f"Faults {prefix}", actor=actor, onboarded=True)
    org_prefix_register(workspace=workspace, prefix=prefix, actor=actor)
    slug = f"{prefix}/llama"
    target = {"provider": "OPENAI_COMPATIBLE", "base_url": upstream_url, "target_model": "fake"}
    endpoint_create(workspace=workspace, actor=actor, slug=slug, targets=[target])
    usage_limits = [
        {"type": "REQUEST", "unit": "DAY", "threshold": REQUESTS_PER_DAY},
        {"type": "TOKEN", "unit": "DAY", "threshold": TOKENS_PER_DAY},
    ]
    model = {"slug": slug, "rate_limits": [], "usage_limits": usage_limits}
    group = group_create(
        workspace=workspace, actor=actor, external_entity_id=f"{prefix}-customer", models=[model]
    )
    key, plaintext = api_key_create(workspace=workspace, group=group, actor=actor)
    _, management = management_key_create(workspace=workspace, actor=actor)
    _, secret = webhook_endpoint_create(workspace=workspace, url=webhook_url, actor=actor)
    return {
        "key": plaintext,
        "management_key": management,
        "group_id": group.id,
        "workspace_id": workspace.id,
        "slug": slug,
        "webhook_secret": secret,
    }


def main(argv: list[str]) -> None:
    """Entry point."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    django.setup()
    print(json.dumps(_create(*argv)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
