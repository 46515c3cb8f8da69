"""The SSRF guard: every non-public address class is refused; the allowlist opens exactly itself."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from gateway_project.kernel.errors import ValidationFailed
from gateway_project.kernel.netguard import (
    GuardedResolver,
    address_is_allowed,
    ip_is_public,
    numeric_host,
    url_check,
)

REFUSED_ADDRESSES = [
    "10.0.0.1",  # private
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "169.254.169.254",  # link-local (cloud metadata)
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "0.0.0.0",  # unspecified / "this network"
    "0.1.2.3",
    "192.0.2.10",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",  # v6 loopback
    "::",  # v6 unspecified
    "fe80::1",  # v6 link-local
    "fc00::1",  # unique local
    "fd12:3456::1",
    "fec0::1",  # site-local (deprecated)
    "ff02::1",  # v6 multicast
    "2001:db8::1",  # documentation
    "2001::1",  # teredo
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
]
PUBLIC_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


def fixed(addresses: Sequence[str]) -> Callable[[str], Sequence[str]]:
    """A resolver that answers every name with `addresses`."""
    return lambda host: addresses


def code_of(url: str, allowlist: Sequence[str] = (), resolve: Any = None) -> str | None:
    try:
        url_check(url=url, allowlist=allowlist, resolve=resolve)
    except ValidationFailed as exc:
        return exc.code
    return None


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not ip_is_public(numeric_host(address))  # type: ignore[arg-type]

    assert code_of("https://upstream.example/v1", resolve=fixed([address])) == "unsafe_url"
    host = f"[{address}]" if ":" in address else address
    assert code_of(f"https://{host}/v1") == "unsafe_url"
    assert not address_is_allowed(address, host="upstream.example", allowlist=[])


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are_allowed(address: str) -> None:
    assert code_of("https://upstream.example/v1", resolve=fixed([address])) is None

    assert address_is_allowed(address, host="upstream.example", allowlist=[])


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0x7f.1/",  # hex + short form
        "http://0x7f000001/",
        "http://017700000001/",  # octal
        "http://0177.0.0.1/",
        "http://127.1/",
        "https://127.0.0.1./",  # trailing dot
        "https://[::ffff:7f00:1]/",
        "https://[0:0:0:0:0:ffff:127.0.0.1]/",
        "https://10.1/",
    ],
)
def test_numeric_host_forms_are_parsed_as_addresses(url: str) -> None:
    def no_dns(host: str) -> Sequence[str]:
        raise AssertionError(f"{host} should have been parsed as an address")

    assert code_of(url, resolve=no_dns) == "unsafe_url"


def test_a_name_resolving_to_any_private_address_is_refused() -> None:
    mixed = fixed(["8.8.8.8", "10.0.0.1"])

    assert code_of("https://upstream.example/v1", resolve=mixed) == "unsafe_url"


def test_https_is_required_for_public_hosts() -> None:
    public = fixed(["8.8.8.8"])

    assert code_of("http://upstream.example/v1", resolve=public) == "unsafe_url"
    assert code_of("ftp://upstream.example/v1", resolve=public) == "unsafe_url"
    assert code_of("https://upstream.example/v1", resolve=public) is None


@pytest.mark.parametrize(
    "url", ["", "not a url", "https://", "https://host:99999/", "file:///etc/passwd", "//8.8.8.8/"]
)
def test_malformed_urls_are_refused(url: str) -> None:
    assert code_of(url, resolve=fixed(["8.8.8.8"])) == "unsafe_url"


def test_unresolvable_host_is_refused() -> None:
    def failing(host: str) -> Sequence[str]:
        raise socket.gaierror("no such host")

    assert code_of("https://nowhere.invalid/", resolve=failing) == "unsafe_url"


def test_allowlisted_cidr_allows_its_addresses_over_http() -> None:
    allowlist = ["127.0.0.0/8", "::1"]

    assert code_of("http://127.0.0.1:8080/v1", allowlist) is None
    assert code_of("http://[::1]:8080/v1", allowlist) is None
    assert code_of("http://2130706433/", allowlist) is None
    assert code_of("http://10.0.0.1/", allowlist) == "unsafe_url"


def test_allowlisted_cidr_covers_names_resolving_inside_it() -> None:
    allowlist = ["10.20.0.0/16"]

    assert code_of("http://vllm.internal/v1", allowlist, fixed(["10.20.3.4"])) is None
    assert code_of("http://vllm.internal/v1", allowlist, fixed(["10.20.3.4", "10.9.0.1"])) == (
        "unsafe_url"
    )


def test_allowlisted_host_name_matches_exactly_and_case_insensitively() -> None:
    allowlist = ["vllm.internal"]
    private = fixed(["10.0.0.5"])

    assert code_of("http://VLLM.internal:8000/v1", allowlist, private) is None
    assert code_of("http://vllm.internal./v1", allowlist, private) is None
    assert code_of("http://evil.vllm.internal/v1", allowlist, private) == "unsafe_url"
    assert code_of("http://vllm.internal.evil/v1", allowlist, private) == "unsafe_url"


def test_real_localhost_resolves_and_is_refused_unless_allowlisted() -> None:
    assert code_of("https://localhost/v1") == "unsafe_url"

    assert code_of("http://localhost:8000/v1", ["127.0.0.0/8", "::1"]) is None


def test_address_is_allowed_honours_names_and_cidrs() -> None:
    assert address_is_allowed("10.0.0.5", host="vllm.internal", allowlist=["vllm.internal"])
    assert address_is_allowed("127.0.0.1", host="x", allowlist=["127.0.0.0/8"])
    assert address_is_allowed("::ffff:127.0.0.1", host="x", allowlist=["127.0.0.0/8"])
    assert not address_is_allowed("127.0.0.1", host="x", allowlist=["10.0.0.0/8"])
    assert not address_is_allowed("not-an-ip", host="x", allowlist=[])


class StaticResolver:
    """An aiohttp resolver answering from a table (the DNS a rebinding attacker controls)."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[Any]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


def test_guarded_resolver_drops_refused_addresses() -> None:
    resolver = GuardedResolver(allowlist=[], resolver=StaticResolver(["10.0.0.1", "8.8.8.8"]))  # type: ignore[arg-type]

    results = asyncio.run(resolver.resolve("upstream.example", 443))

    assert [r["host"] for r in results] == ["8.8.8.8"]


def test_guarded_resolver_refuses_when_nothing_is_allowed() -> None:
    resolver = GuardedResolver(allowlist=[], resolver=StaticResolver(["169.254.169.254"]))  # type: ignore[arg-type]

    with pytest.raises(OSError):
        asyncio.run(resolver.resolve("upstream.example", 443))


def test_guarded_resolver_reads_a_callable_allowlist_each_time() -> None:
    allowlist: list[str] = []
    resolver = GuardedResolver(lambda: allowlist, resolver=StaticResolver(["127.0.0.1"]))  # type: ignore[arg-type]
    allowlist.append("127.0.0.0/8")

    results = asyncio.run(resolver.resolve("localhost", 80))

    assert [r["host"] for r in results] == ["127.0.0.1"]


def test_guarded_resolver_with_the_real_resolver_refuses_localhost() -> None:
    async def attempt() -> None:
        resolver = GuardedResolver(allowlist=[])
        try:
            await resolver.resolve("localhost", 80)
        finally:
            await resolver.close()

    with pytest.raises(OSError):
        asyncio.run(attempt())
