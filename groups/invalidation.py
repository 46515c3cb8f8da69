"""Tells every gateway process that a workspace's configuration changed (after commit).

A PUBLISH names the workspace so processes drop only its cached entries; a global version counter,
polled by each process, catches messages that pub/sub dropped (consumer: routing/authcache.py).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django_redis import get_redis_connection

CHANNEL = "gw:cfg"
VERSION_KEY = "gw:cfg:version"
logger = logging.getLogger(__name__)


def config_changed(*, workspace_id: str) -> None:
    """Schedule the invalidation for when the current transaction commits."""
    transaction.on_commit(lambda: publish(workspace_id=workspace_id))


def publish(*, workspace_id: str) -> None:
    """Bump the version and broadcast the workspace id now."""
    try:
        client = get_redis_connection("default")
        pipe = client.pipeline(transaction=False)
        pipe.incr(VERSION_KEY)
        pipe.publish(CHANNEL, workspace_id)
        pipe.execute()
    except Exception:  # noqa: BLE001 - the write committed; caches expire by TTL as a last resort
        logger.exception(
            "config invalidation could not be published", extra={"workspace": workspace_id}
        )
