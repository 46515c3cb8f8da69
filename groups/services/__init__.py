"""Writes of the groups app: import them from here (`from groups.services import group_create`)."""

from groups.services.batch import CreatedGroup, group_create_many
from groups.services.hierarchy import (
    group_create,
    group_delete,
    group_models_rename_slug,
    group_snapshot,
    group_update,
)
from groups.services.hierarchy_rules import MAX_DEPTH
from groups.services.tenants import (
    custom_domain_add,
    custom_domain_delete,
    domain_host_check,
    org_prefix_delete,
    org_prefix_register,
    secret_create,
    secret_delete,
    secret_update,
    workspace_create,
    workspace_set_default_baseten_secret,
    workspace_set_onboarded,
    workspace_set_upstream_allowlist,
    workspace_snapshot,
    workspace_update,
)
from groups.services.users import user_delete, user_upsert

__all__ = [
    "MAX_DEPTH",
    "CreatedGroup",
    "custom_domain_add",
    "custom_domain_delete",
    "domain_host_check",
    "group_create",
    "group_create_many",
    "group_delete",
    "group_models_rename_slug",
    "group_snapshot",
    "group_update",
    "org_prefix_delete",
    "org_prefix_register",
    "secret_create",
    "secret_delete",
    "secret_update",
    "user_delete",
    "user_upsert",
    "workspace_create",
    "workspace_set_default_baseten_secret",
    "workspace_set_onboarded",
    "workspace_set_upstream_allowlist",
    "workspace_snapshot",
    "workspace_update",
]
