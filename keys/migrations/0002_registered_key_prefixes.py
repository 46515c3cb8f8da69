"""Registered keys: the prefix becomes the part before the first dot, never secret material.

Keys registered earlier stored their first 16 characters as the prefix, which could hold part of the
secret. A stored prefix with a dot is cut at the dot (that part is the key's prefix under the new
rule); any other becomes an opaque `reg_` handle with no key material. Keys are found by their
peppered hash, so every registered key keeps working. Audit records follow the new prefixes.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

from django.db import migrations

PREFIX = re.compile(r"[A-Za-z0-9_-]{4,16}")
BASE62 = string.digits + string.ascii_letters


def _handle(taken: set[str]) -> str:
    while True:
        handle = "reg_" + "".join(secrets.choice(BASE62) for _ in range(12))
        if handle not in taken:
            return handle


def _new_prefix(old: str, taken: set[str]) -> str:
    head, dot, _ = old.partition(".")
    if dot and PREFIX.fullmatch(head) and head not in taken:
        return head
    return _handle(taken)


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return new if value == old else value


def forwards(apps: Any, schema_editor: Any) -> None:
    ApiKey = apps.get_model("keys", "ApiKey")
    AuditEvent = apps.get_model("groups", "AuditEvent")
    taken = set(ApiKey.objects.values_list("prefix", flat=True))
    for key in ApiKey.objects.filter(registered=True).order_by("created_at", "id"):
        old = key.prefix
        new = _new_prefix(old, taken)
        taken.add(new)
        ApiKey.objects.filter(pk=key.pk).update(prefix=new)
        events = AuditEvent.objects.filter(workspace_id=key.workspace_id)
        own = events.filter(object_id=key.pk)
        revocations = events.filter(after__has_key="revoked_key_prefixes")
        for event in [*own, *revocations]:
            AuditEvent.objects.filter(pk=event.pk).update(
                before=_replace(event.before, old, new), after=_replace(event.after, old, new)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0001_initial"),
        ("groups", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
