"""Fixtures of the routing suite: a provider secret and target dict builders."""

from __future__ import annotations

from typing import Any

import pytest

from groups.models import Secret, Workspace
from groups.services import secret_create, workspace_set_default_baseten_secret
from groups.services.audit import SYSTEM_ACTOR


@pytest.fixture
def secret(workspace: Workspace) -> Secret:
    return secret_create(
        workspace=workspace, name="openai", value="sk-upstream-123", actor=SYSTEM_ACTOR
    )


@pytest.fixture
def default_baseten_secret(workspace: Workspace) -> Secret:
    """The workspace's default Baseten secret, for BASETEN targets that name none."""
    secret = secret_create(
        workspace=workspace, name="baseten", value="bt-default-123", actor=SYSTEM_ACTOR
    )
    workspace_set_default_baseten_secret(workspace=workspace, secret=secret, actor=SYSTEM_ACTOR)
    return secret


def compat(**fields: Any) -> dict[str, Any]:
    """An OPENAI_COMPATIBLE target on loopback (allow-listed in tests)."""
    return {
        "provider": "OPENAI_COMPATIBLE",
        "base_url": "http://127.0.0.1:8000/v1",
        "target_model": "meta-llama/Llama-3-70b",
        **fields,
    }


def baseten(**fields: Any) -> dict[str, Any]:
    return {"provider": "BASETEN", "model_id": "abcd1234", **fields}


def openai(secret_id: str, **fields: Any) -> dict[str, Any]:
    return {"provider": "OPENAI", "target_model": "gpt-4o-mini", "secret_id": secret_id, **fields}
