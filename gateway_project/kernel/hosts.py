"""The one way a host name is compared: Host headers and stored custom domains alike."""

from __future__ import annotations


def host_normalize(host: str) -> str:
    """Lowercase ASCII (IDNA) form of `host`, without a port and without one trailing dot."""
    value = host.strip()
    if value.startswith("["):
        value = value[: value.find("]") + 1] or value
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    value = value.removesuffix(".")
    if not value.isascii():
        try:
            value = value.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # not a valid DNS name: compared as given, it matches no stored domain
    return value.lower()
