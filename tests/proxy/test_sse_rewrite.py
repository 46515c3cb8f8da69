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


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"model": "fake-model-2","choices":[]}\n\n',
        b'data: {"model" : "other","x":{"model":"fake-model"}}\n\n',
        b'data: {"model":"fake-model","tool":"{\\"model\\":\\"fake-model\\"}"}\n\n',
        b'data: {"model":null,"choices":[]}\n\n',
        b'data: {"model":"fake-model"}\n\ndata: {"model":"else"}\n\n',
    ],
)
def test_a_first_block_of_several_events_is_rewritten_as_the_full_pattern_rewrites_it(
    event: bytes,
) -> None:
    relay = SseRelay(slug="acme/llama", strip_usage=False, max_event_bytes=1 << 20)
    block = FIRST + event + FIRST

    out = relay.feed(block)

    assert out == MODEL_RE.sub(SLUG_MEMBER, block)


CHUNK = b'data: {"model":"m","choices":[{"delta":{"content":"a"}}],"usage":null}\n\n'
USAGE_ONLY = (
    b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":%d}}\n\n'
)
WITH_CHOICES = (
    b'data: {"model":"m","choices":[{"delta":{"content":"b"}}],'
    b'"usage" : {"prompt_tokens":3,"completion_tokens":%d}}\n\n'
)
RESPONSES = (
    b'event: response.completed\ndata: {"type":"response.completed","response":'
    b'{"usage":{"input_tokens":4,"output_tokens":%d}}}\n\n'
)
BROKEN = b'data: {"choices":[],"usage":{"prompt_tokens":\n\n'


@pytest.mark.parametrize("strip", [True, False])
@pytest.mark.parametrize(
    "events",
    [
        [CHUNK, CHUNK, USAGE_ONLY % 2, b"data: [DONE]\n\n"],
        [USAGE_ONLY % 1, CHUNK, CHUNK],
        [CHUNK, USAGE_ONLY % 1, CHUNK, USAGE_ONLY % 5, CHUNK],
        [WITH_CHOICES % 1, WITH_CHOICES % 2, WITH_CHOICES % 3, b"data: [DONE]\n\n"],
        [CHUNK, RESPONSES % 7],
        [CHUNK, BROKEN, CHUNK, USAGE_ONLY % 4],
        [CHUNK, BROKEN],
        [USAGE_ONLY % 6],
    ],
)
def test_a_block_of_events_is_relayed_and_billed_as_its_events_one_by_one(
    events: list[bytes], strip: bool
) -> None:
    whole = SseRelay(slug="acme/llama", strip_usage=strip, max_event_bytes=1 << 20)
    single = SseRelay(slug="acme/llama", strip_usage=strip, max_event_bytes=1 << 20)

    out = whole.feed(b"".join(events)) + whole.rest()
    expected = b"".join(single.feed(event) for event in events) + single.rest()

    assert out == expected
    assert whole.usage == single.usage
    assert whole.done == single.done
    assert (whole.usage is None) == (events in ([CHUNK, BROKEN],))
    if strip:
        # Usage-only events are not relayed (one cut short, unreadable, is).
        assert b'"model":"acme/llama","choices":[],"usage"' not in out
