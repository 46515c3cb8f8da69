"""Standard Webhooks signing: golden vectors, rotation, tampering."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from billing.signing import secret_generate, secret_key, signature_compute, signed_headers

GOLDEN = [
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
    (
        "whsec_plJ3nmyCDGBKInavdOK15jsl",
        "msg_loFOjxBNrRLzqYUf",
        1731705121,
        b'{"event_type":"ping","data":{"success":true}}',
        "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=",
    ),
]
NEW = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OLD = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7"
BODY = '{"type":"API_BILLING_USAGE","data":{"events":[{"modelSlug":"acme/llamá"}]}}'.encode()


@pytest.mark.parametrize(("secret", "msg_id", "timestamp", "body", "expected"), GOLDEN)
def test_golden_vectors_of_the_standard_webhooks_spec_reproduce(
    secret: str, msg_id: str, timestamp: int, body: bytes, expected: str
) -> None:
    signature = signature_compute(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)

    assert signature == expected
    assert signature == Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode()
    )


def test_our_own_vector_matches_the_reference_notes() -> None:
    body = (
        b'{"type":"usage.recorded","timestamp":"2026-01-15T12:00:00.123456Z","data":{"event_id":'
        b'"evt_01HZX3Q9K8M2V7P4R6T8W0Y2A4","request_id":"req_7f3a9c","customer_id":"cus_123",'
        b'"api_key_id":"key_abc","model":"llama-3.1-70b-instruct","usage":{"prompt_tokens":1200,'
        b'"completion_tokens":340,"total_tokens":1540,"cached_prompt_tokens":0},"started_at":'
        b'"2026-01-15T11:59:58.001Z","completed_at":"2026-01-15T12:00:00.100Z","status":"succeeded"}}'
    )

    new = signature_compute(
        secret=NEW, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", timestamp=1768478400, body=body
    )
    old = signature_compute(
        secret=OLD, msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", timestamp=1768478400, body=body
    )

    assert new == "v1,j3ajSQnuCJ2yNY9pjQYxXZj0bR1xP2sbf6ReAv90VIo="
    assert old == "v1,5D9K4ILDP210lmNwu/Jm0bBAw5XjU8Q+lV6cMGXbynA="


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


def test_signed_headers_verify_with_standardwebhooks_including_non_ascii_bytes() -> None:
    headers = signed_headers(secrets=[NEW], msg_id="msg_1", timestamp=_now(), body=BODY)

    payload = Webhook(NEW).verify(BODY, headers)

    assert payload["data"]["events"][0]["modelSlug"] == "acme/llamá"


def test_signed_headers_verify_with_svix() -> None:
    svix = pytest.importorskip("svix.webhooks")
    headers = signed_headers(secrets=[NEW], msg_id="msg_1", timestamp=_now(), body=BODY)

    svix.Webhook(NEW).verify(BODY, headers)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"llam", b"LLAM")),
        lambda h, b: ({**h, "webhook-id": "msg_2"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) - 301)}, b),
    ],
    ids=["body", "id", "timestamp", "stale-timestamp"],
)
def test_tampering_fails_verification(tamper) -> None:
    headers = signed_headers(secrets=[NEW], msg_id="msg_1", timestamp=_now(), body=BODY)

    headers, body = tamper(headers, BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(NEW).verify(body, headers)


def test_a_wrong_secret_fails_verification() -> None:
    headers = signed_headers(secrets=[NEW], msg_id="msg_1", timestamp=_now(), body=BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY, headers)


def test_during_rotation_both_secrets_verify_and_the_newest_signs_first() -> None:
    headers = signed_headers(secrets=[NEW, OLD], msg_id="msg_1", timestamp=_now(), body=BODY)

    entries = headers["webhook-signature"].split(" ")

    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    assert entries[0] == signature_compute(
        secret=NEW, msg_id="msg_1", timestamp=int(headers["webhook-timestamp"]), body=BODY
    )
    Webhook(NEW).verify(BODY, headers)
    Webhook(OLD).verify(BODY, headers)


def test_generated_secrets_are_whsec_with_32_random_bytes() -> None:
    first, second = secret_generate(), secret_generate()

    assert first.startswith("whsec_") and len(secret_key(first)) == 32
    assert first != second


def test_timestamps_are_whole_seconds_whatever_the_zone() -> None:
    moment = datetime(2026, 5, 5, 14, 0, tzinfo=UTC) + timedelta(milliseconds=999)

    headers = signed_headers(
        secrets=[NEW], msg_id="msg_1", timestamp=int(moment.timestamp()), body=BODY
    )

    assert headers["webhook-timestamp"] == str(int(moment.timestamp()))
