"""Every code block of README.md and docs/*.md runs against a live gateway, as a reader pastes it.

The rules a page follows are in tests/docs/snippets.py. A page added to docs/ is picked up
without changes here: its `curl` blocks in the `$GW`/`$MK`/`$KEY` style just run.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml
from django.utils import timezone

from billing.models import DeliveryStatus, UsageEvent, WebhookDelivery
from billing.services.attempts import delivery_attempt_run
from billing.services.batching import events_batch
from billing.services.ingest import usage_ingest
from billing.services.webhooks import (
    delivery_resend,
    webhook_endpoint_create,
    webhook_endpoint_set_enabled,
)
from gateway_project.env import BASE_DIR
from groups.services.audit import SYSTEM_ACTOR
from tests.docs.conftest import Reader
from tests.docs.snippets import (
    DATA,
    NODE,
    PYTHON,
    SHELL,
    Block,
    PageRun,
    block_problem,
    blocks_read,
    failure_text,
)
from tests.proxy.conftest import SLUG
from tests.waiting import wait_until

PAGES = [BASE_DIR / "README.md", *sorted((BASE_DIR / "docs").glob("*.md"))]
RUNNABLE = SHELL | PYTHON | NODE
RUN_PAGES = [
    page
    for page in PAGES
    if any(b.language in RUNNABLE and not b.not_run for b in blocks_read(page))
]


def _page_id(page: Path) -> str:
    return str(page.relative_to(BASE_DIR))


def test_every_block_of_every_page_is_run_checked_or_marked() -> None:
    blocks = [block for page in PAGES for block in blocks_read(page)]

    problems = [problem for block in blocks if (problem := block_problem(block))]
    not_run = [block.where for block in blocks if block.not_run]
    runnable = [block for block in blocks if block.language in RUNNABLE and not block.not_run]

    assert not problems, "\n".join(problems)
    assert len(runnable) > len(not_run), (runnable, not_run)
    print(f"{len(blocks)} blocks: {len(runnable)} run, {len(not_run)} marked not-run: {not_run}")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_the_data_blocks_of_the_page_parse(page: Path) -> None:
    blocks = [b for b in blocks_read(page) if b.language in DATA and not b.not_run]

    for block in blocks:
        _data_parse(block)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("page", RUN_PAGES, ids=_page_id)
def test_the_blocks_of_the_page_run(
    page: Path, reader: Reader, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    runnable = [b for b in blocks_read(page) if b.language in RUNNABLE and not b.not_run]
    node = (
        request.getfixturevalue("node_modules")
        if any(b.language in NODE for b in runnable)
        else None
    )
    run = PageRun(workdir=tmp_path, env=reader.env, node_modules=node)

    for block in runnable:
        # What the Celery beat does every second: the events API then shows recent requests.
        usage_ingest()
        if block.receiver:
            _receiver_check(run, block, reader, tmp_path)
            continue
        done = run.shell(block) if block.language in SHELL else run.program(block)
        assert done.returncode == 0, failure_text(block, done)

    assert run.ran == runnable


def test_a_curl_that_gets_an_error_fails_its_page(reader: Reader, tmp_path: Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text(
        '```sh\ncurl -s "$GW/v1/gateway/groups/grp_missing" -H "Authorization: Bearer $MK"\n```\n'
        '<!-- status: 401 -->\n```sh\ncurl -s "$GW/v1/gateway/groups"\n```\n'
        '<!-- status: 200 -->\n```sh\ncurl -s "$GW/v1/gateway/groups"\n```\n'
    )
    missing, wrong_status, right_status = blocks_read(page)
    run = PageRun(workdir=tmp_path, env=reader.env)

    assert run.shell(missing).returncode != 0
    assert run.shell(wrong_status).returncode == 0
    failed = run.shell(right_status)
    assert failed.returncode != 0
    assert "got HTTP 401, the page says 200" in failed.stderr


def test_variables_set_by_a_block_reach_the_next_blocks_but_reader_exports_do_not(
    reader: Reader, tmp_path: Path
) -> None:
    page = tmp_path / "chain.md"
    page.write_text(
        '```sh\nexport GW=http://localhost:8000\nLISTED=$(curl -s "$GW/v1/gateway/groups" '
        '-H "Authorization: Bearer $MK")\n```\n'
        "```python\nimport json, os\nprint(len(json.loads(os.environ['LISTED'])['items']))\n```\n"
    )
    shell_block, python_block = blocks_read(page)
    run = PageRun(workdir=tmp_path, env=reader.env)

    assert run.shell(shell_block).returncode == 0
    done = run.program(python_block)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def _data_parse(block: Block) -> None:
    try:
        json.loads(block.text) if block.language == "json" else yaml.safe_load(block.text)
    except (ValueError, yaml.YAMLError) as exc:
        raise AssertionError(f"{block.where}: {block.language} does not parse: {exc}") from exc


def _usage_event(reader: Reader) -> UsageEvent:
    """One inference request through the gateway, stored as the beat would store it."""
    answer = httpx.post(
        f"{reader.gateway.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {reader.tenant.key}"},
        json={"model": SLUG, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["x-request-id"]
    return wait_until(
        lambda: (
            usage_ingest() is not None and UsageEvent.objects.filter(request_id=request_id).first()
        ),
        timeout=10,
        what="the usage event is stored",
    )


def _delivered(*, endpoint_id: str) -> WebhookDelivery:
    """Batch what is due for the endpoint and make one attempt."""
    ids = events_batch(now=timezone.now())
    delivery = WebhookDelivery.objects.get(pk__in=ids, endpoint_id=endpoint_id)
    delivery_attempt_run(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return delivery


def _receiver_check(run: PageRun, block: Block, reader: Reader, tmp_path: Path) -> None:
    """The receiver bills a real signed delivery once, answers its resend without billing it
    again, and refuses a body whose signature does not verify."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/webhooks"
    endpoint, secret = webhook_endpoint_create(
        workspace=reader.workspace, url=url, actor=SYSTEM_ACTOR
    )
    log = tmp_path / f"receiver-{block.line}.log"
    server = run.server(block, {"PORT": str(port), "WEBHOOK_SECRET": secret}, log)
    try:
        wait_until(lambda: _listening(port) or server.poll() is not None, timeout=15)
        assert server.poll() is None, f"{block.where} stopped:\n{log.read_text()}"

        first = _usage_event(reader)
        delivery = _delivered(endpoint_id=endpoint.pk)
        assert delivery.status == DeliveryStatus.DELIVERED, (delivery.last_error, log.read_text())
        wait_until(lambda: first.idempotency_key in log.read_text(), what="the event is billed")

        delivery_resend(delivery=delivery, actor=SYSTEM_ACTOR)
        delivery_attempt_run(delivery_id=delivery.pk)
        delivery.refresh_from_db()
        second = _usage_event(reader)
        after = _delivered(endpoint_id=endpoint.pk)
        wait_until(lambda: second.idempotency_key in log.read_text(), what="the next is billed")
        forged = httpx.post(
            url,
            content=bytes(after.body),
            headers={
                "content-type": "application/json",
                "webhook-id": "msg_forged",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl",
            },
        )
        output = log.read_text()

        assert delivery.status == DeliveryStatus.DELIVERED, delivery.last_error
        assert delivery.attempts == 2
        assert output.count(first.idempotency_key) == 1, output
        assert 400 <= forged.status_code < 500, forged.text
        assert output.count(second.idempotency_key) == 1, output
    finally:
        server.terminate()
        server.wait(timeout=10)
        webhook_endpoint_set_enabled(endpoint=endpoint, enabled=False, actor=SYSTEM_ACTOR)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
