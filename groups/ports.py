"""What groups asks of the apps built on it, as an interface they implement.

`routing` knows which endpoint slugs are live (and priced) and `keys` owns the keys hung off
groups; both depend on `groups`, so groups cannot import them. Groups states what it needs here,
and the composition root (gateway_project/apps.py) wires the implementations in once the apps are
loaded.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from django.core.exceptions import ImproperlyConfigured


class LiveEndpointSlugs(Protocol):
    def __call__(self, *, workspace_id: str, slugs: Collection[str]) -> set[str]:
        """The subset of `slugs` that are live endpoints of the workspace."""
        ...


class PricedEndpointSlugs(Protocol):
    def __call__(self, *, workspace_id: str, slugs: Collection[str]) -> set[str]:
        """The subset of `slugs` that are live endpoints of the workspace with a price."""
        ...


class GroupKeysRevoke(Protocol):
    def __call__(self, *, group_ids: Collection[str], at: datetime) -> list[str]:
        """Revoke the live keys of these groups as of `at`; their prefixes, sorted."""
        ...


class KeySlugsRename(Protocol):
    def __call__(self, *, workspace_id: str, old_slug: str, new_slug: str) -> None:
        """Follow an endpoint rename in the slug subsets of the workspace's keys."""
        ...


@dataclass(frozen=True)
class Ports:
    """The implementations groups calls through."""

    live_endpoint_slugs: LiveEndpointSlugs
    group_keys_revoke: GroupKeysRevoke
    key_slugs_rename: KeySlugsRename
    # Left out of equality: added after the others, and unwired it prices nothing (SPEND refused).
    priced_endpoint_slugs: PricedEndpointSlugs | None = field(default=None, compare=False)


_wired: list[Ports] = []


def ports_wire(implementations: Ports) -> None:
    """Install the implementations (the composition root does this once per process)."""
    _wired[:] = [implementations]


def ports() -> Ports:
    """The wired implementations, or ImproperlyConfigured if nothing wired them."""
    if not _wired:
        raise ImproperlyConfigured(
            "groups' ports are not wired: list 'gateway_project.apps.GatewayConfig' last in "
            "INSTALLED_APPS"
        )
    return _wired[0]
