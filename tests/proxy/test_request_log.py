"""The inference request's log line has the keys every process's request lines share."""

from __future__ import annotations

import json
import logging

import httpx

from gateway_project.kernel.logs import BASE_KEYS, REQUEST_KEYS, JsonFormatter
from tests.proxy.conftest import SLUG
from tests.waiting import wait_until


def test_an_inference_request_line_has_the_shared_request_keys(gateway, tenant, caplog):
    caplog.set_level(logging.INFO, logger="gateway.request")
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}

    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {tenant.key}"},
    )

    # Written just after the response (while the worker next waits, at most milliseconds later).
    (record,) = wait_until(
        lambda: [r for r in caplog.records if r.name == "gateway.request"], what="the log line"
    )
    line = json.loads(JsonFormatter().format(record))
    assert list(line)[: len(BASE_KEYS)] == list(BASE_KEYS)
    assert set(REQUEST_KEYS) <= line.keys()
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["key_prefix"] == tenant.prefix
    assert tenant.key.split(".", 1)[1] not in json.dumps(line)
