"""The stream's `model` rewrite: after the upstream's first event it is a plain byte replace, and it
gives exactly what the full pattern gives, whatever the upstream sends next."""

from __future__ import annotations

import pytest

from routing.streaming import MODEL_RE, SseRelay

SLUG_MEMBER = b'"model":"acme/llama"'
FIRST = b'data: {"id":"c1","model":"fake-model","choices":[{"delta":{"content":"a"}}]}\n\n'


def _relay() -> SseRelay:
    relay = SseRelay(slug="acme/llama", strip_usage=False, max_event_bytes=1 << 20)
    assert relay.feed(FIRST) == FIRST.replace(b'"model":"fake-model"', SLUG_MEMBER)
    return relay


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"model":"fake-model","choices":[{"delta":{"content":"b"}}]}\n\n',
        b'data: {"model": "fake-model-2","choices":[]}\n\n',
        b'data: {"model" : "other","x":{"model":"fake-model"}}\n\n',
        b'data: {"model":"fake-model\\"x","choices":[]}\n\n',
        b'data: {"model":"fake-model","tool":"{\\"model\\":\\"fake-model\\"}"}\n\n',
        b'data: {"model":"model","choices":[]}\n\n',
        b'data: {"model":null,"choices":[]}\n\n',
        b'data: {"choices":[{"delta":{"content":"\\"model\\": x"}}]}\n\n',
        b'data: {"model":"acme/llama","choices":[]}\n\n',
        b'data: {"model":"fake-model"}\n\ndata: {"model":"else"}\n\n',
    ],
)
def test_every_later_event_is_rewritten_as_the_full_pattern_rewrites_it(event: bytes) -> None:
    relay = _relay()

    out = relay.feed(event)

    assert out == MODEL_RE.sub(SLUG_MEMBER, event)


def test_an_upstream_that_names_its_model_differently_later_is_still_rewritten() -> None:
    relay = _relay()

    out = relay.feed(b'data: {"model":"fake-model-v2","choices":[]}\n\n')

    assert out == b'data: {"model":"acme/llama","choices":[]}\n\n'
