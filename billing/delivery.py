"""One webhook HTTP attempt: SSRF-checked at connect time, pinned to the checked address, signed.

The host is resolved once, every address is checked (netguard), and the request goes to the first
checked address while TLS still verifies the certificate for the host name (SNI + Host header).
No redirects, no proxy from the environment, a fresh connection per attempt, a capped response read.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from urllib.parse import urlsplit

import certifi
import httpx
from django.conf import settings

from billing.signing import signed_headers
from gateway_project.kernel import netguard
from gateway_project.kernel.errors import ValidationFailed

RESPONSE_BODY_LIMIT = 2048
Resolve = Callable[[str], Sequence[str]]


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status (None without a response), the body head, or an error."""

    status_code: int | None
    response_body: str = ""
    error: str = ""
    retry_after: str | None = None
    duration_ms: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class PinnedTarget:
    """The URL rewritten to a checked address, and the host name TLS and Host must still carry."""

    url: httpx.URL
    host: str
    host_header: str


def target_pin(
    *, url: str, allowlist: Sequence[str] | None = None, resolve: Resolve | None = None
) -> PinnedTarget:
    """Resolve once and check every address against the endpoint workspace's `allowlist` (None:
    the global default); raises ValidationFailed(code="unsafe_url")."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    numeric = netguard.numeric_host(host) if host else None
    addresses = [str(numeric)] if numeric else list((resolve or netguard.system_resolve)(host))
    allowlist = netguard.allowlist_default() if allowlist is None else list(allowlist)
    netguard.url_check(url=url, allowlist=allowlist, resolve=lambda _host: addresses)
    refused = [
        a for a in addresses if not netguard.address_is_allowed(a, host=host, allowlist=allowlist)
    ]
    if refused or not addresses:
        raise ValidationFailed(f"Host {host!r} resolves to a refused address.", code="unsafe_url")
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    return PinnedTarget(
        url=httpx.URL(url).copy_with(host=addresses[0]), host=host, host_header=host_header
    )


def webhook_post(
    *,
    url: str,
    msg_id: str,
    body: bytes,
    secrets: Sequence[str],
    timestamp: int | None = None,
    allowlist: Sequence[str] | None = None,
    resolve: Resolve | None = None,
) -> Outcome:
    """Make exactly one signed POST of `body`; never raises for network or receiver trouble."""
    started = time.monotonic()
    try:
        target = target_pin(url=url, allowlist=allowlist, resolve=resolve)
    except (ValidationFailed, OSError, UnicodeError, ValueError) as exc:
        return Outcome(status_code=None, error=f"refused: {exc}"[:500])
    if not secrets:
        return Outcome(status_code=None, error="no active signing secret: rotate one in the admin")
    headers = signed_headers(
        secrets=secrets, msg_id=msg_id, timestamp=int(timestamp or time.time()), body=body
    )
    headers["host"] = target.host_header
    headers["accept-encoding"] = "identity"  # the capped read counts bytes on the wire
    try:
        outcome = _post(target=target, body=body, headers=headers)
    except httpx.HTTPError as exc:
        outcome = Outcome(status_code=None, error=f"{type(exc).__name__}: {exc}"[:500])
    return replace(outcome, duration_ms=(time.monotonic() - started) * 1000)


@cache
def _tls_context(cafile: str) -> ssl.SSLContext:
    """One verifying TLS context per CA bundle and process (building one costs ~100 ms)."""
    return ssl.create_default_context(cafile=cafile or certifi.where())


def _post(*, target: PinnedTarget, body: bytes, headers: dict[str, str]) -> Outcome:
    timeout = settings.GATEWAY_WEBHOOK_TIMEOUT
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    # A fresh client per attempt: connections are keyed by the pinned IP, so none may be reused
    # for another host name. trust_env=False keeps HTTP(S)_PROXY from bypassing the address check.
    with httpx.Client(
        trust_env=False,
        follow_redirects=False,
        timeout=timeout,
        verify=_tls_context(settings.GATEWAY_WEBHOOK_CA_BUNDLE),
    ) as client:
        with client.stream(
            "POST", target.url, content=body, headers=headers, extensions=extensions
        ) as response:
            head = _read_capped(response, deadline=time.monotonic() + timeout)
    return Outcome(
        status_code=response.status_code,
        response_body=head.decode("utf-8", errors="replace"),
        retry_after=response.headers.get("retry-after"),
    )


def _read_capped(response: httpx.Response, *, deadline: float) -> bytes:
    """At most RESPONSE_BODY_LIMIT bytes of the body; a receiver cannot make us read more."""
    head = b""
    for chunk in response.iter_raw():
        head += chunk
        if len(head) >= RESPONSE_BODY_LIMIT or time.monotonic() > deadline:
            break
    return head[:RESPONSE_BODY_LIMIT]
