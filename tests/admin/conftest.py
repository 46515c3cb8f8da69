"""A tenant whose customer tables can be grown: the admin must not slow down as they do."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import UsageEvent
from groups.models import AuditEvent, Group, Workspace
from keys.models import ApiKey


@dataclass
class Tenant:
    """A workspace and what has been added to it so far."""

    workspace: Workspace
    groups: list[Group] = field(default_factory=list)
    keys: list[ApiKey] = field(default_factory=list)


Grow = Callable[[int], Tenant]


@pytest.fixture
def tenant(workspace: Workspace) -> Grow:
    """`grow(n)`: n more customers, each a group with a key, an audit row and a usage event
    (rows written directly: the admin reads them as the API leaves them)."""
    state = Tenant(workspace)

    def grow(count: int) -> Tenant:
        start, now = len(state.groups), timezone.now()
        numbers = range(start, start + count)
        groups = Group.objects.bulk_create(
            Group(workspace=workspace, external_entity_id=f"cust-{n:05d}", name=f"Customer {n}")
            for n in numbers
        )
        keys = ApiKey.objects.bulk_create(
            ApiKey(
                workspace=workspace,
                group=group,
                prefix=f"sky_{n:012d}",
                key_hash=f"{n:064d}",
                name=f"key {n}",
            )
            for n, group in zip(numbers, groups, strict=True)
        )
        AuditEvent.objects.bulk_create(
            AuditEvent(
                workspace=workspace,
                actor="mgmt:sky_test",
                action="group.create",
                object_type="group",
                object_id=group.pk,
            )
            for group in groups
        )
        UsageEvent.objects.bulk_create(
            UsageEvent(
                request_id=f"req-{n}",
                timestamp=now - timedelta(minutes=n),
                workspace=workspace,
                group=group,
                external_entity_id=group.external_entity_id,
                api_key_prefix=key.prefix,
                model_slug="acme/llama",
                status="completed",
            )
            for n, group, key in zip(numbers, groups, keys, strict=True)
        )
        state.groups += groups
        state.keys += keys
        return state

    return grow
