"""Who may read metrics, on a gateway node's `/metrics` and on a Celery worker's metrics port.

With GATEWAY_METRICS_TOKEN set, a request needs `Authorization: Bearer <token>` (compared in
constant time), wherever it comes from: 401 otherwise. With no token, only a client connected
directly over loopback, with no forwarding header, may read them: 403 for anyone else, since no
credential would help.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable

from gateway_project.kernel.errors import AuthenticationFailed, Forbidden

# Any of these means a proxy stands between the client and us: the peer address is not the client's.
FORWARDING_HEADERS = frozenset(
    {
        "forwarded",
        "via",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "cf-connecting-ip",
    }
)


def metrics_access_check(
    *, token: str, authorization: str | None, client_host: str | None, header_names: Iterable[str]
) -> None:
    """Raise the 401 or 403 a metrics request gets; return if it may read them."""
    if token:
        if not _bearer_matches(authorization or "", token):
            raise AuthenticationFailed(
                "Metrics need Authorization: Bearer <GATEWAY_METRICS_TOKEN>.",
                code="metrics_unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return
    forwarded = any(name.lower() in FORWARDING_HEADERS for name in header_names)
    if forwarded or not _loopback(client_host):
        raise Forbidden(
            "Metrics are served to loopback clients only; set GATEWAY_METRICS_TOKEN to scrape "
            "them from elsewhere.",
            code="metrics_forbidden",
        )


def _bearer_matches(value: str, token: str) -> bool:
    scheme, _, presented = value.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode("latin-1"), token.encode())


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)
