"""A JSON log line per management API call, with the keys of an inference request's line."""

from __future__ import annotations

import json
import logging

import pytest

from gateway_project.kernel.logs import REQUEST_KEYS, JsonFormatter
from tests.api.conftest import client_for


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(record))
        for record in caplog.records
        if record.name == "gateway.management"
    ]


def test_a_management_call_is_one_line_with_route_workspace_key_prefix_and_request_id(
    api, manage_key, workspace, endpoints, caplog
):
    caplog.set_level(logging.INFO, logger="gateway.management")

    response = api.get(f"/v1/gateway/endpoints/{endpoints[0].id}")

    (line,) = _lines(caplog)
    assert set(REQUEST_KEYS) <= line.keys()
    assert line["method"] == "GET"
    assert line["route"] == "/v1/gateway/endpoints/<gwid:endpoint_id>"
    assert line["status"] == 200
    assert line["workspace"] == workspace.id
    assert line["key_prefix"] == manage_key.split(".", 1)[0]
    assert line["request_id"] == response["X-Request-ID"]
    assert isinstance(line["total_ms"], float)
    assert manage_key.split(".", 1)[1] not in json.dumps(line)


@pytest.mark.django_db
def test_a_refused_call_is_logged_without_the_key_it_presented(caplog):
    caplog.set_level(logging.INFO, logger="gateway.management")
    presented = "gwm_AAAAAAAAAAAA.not-a-real-secret-0123456789"

    response = client_for(presented).get("/v1/gateway/endpoints")

    (line,) = _lines(caplog)
    assert response.status_code == 401
    assert line["status"] == 401
    assert line["workspace"] is None and line["key_prefix"] is None
    assert "not-a-real-secret" not in json.dumps(line)


@pytest.mark.django_db
def test_the_admin_and_health_probes_get_no_management_line(client, caplog):
    caplog.set_level(logging.INFO, logger="gateway.management")

    client.get("/healthz")
    client.get("/admin/login/")

    assert _lines(caplog) == []


def test_the_line_is_written_when_django_runs_the_chain_asynchronously(caplog):
    from asgiref.sync import async_to_sync, iscoroutinefunction
    from django.http import HttpResponse
    from django.test import RequestFactory

    from gateway_project.access_log import management_access_log

    caplog.set_level(logging.INFO, logger="gateway.management")

    async def view(request):
        return HttpResponse(status=204)

    middleware = management_access_log(view)
    assert iscoroutinefunction(middleware)
    response = async_to_sync(middleware)(RequestFactory().get("/v1/gateway/endpoints"))

    (line,) = _lines(caplog)
    assert line["status"] == 204 and line["method"] == "GET"
    assert line["request_id"] == response["X-Request-ID"]
