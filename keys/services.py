"""Writes of keys: mint, register and revoke management and federated keys."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from gateway_project.kernel.compiled import CompiledInsert, CompiledRead
from gateway_project.kernel.errors import NotFound, ValidationFailed, item_errors
from gateway_project.kernel.invalidation import config_changed
from gateway_project.kernel.pagination import BATCH_MAX
from groups.models import AuditEvent, Group, GroupModel, Workspace
from groups.selectors import group_get
from groups.services.audit import audit_event, audit_record, audit_records
from keys.hashing import (
    FEDERATED_PREFIX,
    MANAGEMENT_PREFIX,
    PREFIX_LENGTH,
    REGISTERED_PREFIX,
    REGISTERED_PREFIX_MIN_LENGTH,
    key_hash,
    mint,
)
from keys.models import ApiKey, KeyScope, ManagementKey

K = TypeVar("K", ApiKey, ManagementKey)
SCHEDULED_ACTOR = "system:scheduled-revoke"
MINT_ATTEMPTS = 5
REGISTERED_MIN_LENGTH = 32
REGISTERED_MAX_LENGTH = 128
REGISTERED_MIN_ENTROPY = 3.0
REGISTERED_SECRET_MIN_LENGTH = 16
NAME_MAX_LENGTH = 255
RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _name_check(name: Any) -> str:
    if not isinstance(name, str) or len(name) > NAME_MAX_LENGTH:
        raise ValidationFailed(
            f"name must be a string of at most {NAME_MAX_LENGTH} characters.",
            code="invalid_name",
            param="name",
        )
    return name


def expires_at_check(value: Any, *, now: datetime | None = None) -> datetime | None:
    """An optional expiry: an RFC 3339 timestamp (or an aware datetime) in the future."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else _rfc3339(value)
    if moment is None or moment.tzinfo is None:
        raise ValidationFailed(
            "expires_at must be an RFC 3339 timestamp with an offset, e.g. 2027-01-01T00:00:00Z.",
            code="invalid_expires_at",
            param="expires_at",
        )
    try:
        moment = moment.astimezone(UTC)  # stored in UTC: any RFC 3339 offset is accepted
    except OverflowError:
        moment = None
    if moment is None:
        raise ValidationFailed(
            "expires_at is out of range.", code="invalid_expires_at", param="expires_at"
        )
    if moment <= (now or timezone.now()):
        raise ValidationFailed(
            "expires_at must be in the future.", code="expires_at_past", param="expires_at"
        )
    return moment


def _rfc3339(value: Any) -> datetime | None:
    if not isinstance(value, str) or not RFC3339.match(value):
        return None
    # Python reads at most 6 fraction digits; RFC 3339 allows more (nanoseconds).
    head, dot, rest = value.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        value = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


def _prefix_read(model: type[ApiKey] | type[ManagementKey]) -> CompiledRead[Any]:
    return CompiledRead(
        lambda prefix: model.objects.filter(prefix=prefix).order_by().values_list("pk")[:1]
    )


_PREFIX_HELD = {ApiKey: _prefix_read(ApiKey), ManagementKey: _prefix_read(ManagementKey)}
_API_KEY_INSERT = CompiledInsert(ApiKey)


def _insert_minted(build: Callable[[str, str], K], kind_prefix: str) -> tuple[K, str]:
    """Save a freshly minted key, minting again on the (astronomically rare) prefix collision.

    The prefix is looked up before the insert rather than the insert being retried in a savepoint
    (two round trips more a mint): two mints drawing one fresh prefix at the same instant fail
    one of them, never store both."""
    for _ in range(MINT_ATTEMPTS):
        plaintext, prefix = mint(kind_prefix)
        row = build(plaintext, prefix)
        if _PREFIX_HELD[type(row)].rows(prefix=prefix):
            continue
        if isinstance(row, ApiKey):
            _API_KEY_INSERT.insert([row])
        else:  # a management key's save clears the verified-key cache (a post_save receiver)
            row.save(force_insert=True)
        return row, plaintext
    raise RuntimeError("could not mint a unique key prefix")


def _key_summary(key: ApiKey | ManagementKey) -> dict[str, Any]:
    summary: dict[str, Any] = {"prefix": key.prefix, "name": key.name}
    if isinstance(key, ApiKey):
        summary.update(group_id=key.group_id, slugs=key.slugs, registered=key.registered)
        if key.expires_at is not None:
            summary["expires_at"] = key.expires_at.isoformat()
    else:
        summary["scope"] = key.scope
    return summary


def _audit_event(
    *, actor: str, action: str, key: ApiKey | ManagementKey, created: bool
) -> AuditEvent:
    after = _key_summary(key)
    before = None if created else dict(after)
    if not created:
        after["revoked_at"] = key.revoked_at.isoformat() if key.revoked_at else None
    return audit_event(
        actor=actor,
        action=action,
        obj_type="api_key" if isinstance(key, ApiKey) else "management_key",
        obj_id=key.id,
        workspace_id=key.workspace_id,
        before=before,
        after=after,
    )


def _audit(*, actor: str, action: str, key: ApiKey | ManagementKey, created: bool) -> None:
    audit_records([_audit_event(actor=actor, action=action, key=key, created=created)])


@transaction.atomic
def management_key_create(
    *, workspace: Workspace, actor: str, scope: str = KeyScope.MANAGE, name: str = ""
) -> tuple[ManagementKey, str]:
    """Mint a management key; the plaintext is returned once and never stored."""
    if scope not in KeyScope.values:
        raise ValidationFailed("scope must be MANAGE or VIEW.", code="invalid_scope", param="scope")
    name = _name_check(name)
    key, plaintext = _insert_minted(
        lambda plain, prefix: ManagementKey(
            workspace=workspace, prefix=prefix, key_hash=key_hash(plain), name=name, scope=scope
        ),
        MANAGEMENT_PREFIX,
    )
    _audit(actor=actor, action="management_key.create", key=key, created=True)
    return key, plaintext


def _live_for_update(queryset: models.QuerySet[K], **filters: Any) -> K:
    key = queryset.select_for_update().filter(revoked_at__isnull=True, **filters).first()
    if key is None:
        raise NotFound("No such key.", code="key_not_found")
    return key


def _revoke(key: K, *, actor: str, action: str) -> K:
    key.revoked_at, key.revoke_at = timezone.now(), None
    key.save(update_fields=["revoked_at", "revoke_at"])
    _audit(actor=actor, action=action, key=key, created=False)
    config_changed(workspace_id=key.workspace_id)
    return key


@transaction.atomic
def management_key_revoke(*, workspace: Workspace, prefix: str, actor: str) -> ManagementKey:
    """Revoke a live management key of the workspace, irreversibly."""
    key = _live_for_update(ManagementKey.objects.all(), workspace=workspace, prefix=prefix)
    return _revoke(key, actor=actor, action="management_key.revoke")


def _live_group_check(*, workspace: Workspace, group: Group) -> None:
    if group.workspace_id != workspace.id or group.deleted_at is not None:
        raise NotFound("No such group.", code="group_not_found")


def _slugs_check(*, group: Group, slugs: Iterable[str] | None) -> list[str] | None:
    """A legacy user's key subset: unique slugs, all within the user's own models."""
    if slugs is None:
        return None
    if not group.is_legacy_user:
        raise ValidationFailed(
            "Only a legacy user's keys may be limited to a subset of models; a group key uses "
            "its group's models.",
            code="slugs_not_allowed",
            param="models",
        )
    if isinstance(slugs, str) or not all(isinstance(s, str) for s in slugs):
        raise ValidationFailed(
            "models must be a list of slugs.", code="invalid_models", param="models"
        )
    wanted = list(dict.fromkeys(slugs))
    allowed = set(GroupModel.objects.filter(group=group).values_list("slug", flat=True))
    outside = [slug for slug in wanted if slug not in allowed]
    if outside:
        raise ValidationFailed(
            f"The key may only call the user's models; {outside[0]!r} is not one of them.",
            code="slugs_not_allowed",
            param="models",
        )
    return wanted


@transaction.atomic
def api_key_create(
    *,
    workspace: Workspace,
    group: Group,
    actor: str,
    name: str = "",
    slugs: Iterable[str] | None = None,
    expires_at: Any = None,
) -> tuple[ApiKey, str]:
    """Mint a federated key for a live group, optionally expiring; the plaintext is returned once
    and never stored."""
    _live_group_check(workspace=workspace, group=group)
    name = _name_check(name)
    subset = _slugs_check(group=group, slugs=slugs)
    expiry = expires_at_check(expires_at)
    key, plaintext = _insert_minted(
        lambda plain, prefix: ApiKey(
            workspace=workspace,
            group=group,
            prefix=prefix,
            key_hash=key_hash(plain),
            name=name,
            slugs=subset,
            expires_at=expiry,
        ),
        FEDERATED_PREFIX,
    )
    _audit(actor=actor, action="api_key.create", key=key, created=True)
    return key, plaintext


def _groups_of_batch(*, workspace: Workspace, group_ids: list[Any]) -> dict[str, Group]:
    wanted = {group_id for group_id in group_ids if isinstance(group_id, str)}
    live = Group.objects.filter(
        workspace=workspace, pk__in=wanted, deleted_at__isnull=True, is_legacy_user=False
    )
    return {group.id: group for group in live}


def _batch_key_build(
    *, workspace: Workspace, groups: dict[str, Group], item: Mapping[str, Any]
) -> ApiKey:
    group = groups.get(item.get("group_id"))  # type: ignore[arg-type]
    if group is None:
        # The same answer for a missing, deleted or another workspace's group.
        raise ValidationFailed(
            f"No live group {item.get('group_id')!r} in this workspace.",
            code="group_not_found",
            param="group_id",
        )
    return ApiKey(
        workspace=workspace,
        group=group,
        name=_name_check(item.get("name", "")),
        expires_at=expires_at_check(item.get("expires_at")),
    )


@transaction.atomic
def api_key_create_many(
    *, workspace: Workspace, actor: str, items: Sequence[Mapping[str, Any]]
) -> list[tuple[ApiKey, str]]:
    """Mint keys for 1..1,000 live groups of the workspace (items: group_id, name, expires_at),
    all or none; each plaintext is returned once and never stored."""
    if not 1 <= len(items) <= BATCH_MAX:
        raise ValidationFailed(
            f"keys must be a list of 1..{BATCH_MAX} items", code="invalid_batch", param="keys"
        )
    groups = _groups_of_batch(workspace=workspace, group_ids=[i.get("group_id") for i in items])
    rows = []
    for index, item in enumerate(items):
        with item_errors(f"keys[{index}]"):
            rows.append(_batch_key_build(workspace=workspace, groups=groups, item=item))
    plaintexts = _insert_minted_many(rows)
    audit_records(
        _audit_event(actor=actor, action="api_key.create", key=row, created=True) for row in rows
    )
    return list(zip(rows, plaintexts, strict=True))


def _insert_minted_many(rows: list[ApiKey]) -> list[str]:
    """Give each row a freshly minted key and insert them all, minting the whole batch again on
    the (astronomically rare) prefix collision; the plaintexts, in order."""
    for _ in range(MINT_ATTEMPTS):
        plaintexts = []
        for row in rows:
            plaintext, row.prefix = mint(FEDERATED_PREFIX)
            row.key_hash = key_hash(plaintext)
            plaintexts.append(plaintext)
        try:
            with transaction.atomic():
                ApiKey.objects.bulk_create(rows)
            return plaintexts
        except IntegrityError:
            prefixes = [row.prefix for row in rows]
            if not ApiKey.objects.filter(prefix__in=prefixes).exists():
                raise
    raise RuntimeError("could not mint unique key prefixes")


def shannon_entropy(text: str) -> float:
    """Bits per character of the text's own character distribution."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _invalid_key(message: str, code: str = "invalid_key_format") -> ValidationFailed:
    return ValidationFailed(message, code=code, param="key")


def _registered_key_check(key: Any) -> tuple[str, str]:
    """The key and its prefix, if it is a well-formed, strong `prefix.secret`."""
    if not isinstance(key, str):
        raise _invalid_key("key must be a string.", "invalid_key")
    if len(key) < REGISTERED_MIN_LENGTH:
        raise _invalid_key(
            f"key must be at least {REGISTERED_MIN_LENGTH} characters.", "key_too_short"
        )
    if len(key) > REGISTERED_MAX_LENGTH:
        raise _invalid_key(
            f"key must be at most {REGISTERED_MAX_LENGTH} characters.", "key_too_long"
        )
    # Keys travel in an Authorization header: printable ASCII without spaces only.
    if not all("!" <= ch <= "~" for ch in key) or key.startswith(MANAGEMENT_PREFIX):
        raise _invalid_key(
            "key must be printable ASCII without spaces and must not look like a management key.",
            "invalid_key",
        )
    prefix, dot, secret = key.partition(".")
    if not dot or not REGISTERED_PREFIX.fullmatch(prefix):
        raise _invalid_key(
            "key must be 'prefix.secret': a prefix of "
            f"{REGISTERED_PREFIX_MIN_LENGTH}..{PREFIX_LENGTH} letters, digits, '_' or '-', a dot, "
            "then the secret."
        )
    if len(secret) < REGISTERED_SECRET_MIN_LENGTH:
        raise _invalid_key(
            f"The secret (after the first dot) must be at least {REGISTERED_SECRET_MIN_LENGTH} "
            "characters."
        )
    # Only the secret is secret: the prefix is shown in listings, logs and usage events.
    if shannon_entropy(secret) < REGISTERED_MIN_ENTROPY:
        raise _invalid_key(
            f"The secret (after the first dot) must have at least {REGISTERED_MIN_ENTROPY} bits of "
            "entropy per character.",
            "key_low_entropy",
        )
    return key, prefix


def _prefix_taken(prefix: str) -> ValidationFailed:
    return _invalid_key(f"A key with the prefix {prefix!r} already exists.", "key_prefix_taken")


@transaction.atomic
def api_key_register(
    *,
    workspace: Workspace,
    group: Group,
    actor: str,
    key: str,
    name: str = "",
    expires_at: Any = None,
) -> ApiKey:
    """Store the hash of a workspace-generated key (the caller verifies the body signature)."""
    _live_group_check(workspace=workspace, group=group)
    plaintext, prefix = _registered_key_check(key)
    name = _name_check(name)
    expiry = expires_at_check(expires_at)
    if ApiKey.objects.filter(prefix=prefix).exists():
        raise _prefix_taken(prefix)
    row = ApiKey(
        workspace=workspace,
        group=group,
        prefix=prefix,
        key_hash=key_hash(plaintext),
        name=name,
        registered=True,
        expires_at=expiry,
    )
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError as exc:
        raise _prefix_taken(prefix) from exc
    _audit(actor=actor, action="api_key.register", key=row, created=True)
    return row


@transaction.atomic
def api_key_revoke(
    *, workspace: Workspace, prefix: str, actor: str, group: Group | None = None
) -> ApiKey:
    """Revoke a live federated key of the workspace (and of `group` when given), irreversibly."""
    filters: dict[str, Any] = {"workspace": workspace, "prefix": prefix}
    if group is not None:
        filters["group"] = group
    key = _live_for_update(ApiKey.objects.all(), **filters)
    return _revoke(key, actor=actor, action="api_key.revoke")


@transaction.atomic
def owned_key_revoke(
    *, workspace: Workspace, owner_id: str, legacy: bool, prefix: str, actor: str
) -> ApiKey:
    """Revoke a live key of the live group (or legacy user) `owner_id` of the workspace: the key
    and its owner are checked in the one locked read; a miss says which is missing."""
    key = (
        ApiKey.objects.select_for_update(of=("self",))
        .filter(
            workspace=workspace,
            prefix=prefix,
            revoked_at__isnull=True,
            group_id=owner_id,
            group__deleted_at__isnull=True,
            group__is_legacy_user=legacy,
        )
        .first()
    )
    if key is None:
        group_get(workspace=workspace, group_id=owner_id, legacy=legacy)  # NotFound of the owner
        raise NotFound("No such key.", code="key_not_found")
    return _revoke(key, actor=actor, action="api_key.revoke")


def group_keys_revoke(*, group_ids: Collection[str], at: datetime) -> list[str]:
    """Revoke the live keys of deleted groups as of `at`; their prefixes, sorted (groups audits)."""
    live = ApiKey.objects.filter(group_id__in=group_ids, revoked_at__isnull=True)
    revoked = sorted(live.values_list("prefix", flat=True))
    live.update(revoked_at=at)
    return revoked


def api_keys_last_used_record(*, used: dict[str, datetime]) -> int:
    """Move federated keys' `last_used_at` forward to the noted times (never back); how many."""
    moved = 0
    for prefix, at in sorted(used.items()):
        stale = models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=at)
        moved += ApiKey.objects.filter(stale, prefix=prefix).update(last_used_at=at)
    return moved


def key_slugs_rename(*, workspace_id: str, old_slug: str, new_slug: str) -> None:
    """Follow an endpoint rename in the slug subsets of the workspace's legacy user keys."""
    for key in ApiKey.objects.filter(workspace_id=workspace_id, slugs__isnull=False):
        slugs: list[str] = key.slugs or []
        if old_slug in slugs:
            key.slugs = [new_slug if slug == old_slug else slug for slug in slugs]
            key.save(update_fields=["slugs"])


def _rotation_check(*, old: ApiKey | ManagementKey) -> None:
    if isinstance(old, ApiKey) and old.registered:
        raise ValidationFailed(
            "A registered key is generated by its workspace: register its replacement, then "
            "revoke or schedule the revoke of this one.",
            code="registered_key_rotation",
            param="key",
        )


def _rotate(
    *, old: K, replacement: tuple[K, str], actor: str, revoke_at: datetime | None, now: datetime
) -> tuple[K, str]:
    """Revoke `old` now (no `revoke_at`, or one already past) or schedule it; audit the pair."""
    new, plaintext = replacement
    kind = "api_key" if isinstance(old, ApiKey) else "management_key"
    if revoke_at is None or revoke_at <= now:
        _revoke(old, actor=actor, action=f"{kind}.revoke")
    else:
        old.revoke_at = revoke_at
        old.save(update_fields=["revoke_at"])
    audit_record(
        actor=actor,
        action=f"{kind}.rotate",
        obj_type=kind,
        obj_id=old.id,
        workspace_id=old.workspace_id,
        before={"prefix": old.prefix},
        after={
            "replacement_prefix": new.prefix,
            "replacement_id": new.id,
            "revoked_at": old.revoked_at.isoformat() if old.revoked_at else None,
            "revoke_at": old.revoke_at.isoformat() if old.revoke_at else None,
        },
    )
    return new, plaintext


@transaction.atomic
def api_key_rotate(
    *, workspace: Workspace, prefix: str, actor: str, revoke_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Mint a replacement of a live federated key (same group, name and models; plaintext returned
    once) and revoke the old one now, or at `revoke_at` so its users can switch first."""
    now = timezone.now()
    old = _live_for_update(
        ApiKey.objects.select_related("group"), workspace=workspace, prefix=prefix
    )
    _rotation_check(old=old)
    replacement = api_key_create(
        workspace=workspace, group=old.group, actor=actor, name=old.name, slugs=old.slugs
    )
    return _rotate(old=old, replacement=replacement, actor=actor, revoke_at=revoke_at, now=now)


@transaction.atomic
def management_key_rotate(
    *, workspace: Workspace, prefix: str, actor: str, revoke_at: datetime | None = None
) -> tuple[ManagementKey, str]:
    """Mint a replacement of a live management key (same scope and name) and revoke the old one
    now, or at `revoke_at`."""
    now = timezone.now()
    old = _live_for_update(ManagementKey.objects.all(), workspace=workspace, prefix=prefix)
    _rotation_check(old=old)
    replacement = management_key_create(
        workspace=workspace, actor=actor, scope=old.scope, name=old.name
    )
    return _rotate(old=old, replacement=replacement, actor=actor, revoke_at=revoke_at, now=now)


def scheduled_revokes_run(*, now: datetime) -> list[str]:
    """Revoke every live key whose scheduled revoke is due; their prefixes."""
    return [
        *_scheduled_revoke(ApiKey.objects.all(), action="api_key.revoke", now=now),
        *_scheduled_revoke(ManagementKey.objects.all(), action="management_key.revoke", now=now),
    ]


def _scheduled_revoke(keys: models.QuerySet[K], *, action: str, now: datetime) -> list[str]:
    done = []
    due = keys.filter(revoked_at__isnull=True, revoke_at__lte=now)
    for pk in list(due.values_list("pk", flat=True)):
        with transaction.atomic():
            key = due.select_for_update().filter(pk=pk).first()
            if key is not None:  # revoked by staff meanwhile, or rescheduled
                _revoke(key, actor=SCHEDULED_ACTOR, action=action)
                done.append(key.prefix)
    return done
