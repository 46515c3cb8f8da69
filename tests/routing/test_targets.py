"""Per-provider target rules."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_project.kernel.errors import ValidationFailed
from groups.models import Secret, Workspace
from groups.services import secret_create
from groups.services.audit import SYSTEM_ACTOR
from routing.services import endpoint_create
from tests.routing.conftest import baseten, compat, openai


def failure(workspace: Workspace, targets: Any) -> tuple[str, str | None]:
    with pytest.raises(ValidationFailed) as exc:
        endpoint_create(workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/llama", targets=targets)
    return exc.value.code, exc.value.param


def test_one_to_four_targets(workspace: Workspace) -> None:
    assert failure(workspace, []) == ("targets_required", "targets")
    assert failure(workspace, [compat()] * 5) == ("too_many_targets", "targets")
    assert failure(workspace, {"provider": "OPENAI"}) == ("invalid_target", "targets")

    endpoint_create(
        workspace=workspace, actor=SYSTEM_ACTOR, slug="acme/four", targets=[compat()] * 4
    )


@pytest.mark.parametrize(
    ("target", "param"),
    [
        ("nope", "targets[1]"),
        ({"provider": "AZURE"}, "targets[1].provider"),
        ({"model_id": "x"}, "targets[1].provider"),
        (compat(model_id="abc"), "targets[1].model_id"),
        (compat(environment_name="prod"), "targets[1].environment_name"),
        (baseten(base_url="https://x.example"), "targets[1].base_url"),
        (baseten(target_model="m"), "targets[1].target_model"),
        (baseten(extra=1), "targets[1].extra"),
        (
            {
                "provider": "OPENAI",
                "target_model": "m",
                "secret_id": "s",
                "base_url": "https://a.b",
            },
            "targets[1].base_url",
        ),
        ({"provider": "BASETEN"}, "targets[1].model_id"),
        ({"provider": "OPENAI_COMPATIBLE", "target_model": "m"}, "targets[1].base_url"),
        (
            {"provider": "OPENAI_COMPATIBLE", "base_url": "http://127.0.0.1/v1"},
            "targets[1].target_model",
        ),
        ({"provider": "OPENAI", "secret_id": "sec_x"}, "targets[1].target_model"),
        ({"provider": "OPENAI", "target_model": "gpt-4o"}, "targets[1].secret_id"),
        (compat(target_model=""), "targets[1].target_model"),
        (compat(target_model=7), "targets[1].target_model"),
        (compat(target_model="m" * 256), "targets[1].target_model"),
        (baseten(model_id="x.evil.example/#"), "targets[1].model_id"),
        (baseten(environment_name="../admin"), "targets[1].environment_name"),
        (compat(base_url="http://127.0.0.1/v1?key=1"), "targets[1].base_url"),
        (compat(base_url="http://user:pw@127.0.0.1/v1"), "targets[1].base_url"),
    ],
)
def test_fields_are_enforced_per_provider(workspace: Workspace, target: Any, param: str) -> None:
    assert failure(workspace, [compat(), target]) == ("invalid_target", param)


@pytest.mark.parametrize(
    "base_url",
    [
        "https://10.0.0.1/v1",
        "http://8.8.8.8/v1",
        "https://169.254.169.254/latest",
        "gopher://127.0.0.1/",
    ],
)
def test_base_url_must_pass_the_ssrf_guard(workspace: Workspace, base_url: str) -> None:
    assert failure(workspace, [compat(base_url=base_url)]) == ("unsafe_url", "targets[0].base_url")


def test_secret_must_belong_to_the_workspace(
    workspace: Workspace, other_workspace: Workspace, secret: Secret
) -> None:
    foreign = secret_create(
        workspace=other_workspace, name="theirs", value="sk-x", actor=SYSTEM_ACTOR
    )

    assert failure(workspace, [openai(foreign.id)]) == ("secret_not_found", "targets[0].secret_id")
    assert failure(workspace, [compat(), baseten(secret_id="sec_missing")]) == (
        "secret_not_found",
        "targets[1].secret_id",
    )


def test_optional_fields_may_be_null_or_absent(
    workspace: Workspace, default_baseten_secret: Secret
) -> None:
    endpoint = endpoint_create(
        workspace=workspace,
        actor=SYSTEM_ACTOR,
        slug="acme/llama",
        targets=[compat(secret_id=None), baseten(environment_name=None, secret_id=None)],
    )

    assert [t.environment_name for t in endpoint.targets.order_by("position")] == ["", "production"]
