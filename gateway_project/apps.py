"""The composition root's app: wires what groups asks of the apps built on it (groups/ports.py)."""

from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin.apps import AdminConfig

from gateway_project.tracing import tracing_setup
from groups.ports import Ports, ports_wire


class GatewayConfig(AppConfig):
    """Listed last in INSTALLED_APPS, so every app it wires is loaded when ready() runs."""

    name = "gateway_project"

    def ready(self) -> None:
        """Give groups routing's live and priced endpoint slugs and keys' revoke and rename; start
        tracing if the environment asks for it (before Django builds its middleware chain)."""
        # Apps' services import their models, which Django allows only once the registry is ready.
        from keys.services import group_keys_revoke, key_slugs_rename
        from routing.selectors import endpoint_live_slugs, endpoint_priced_slugs

        ports_wire(
            Ports(
                live_endpoint_slugs=endpoint_live_slugs,
                group_keys_revoke=group_keys_revoke,
                key_slugs_rename=key_slugs_rename,
                priced_endpoint_slugs=endpoint_priced_slugs,
            )
        )
        tracing_setup()


class GatewayAdminConfig(AdminConfig):
    """django.contrib.admin with the product's site (gateway_project/admin_site.py)."""

    default_site = "gateway_project.admin_site.GatewayAdminSite"
