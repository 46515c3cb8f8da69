"""SSRF guard for every outbound URL we are told to call: model upstreams and webhook receivers.

A URL is safe when it is https and every address its host resolves to is public, or when its host
(a name, or an address inside a CIDR) is in the workspace's allowlist; then plain http is allowed
too. A workspace's allowlist is set by staff; a workspace without one uses the global
GATEWAY_UPSTREAM_ALLOWLIST (meant for local use), so one tenant's private range is never another's.
The same address rule runs again at connect time (GuardedResolver) so DNS rebinding gains nothing.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from gateway_project.kernel.errors import ValidationFailed
from gateway_project.kernel.hot_settings import hot

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str], Sequence[str]]

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried inside a mapped, compatible, NAT64 or 6to4 IPv6 address."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64 or (addr in _COMPATIBLE and int(addr) > 1):
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


# IANA special-purpose blocks that some Python versions' `is_global` still calls global.
_V4_SPECIAL = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
    )
)


def _v4_is_public(addr: ipaddress.IPv4Address) -> bool:
    # is_global alone lets multicast through; 100.64/10 (CGNAT) is not global.
    if any(addr in net for net in _V4_SPECIAL):
        return False
    return addr.is_global and not (
        addr.is_multicast
        or addr.is_private
        or addr.is_reserved
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_unspecified
    )


def ip_is_public(addr: IPAddress) -> bool:
    """Whether an address is a public unicast address, looking inside IPv4-embedding IPv6 forms."""
    if isinstance(addr, ipaddress.IPv4Address):
        return _v4_is_public(addr)
    embedded = _embedded_v4(addr)
    if embedded is not None:
        return _v4_is_public(embedded)
    if addr.teredo is not None:
        return False
    return addr.is_global and not (
        addr.is_multicast
        or addr.is_private
        or addr.is_reserved
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_site_local
        or addr.is_unspecified
    )


def numeric_host(host: str) -> IPAddress | None:
    """The address a host string denotes numerically (`127.1`, `0x7f.1`, `2130706433`, `[::1]`)."""
    candidate = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(candidate.split("%", 1)[0])
    except ValueError:
        pass
    try:
        # Whatever inet_aton accepts, the OS resolver would also treat as an address.
        return ipaddress.IPv4Address(socket.inet_aton(candidate))
    except (OSError, ValueError):
        return None


_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
ALLOWLIST_MAX_ENTRIES = 100
_ALLOWLIST_NAME = "workspace's upstream allowlist"


class AllowlistOwner(Protocol):
    """Anything carrying a per-tenant allowlist (a Workspace); None means "use the default"."""

    upstream_allowlist: list[str] | None


def allowlist_entry_clean(entry: str) -> str:
    """An allowlist entry normalized: a CIDR (or one address) or a host name; else ValueError."""
    value = entry.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        pass
    if numeric_host(value) is not None:
        raise ValueError(
            f"{entry[:100]!r} is a shortened address: write it as a CIDR, e.g. 10.0.0.0/8"
        )
    if not _HOST_NAME.match(value):
        raise ValueError(
            f"{entry[:100]!r} is neither a CIDR (10.0.0.0/8, fd00::/8) nor a host name"
        )
    return value


def allowlist_parse(entries: Iterable[str]) -> list[str]:
    """The entries normalized, blanks and duplicates dropped; ValueError names the first bad one."""
    clean: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"{entry!r} is not a string")
        if entry.strip() and (value := allowlist_entry_clean(entry)) not in clean:
            clean.append(value)
    if len(clean) > ALLOWLIST_MAX_ENTRIES:
        raise ValueError(f"at most {ALLOWLIST_MAX_ENTRIES} entries are allowed")
    return clean


def allowlist_default() -> list[str]:
    """The global GATEWAY_UPSTREAM_ALLOWLIST: the allowlist of a workspace that has none."""
    return list(hot.GATEWAY_UPSTREAM_ALLOWLIST)


def allowlist_effective(owner: AllowlistOwner | None) -> list[str]:
    """The workspace's own allowlist when staff set one, else the global default."""
    own = owner.upstream_allowlist if owner is not None else None
    return list(own) if own is not None else allowlist_default()


def _split_allowlist(allowlist: Iterable[str]) -> tuple[set[str], list[Network]]:
    names: set[str] = set()
    networks: list[Network] = []
    for entry in allowlist:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return names, networks


def _in_networks(addr: IPAddress, networks: list[Network]) -> bool:
    candidates: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        candidates.append(addr.ipv4_mapped)
    return any(c.version == n.version and c in n for c in candidates for n in networks)


def _as_ip(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, str):
        return ipaddress.ip_address(ip.split("%", 1)[0])
    return ip


def address_is_allowed(ip: str | IPAddress, *, host: str, allowlist: Iterable[str]) -> bool:
    """Connect-time rule: the host name is allow-listed, the address is in an allow-listed CIDR,
    or the address is public."""
    names, networks = _split_allowlist(allowlist)
    if host.lower().rstrip(".") in names:
        return True
    try:
        addr = _as_ip(ip)
    except ValueError:
        return False
    return _in_networks(addr, networks) or ip_is_public(addr)


def system_resolve(host: str) -> list[str]:
    """Every address the OS resolver returns for a host name."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _unsafe(message: str) -> ValidationFailed:
    return ValidationFailed(message, code="unsafe_url")


def _host_addresses(host: str, resolve: Resolve) -> list[IPAddress]:
    numeric = numeric_host(host)
    if numeric is not None:
        return [numeric]
    try:
        return [_as_ip(a) for a in resolve(host)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise _unsafe(f"Host {host!r} does not resolve.") from exc


def url_check(*, url: str, allowlist: Iterable[str], resolve: Resolve | None = None) -> None:
    """Raise ValidationFailed(code="unsafe_url") unless the URL may be called (see module doc)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise _unsafe("The URL cannot be parsed.") from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        raise _unsafe("The URL must be an absolute http(s) URL.")
    names, networks = _split_allowlist(allowlist)
    if host in names:
        return
    addresses = _host_addresses(host, resolve or system_resolve)
    if not addresses:
        raise _unsafe(f"Host {host!r} does not resolve.")
    if all(_in_networks(a, networks) for a in addresses):
        return
    if scheme != "https":
        raise _unsafe(f"The URL must use https (or its host be in the {_ALLOWLIST_NAME}).")
    refused = [str(a) for a in addresses if not (_in_networks(a, networks) or ip_is_public(a))]
    if refused:
        raise _unsafe(
            f"Host {host!r} resolves to a non-public address ({refused[0]}) that is not in the "
            f"{_ALLOWLIST_NAME}."
        )


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that drops addresses the allowlist and public-address rule refuse."""

    def __init__(
        self,
        allowlist: Iterable[str] | Callable[[], Iterable[str]] = (),
        *,
        resolver: AbstractResolver | None = None,
    ) -> None:
        # A callable is read on every resolve, so settings overridden later still apply.
        self._allowlist = allowlist
        self._resolver = resolver  # created lazily: aiohttp's resolvers bind the running loop

    def _allowlist_now(self) -> list[str]:
        source = self._allowlist
        return list(source() if callable(source) else source)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve, then keep only allowed addresses; none left is a connection error."""
        if self._resolver is None:
            self._resolver = DefaultResolver()
        allowlist = self._allowlist_now()
        results = await self._resolver.resolve(host, port, family)
        allowed = [
            r for r in results if address_is_allowed(r["host"], host=host, allowlist=allowlist)
        ]
        if not allowed:
            raise OSError(f"refusing to connect to {host!r}: no allowed address")
        return allowed

    async def close(self) -> None:
        """Release the wrapped resolver."""
        if self._resolver is not None:
            await self._resolver.close()
