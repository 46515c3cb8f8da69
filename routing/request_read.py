"""What the client sent, read and bounded: headers, body, the body as JSON, request metadata."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from gateway_project.kernel.errors import GatewayError, ValidationFailed
from gateway_project.kernel.hot_settings import hot
from gateway_project.kernel.jsoncheck import JsonRejected, json_strict_loads
from routing.client_connection import Receive
from routing.jsonwire import json_parse

MAX_HEADER_BYTES = 64 * 1024


def request_headers(scope: MutableMapping[str, Any]) -> dict[str, str]:
    """The request's headers, lower-cased names; 431 past MAX_HEADER_BYTES."""
    raw = scope["headers"]
    # The ASGI server may accept headers of any size; none of them is decoded, kept or relayed
    # upstream past this bound.
    if sum(len(name) + len(value) for name, value in raw) > MAX_HEADER_BYTES:
        raise GatewayError(
            f"The request headers exceed {MAX_HEADER_BYTES} bytes.",
            status=431,
            code="request_header_fields_too_large",
        )
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in raw}


def _too_large() -> GatewayError:
    limit = hot.GATEWAY_MAX_BODY_BYTES
    return GatewayError(
        f"The request body exceeds {limit} bytes.", status=413, code="request_too_large"
    )


async def request_body_read(headers: dict[str, str], receive: Receive) -> bytes:
    """The whole body; 413 past GATEWAY_MAX_BODY_BYTES, 499 when the client goes away."""
    limit = hot.GATEWAY_MAX_BODY_BYTES
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large()
    parts, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise GatewayError("The client went away.", status=499, code="client_closed")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large()
        parts.append(chunk)
        more = message.get("more_body", False)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def request_body_parse(headers: dict[str, str], raw: bytes) -> tuple[dict[str, Any], bool]:
    """The body as a JSON object, and whether it is strict JSON (see json_parse); 415 for another
    content type, 400 for anything else."""
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise GatewayError(
            "Send the body as application/json.", status=415, code="unsupported_media_type"
        )
    try:
        body, strict = json_parse(raw)
    except (ValueError, RecursionError):
        raise ValidationFailed("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationFailed("The body must be a JSON object.", code="invalid_json")
    return body, strict


def request_metadata(headers: dict[str, str]) -> dict[str, Any]:
    """The X-Request-Metadata JSON object ({} without the header); 400 when it is not one."""
    raw = headers.get("x-request-metadata")
    if raw is None:
        return {}
    limit = hot.GATEWAY_MAX_METADATA_BYTES
    data = raw.encode("latin-1")  # the header's bytes as sent
    if len(data) > limit:
        raise _metadata_invalid(f"X-Request-Metadata may hold at most {limit} bytes.")
    try:
        value = json_strict_loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _metadata_invalid("X-Request-Metadata must be UTF-8.") from None
    except JsonRejected as exc:
        raise _metadata_invalid(f"X-Request-Metadata: {exc.message}") from None
    if not isinstance(value, dict):
        raise _metadata_invalid("X-Request-Metadata must be a JSON object.")
    return value


def _metadata_invalid(message: str) -> ValidationFailed:
    return ValidationFailed(message, code="invalid_request_metadata", param="X-Request-Metadata")
