"""Opaque, time-ordered string ids: `<kind>_<ULID>`."""

from __future__ import annotations

from ulid import ULID


def new_id(kind: str) -> str:
    """A fresh id such as `grp_01J9X7Y0Z3K4M5N6P7Q8R9S0T1`; sorts by creation time."""
    return f"{kind}_{ULID()}"


def new_workspace_id() -> str:
    return new_id("ws")


def new_group_id() -> str:
    return new_id("grp")


def new_endpoint_id() -> str:
    return new_id("ep")


def new_secret_id() -> str:
    return new_id("sec")


def new_management_key_id() -> str:
    return new_id("mk")


def new_api_key_id() -> str:
    return new_id("key")


def new_webhook_endpoint_id() -> str:
    return new_id("whe")


def new_delivery_id() -> str:
    return new_id("msg")


def new_audit_id() -> str:
    return new_id("aud")


def new_ulid() -> str:
    """A bare ULID (usage events' idempotency keys)."""
    return str(ULID())
