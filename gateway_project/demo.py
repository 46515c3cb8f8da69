"""The demo workspace `make run` creates once and reuses (credentials in var/demo.json)."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from gateway_project.env import var_dir
from gateway_project.privatefile import private_file_write

DEMO_PREFIX = "demo"
DEMO_SLUG = "demo/echo"
DEMO_CUSTOMER = "demo-customer"


@dataclass(frozen=True)
class DemoCredentials:
    """What `make run` prints: logins and keys of the demo workspace."""

    admin_username: str
    admin_password: str
    workspace_id: str
    management_key: str
    federated_key: str
    group_id: str
    webhook_secret: str


def _state_file() -> Path:
    return var_dir() / "demo.json"


def demo_load() -> DemoCredentials | None:
    """The demo created by an earlier run, if its workspace still exists."""
    from groups.models import Workspace

    path = _state_file()
    if not path.exists():
        return None
    creds = DemoCredentials(**json.loads(path.read_text()))
    if not Workspace.objects.filter(id=creds.workspace_id).exists():
        return None
    return creds


def demo_ensure(*, model_base_url: str, webhook_url: str | None) -> DemoCredentials:
    """Create the superuser and the demo workspace once; later runs reuse them."""
    existing = demo_load()
    if existing is not None:
        return existing
    creds = _demo_create(model_base_url=model_base_url, webhook_url=webhook_url)
    private_file_write(_state_file(), json.dumps(asdict(creds), indent=2), replace=True)
    return creds


@transaction.atomic
def _demo_create(*, model_base_url: str, webhook_url: str | None) -> DemoCredentials:
    from billing.services.webhooks import webhook_endpoint_create
    from groups.services import group_create, org_prefix_register, workspace_create
    from groups.services.audit import SYSTEM_ACTOR
    from keys.services import api_key_create, management_key_create
    from routing.services import endpoint_create

    password = secrets.token_urlsafe(12)
    user_model = get_user_model()
    admin = user_model.objects.filter(username="admin").first()
    if admin is None:
        admin = user_model.objects.create_superuser("admin", "admin@localhost", password)
    else:
        admin.set_password(password)
        admin.save(update_fields=["password"])
    actor = SYSTEM_ACTOR
    workspace = workspace_create(name="Demo Lab", actor=actor, onboarded=True)
    org_prefix_register(workspace=workspace, prefix=DEMO_PREFIX, actor=actor)
    endpoint_create(
        workspace=workspace,
        actor=actor,
        slug=DEMO_SLUG,
        targets=[
            {"provider": "OPENAI_COMPATIBLE", "base_url": model_base_url, "target_model": "echo-1"}
        ],
    )
    group = group_create(
        workspace=workspace,
        actor=actor,
        external_entity_id=DEMO_CUSTOMER,
        name="Demo customer",
        models=[
            {
                "slug": DEMO_SLUG,
                "rate_limits": [
                    {"type": "REQUEST", "unit": "MINUTE", "threshold": 600},
                    {"type": "TOKEN", "unit": "MINUTE", "threshold": 1_000_000},
                ],
                "usage_limits": [{"type": "TOKEN", "unit": "DAY", "threshold": 50_000_000}],
            }
        ],
    )
    _, federated_key = api_key_create(workspace=workspace, group=group, actor=actor, name="demo")
    _, management_key = management_key_create(workspace=workspace, actor=actor, name="demo")
    webhook_secret = ""
    if webhook_url:
        _, webhook_secret = webhook_endpoint_create(
            workspace=workspace, url=webhook_url, actor=actor
        )
    return DemoCredentials(
        admin_username="admin",
        admin_password=password,
        workspace_id=workspace.id,
        management_key=management_key,
        federated_key=federated_key,
        group_id=group.id,
        webhook_secret=webhook_secret,
    )
