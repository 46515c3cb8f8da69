"""The invalidation signal: a version bump that does not depend on the publish, and is not lost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings

from gateway_project.kernel.invalidation import (
    VERSION_KEY,
    bump_owed,
    channel,
    message_decode,
    publish,
)
from tests.fakes.redis_relay import RedisRelay
from tests.waiting import wait_until


@pytest.fixture
def direct() -> Iterator[redis.Redis]:
    """A client of the test's Redis that no fault touches."""
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def control_relay(settings: Any) -> Iterator[RedisRelay]:
    """The control plane's connection to Redis goes through a breakable relay."""
    with RedisRelay(settings.CACHES["default"]["LOCATION"]) as relay:
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": relay.url}}
        yield relay


def _version(client: redis.Redis) -> int:
    return int(client.get(VERSION_KEY) or 0)


def test_the_version_is_bumped_even_when_the_publish_fails(
    control_relay: RedisRelay, direct: redis.Redis
) -> None:
    control_relay.cut_on(b"PUBLISH")

    publish(workspace_id="ws_1")

    assert control_relay.cuts == 1
    assert _version(direct) == 1
    assert not bump_owed()


def test_a_failed_version_bump_is_owed_and_retried_until_it_lands(
    control_relay: RedisRelay, direct: redis.Redis
) -> None:
    control_relay.refuse()

    publish(workspace_id="ws_1")
    assert bump_owed() and _version(direct) == 0
    control_relay.restore()

    wait_until(lambda: _version(direct) == 1, what="owed bump landed")
    wait_until(lambda: not bump_owed(), what="nothing owed")


def test_a_change_made_while_a_bump_is_owed_makes_listeners_drop_every_workspace(
    control_relay: RedisRelay, direct: redis.Redis
) -> None:
    subscriber = direct.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel())
    control_relay.refuse()
    publish(workspace_id="ws_revoked")  # owed: no bump, no message
    control_relay.restore()

    publish(workspace_id="ws_other")

    message = wait_until(lambda: subscriber.get_message(timeout=0.1), what="message")
    version, workspace_id = message_decode(message["data"]) or (0, "")
    assert workspace_id == "ws_other"
    assert version >= 2, "one step would read as ws_other's change alone"
    subscriber.close()


def test_the_message_names_the_workspace_and_the_new_version(direct: redis.Redis) -> None:
    subscriber = direct.pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel())
    direct.set(VERSION_KEY, 41)

    publish(workspace_id="ws_1")

    message = wait_until(lambda: subscriber.get_message(timeout=0.1), what="message")
    assert message_decode(message["data"]) == (42, "ws_1")
    subscriber.close()


def test_another_database_on_the_same_redis_hears_nothing(direct: redis.Redis) -> None:
    ours = direct.pubsub(ignore_subscribe_messages=True)
    ours.subscribe(channel())
    db = int(direct.connection_pool.connection_kwargs.get("db") or 0)
    theirs = direct.pubsub(ignore_subscribe_messages=True)
    theirs.subscribe(f"gw:cfg:{db + 1}")

    publish(workspace_id="ws_1")

    assert wait_until(lambda: ours.get_message(timeout=0.1), what="our message")
    assert theirs.get_message(timeout=0.2) is None
    ours.close()
    theirs.close()


def test_a_payload_it_did_not_write_is_not_understood() -> None:
    assert message_decode(b"ws_1") is None
    assert message_decode(b"x:ws_1") is None
    assert message_decode("7:ws_9") == (7, "ws_9")
