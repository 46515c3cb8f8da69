"""At connect time each target is checked against its own workspace's allowlist: sessions (their
DNS cache and connection pool) are never shared between allowlists."""

from __future__ import annotations

import asyncio
import json

import pytest

from routing.upstream import UpstreamRefused, upstream_close, upstream_open
from tests.fakes.model_server import FakeModelServerThread

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


async def _post(url: str, allowlist: tuple[str, ...] | None) -> int:
    response = await upstream_open(
        url=url, body=BODY, headers={"Content-Type": "application/json"}, allowlist=allowlist
    )
    response.release()
    return response.status


def test_a_name_allowed_for_one_workspace_is_refused_for_another_in_the_same_worker() -> None:
    async def both(url: str) -> tuple[int, BaseException | None]:
        try:
            allowed = await _post(url, ("127.0.0.0/8", "::1/128"))
            try:
                await _post(url, ())
            except OSError as exc:
                return allowed, exc
            return allowed, None
        finally:
            await upstream_close()

    with FakeModelServerThread() as fake:
        url = fake.url.replace("127.0.0.1", "localhost") + "/chat/completions"
        allowed, refused = asyncio.run(both(url))

    assert allowed == 200
    assert isinstance(refused, OSError)
    assert "no allowed address" in repr(refused)  # the guarded resolver's refusal


def test_an_address_literal_is_checked_against_the_given_allowlist() -> None:
    async def refused(url: str) -> None:
        try:
            await _post(url, ("10.0.0.0/8",))
        finally:
            await upstream_close()

    with FakeModelServerThread() as fake, pytest.raises(UpstreamRefused):
        asyncio.run(refused(fake.url + "/chat/completions"))
