"""A key minted with `expires_at` 2 s ahead works, then gets 401 on both gateway workers within
1 s of that instant, with nothing written at expiry time (each worker checks its cached entry's
expiry against the clock)."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.faults.processes import Gateway

pytestmark = pytest.mark.slow
ATTEMPTS = 60  # connections opened until both workers hold one


@dataclass
class Line:
    """One keep-alive connection, served by one worker for its whole life."""

    conn: http.client.HTTPConnection
    worker: int = 0
    answers: list[tuple[float, int, bytes]] = field(default_factory=list)

    def send(self, key: str, body: bytes) -> tuple[float, int, bytes]:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = self.conn.getresponse()
        answer = (time.time(), response.status, response.read())
        self.answers.append(answer)
        return answer


def _owner(gateway: Gateway, line: Line) -> int:
    """The worker holding the connection's server side."""
    local = line.conn.sock.getsockname()[1]
    for worker in gateway.workers():
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == gateway.port and conn.raddr:
                if conn.raddr.port == local:
                    return int(worker.pid)
    return 0


def _lines_on_both_workers(gateway: Gateway, key: str, body: bytes) -> dict[int, Line]:
    """A connection held by each worker (found with a key that does not expire)."""
    found: dict[int, Line] = {}
    for _ in range(ATTEMPTS):
        line = Line(http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10))
        _, status, raw = line.send(key, body)
        assert status == 200, raw
        line.worker = _owner(gateway, line)
        if line.worker and line.worker not in found:
            found[line.worker] = line
        else:
            line.conn.close()
        if len(found) == 2:
            return found
    pytest.fail(f"{ATTEMPTS} connections never reached both workers: {sorted(found)}")


def test_a_key_stops_working_at_its_expiry_on_both_workers(stack) -> None:
    gateway, tenant = stack.gateway, stack.tenant
    body = json.dumps(
        {"model": tenant["slug"], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    ).encode()
    # Which worker holds which connection is found first, with the tenant's other key, so the
    # expiring key's 2 s are spent calling, not searching.
    lines = _lines_on_both_workers(gateway, tenant["key"], body)
    expires = datetime.now(UTC) + timedelta(seconds=2)
    minted = httpx.post(
        f"{gateway.url}/v1/gateway/groups/{tenant['group_id']}/api_keys",
        json={"name": "expiring", "expires_at": expires.isoformat().replace("+00:00", "Z")},
        headers={"Authorization": f"Bearer {tenant['management_key']}"},
    )
    assert minted.status_code == 200, minted.text
    key, deadline = minted.json()["api_key"], expires.timestamp()

    for line in lines.values():
        line.answers.clear()
        line.send(key, body)
    # Keep calling on each worker until it refuses the key: the condition waited on.
    while not all(line.answers[-1][1] == 401 for line in lines.values()):
        assert time.time() < deadline + 5, "the key still works 5 s after its expiry"
        for line in lines.values():
            if line.answers[-1][1] != 401:
                line.send(key, body)

    for worker, line in lines.items():
        before = [status for at, status, _ in line.answers if at < deadline - 0.05]
        first_refusal = next(answer for answer in line.answers if answer[1] == 401)
        assert before and set(before) == {200}, f"worker {worker}: {before}"
        assert first_refusal[0] <= deadline + 1.0, f"worker {worker} refused late"
        error = json.loads(first_refusal[2])["error"]
        assert error["code"] == "invalid_api_key"
        assert "expired" in error["message"]
        line.conn.close()
