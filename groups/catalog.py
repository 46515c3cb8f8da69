"""Which endpoint slugs are live for a workspace.

Endpoints belong to `routing`, which depends on `groups`; the lookup is resolved by dotted path
(settings.GATEWAY_ENDPOINT_CATALOG) at call time so the dependency direction stays one-way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.utils.module_loading import import_string


def live_endpoint_slugs(*, workspace_id: str, slugs: Iterable[str]) -> set[str]:
    """The subset of `slugs` that are live endpoints of the workspace."""
    lookup: Callable[..., set[str]] = import_string(settings.GATEWAY_ENDPOINT_CATALOG)
    return lookup(workspace_id=workspace_id, slugs=list(slugs))
