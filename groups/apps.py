from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from gateway_project.kernel.netguard import allowlist_parse


class GroupsConfig(AppConfig):
    name = "groups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Refuse to start with a GATEWAY_UPSTREAM_ALLOWLIST entry the SSRF guard would misread."""
        try:
            allowlist_parse(settings.GATEWAY_UPSTREAM_ALLOWLIST)
        except ValueError as exc:
            raise ImproperlyConfigured(f"GATEWAY_UPSTREAM_ALLOWLIST: {exc}") from exc
