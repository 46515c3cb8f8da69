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


def test_deltas_of_a_stream_without_usage_are_all_counted_past_the_held_bound():
    from routing.streaming import UNCOUNTED_MAX_BYTES

    relay = SseRelay(slug="acme/llama", strip_usage=True, max_event_bytes=1 << 20)
    event = b'data: {"choices": [{"delta": {"content": "' + b"x" * 200 + b'"}}]}\n\n'
    events = UNCOUNTED_MAX_BYTES // len(event) * 3 + 7

    for _ in range(events):
        relay.feed(event)

    assert relay.usage is None
    assert relay.content_chunks == events
    relay.feed(b'data: {"choices": [{"delta": {"reasoning": "y"}}]}\n\n')
    assert relay.content_chunks == events + 1


def test_usage_that_arrives_ends_the_counting_and_is_what_is_billed():
    relay = SseRelay(slug="acme/llama", strip_usage=True, max_event_bytes=1 << 20)
    relay.feed(b'data: {"choices": [{"delta": {"content": "a"}}], "usage": null}\n\n')
    out = relay.feed(
        b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}}\n\n'
        b"data: [DONE]\n\n"
    )

    assert out == b""
    assert relay.done
    assert relay.usage is not None
    assert (relay.usage.input_tokens, relay.usage.output_tokens) == (3, 9)
