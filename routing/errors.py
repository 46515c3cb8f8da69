"""The errors of the inference path's upstream side, each in the one error envelope."""

from __future__ import annotations

import json

from django.conf import settings

from gateway_project.kernel.errors import GatewayError


class UpstreamAnswered(GatewayError):
    """An upstream error response, relayed as is when its body is JSON."""

    def __init__(self, status: int, raw: bytes, retry_after: str | None) -> None:
        server = status >= 500
        super().__init__(
            f"The upstream answered HTTP {status}.",
            status=status,
            type="server_error" if server else "invalid_request_error",
            code="upstream_error",
            headers={"Retry-After": retry_after} if retry_after else None,
        )
        self.raw = raw if _is_json(raw) else None


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def bad_gateway(message: str = "The upstream could not be reached.") -> GatewayError:
    """502 in the envelope."""
    return GatewayError(message, status=502, type="server_error", code="bad_gateway")


def gateway_timeout() -> GatewayError:
    """504 in the envelope."""
    return GatewayError(
        "The upstream did not answer in time.",
        status=504,
        type="server_error",
        code="upstream_timeout",
    )


class CredentialMissing(GatewayError):
    """A target the gateway cannot authenticate to: it is never called without its credential."""


def credential_missing(slug: str) -> CredentialMissing:
    """502 that tells the caller to have the workspace's default Baseten secret set."""
    return CredentialMissing(
        f"The endpoint {slug} has a BASETEN target without a secret and its workspace has no "
        "default Baseten secret; the workspace's operator must set one.",
        status=502,
        type="server_error",
        code="upstream_credential_missing",
        headers={"x-should-retry": "false"},
    )


def upstream_too_large() -> GatewayError:
    """502: the upstream's answer is larger than the gateway holds."""
    limit = settings.GATEWAY_MAX_UPSTREAM_BODY_BYTES
    return bad_gateway(f"The upstream's answer is larger than {limit} bytes.")


def responses_unsupported(slug: str) -> GatewayError:
    """400: the model's server (a BASETEN deployment) has no Responses API."""
    return GatewayError(
        f"The model `{slug}` does not support the Responses API (/v1/responses): use "
        "/v1/chat/completions.",
        status=400,
        type="invalid_request_error",
        code="responses_unsupported",
        headers={"x-should-retry": "false"},
    )
