"""A usage event as the gateway writes it to the stream, for the ingest tests."""

from typing import Any

from groups.models import Group


def stream_event(
    group: Group, request_id: str, idempotency_key: str, **fields: Any
) -> dict[str, Any]:
    return {
        "idempotencyKey": idempotency_key,
        "timestamp": "2026-05-05T12:00:00.123Z",
        "requestId": request_id,
        "requestMetadata": {"a": 1},
        "modelSlug": "acme/llama",
        "externalCustomerId": "cust_42",
        "externalEntityId": "cust_42",
        "apiKeyPrefix": "sky_sCqhBwEy4kPd",
        "groupId": group.id,
        "status": "completed",
        "tokens": {"inputTokens": 10, "outputTokens": 20, "cachedInputTokens": 3},
        "workspaceId": group.workspace_id,
        "usageEstimated": False,
        "httpStatus": 200,
        "target": "OPENAI_COMPATIBLE#0",
        "totalMs": 5.0,
        "upstreamMs": 4.0,
        "firstByteMs": 1.0,
        **fields,
    }
