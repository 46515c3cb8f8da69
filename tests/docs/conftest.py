"""What a reader of the docs has: a running gateway, a workspace, its keys, a model server."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from groups.models import Workspace
from groups.services.audit import SYSTEM_ACTOR
from groups.services.tenants import secret_create
from keys.services import management_key_create
from tests.fakes.model_server import FakeModelServerThread
from tests.proxy.conftest import (  # noqa: F401 - fixtures reused from the proxy suite
    GatewayThread,
    Tenant,
    compatible_target,
    gateway,
    tenant_build,
    upstream,
)

NODE_DIR = Path(__file__).parent / "node"


@dataclass
class Reader:
    """The values a reader exports before following a page, and the objects behind them."""

    env: dict[str, str]
    gateway: GatewayThread
    workspace: Workspace
    tenant: Tenant


def _ed25519_pem(path: Path) -> str:
    """Write a fresh private key to `path`; return its public half (PEM)."""
    private = Ed25519PrivateKey.generate()
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return public.decode()


@pytest.fixture
def reader(
    settings: Any,
    gateway: GatewayThread,  # noqa: F811
    workspace: Workspace,
    upstream: FakeModelServerThread,  # noqa: F811
    tmp_path: Path,
) -> Reader:
    """The `acme` workspace with a management key, a provider secret, an Ed25519 key for key
    registration and the endpoint `acme/llama` on the fake model server with a customer key."""
    # BASETEN and OPENAI targets of the pages reach the fake model server too.
    settings.GATEWAY_BASETEN_URL_TEMPLATE = upstream.url
    settings.GATEWAY_OPENAI_BASE_URL = upstream.url
    settings.GATEWAY_WEBHOOK_FLUSH_SECONDS = 0
    settings.GATEWAY_EVENTS_HOLDBACK_SECONDS = 0
    # Outside the pages' working directory, where a page may make its own key pair.
    (tmp_path / "staff").mkdir()
    ed25519 = tmp_path / "staff" / "ed25519.pem"
    workspace.ed25519_public_key = _ed25519_pem(ed25519)
    workspace.save(update_fields=["ed25519_public_key"])
    _, management = management_key_create(workspace=workspace, actor=SYSTEM_ACTOR)
    secret = secret_create(
        workspace=workspace, name="baseten", value="bt-test-credential", actor=SYSTEM_ACTOR
    )
    tenant = tenant_build(
        workspace=workspace, targets=[compatible_target(upstream.url)], external_id="reader"
    )
    env = {
        "GW": gateway.url,
        "MK": management,
        "KEY": tenant.key,
        "UPSTREAM": upstream.url,
        "SECRET_ID": secret.id,
        "ED25519_KEY": str(ed25519),
    }
    return Reader(env=env, gateway=gateway, workspace=workspace, tenant=tenant)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/docs/node with its locked packages (what the Node receiver imports) installed."""
    assert shutil.which("node") and shutil.which("npm"), (
        "Node.js 18+ and npm are required for the Node snippets: apt-get install nodejs npm"
    )
    if not (NODE_DIR / "node_modules" / "standardwebhooks").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
        )
    return NODE_DIR / "node_modules"
