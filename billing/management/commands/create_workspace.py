"""`manage.py create_workspace`: a tenant, its org prefix and first management key in one step."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from billing.services.webhooks import webhook_endpoint_create
from gateway_project.kernel.errors import GatewayError
from groups.services import (
    org_prefix_register,
    workspace_create,
    workspace_set_upstream_allowlist,
)
from groups.services.audit import SYSTEM_ACTOR
from keys.models import KeyScope
from keys.services import management_key_create


class Command(BaseCommand):
    help = (
        "Create a workspace owning an org prefix, with a MANAGE key (printed once) and "
        "optionally a billing webhook endpoint (its signing secret printed once)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="Display name of the workspace.")
        parser.add_argument("--org-prefix", required=True, help="First slug segment, e.g. acme.")
        parser.add_argument("--onboarded", action="store_true", help="Allow API use at once.")
        parser.add_argument("--webhook-url", default=None, help="Billing webhook receiver URL.")
        parser.add_argument(
            "--upstream-allowlist",
            default=None,
            help="Comma-separated private hosts/CIDRs this workspace's targets and webhook may "
            "reach (default: GATEWAY_UPSTREAM_ALLOWLIST).",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = self._create(options)
        except GatewayError as exc:
            where = f" ({exc.param})" if exc.param else ""
            raise CommandError(f"{exc.code}{where}: {exc.message}") from exc
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        for label, value in result.items():
            self.stdout.write(f"{label}: {value}")
        self.stdout.write("The key and secret above are shown once; store them now.")

    @transaction.atomic
    def _create(self, options: dict[str, Any]) -> dict[str, str]:
        """Everything or nothing: a bad prefix or URL leaves no workspace behind."""
        workspace = workspace_create(
            name=options["name"], actor=SYSTEM_ACTOR, onboarded=options["onboarded"]
        )
        org_prefix_register(workspace=workspace, prefix=options["org_prefix"], actor=SYSTEM_ACTOR)
        if options["upstream_allowlist"] is not None:
            workspace = workspace_set_upstream_allowlist(
                workspace=workspace,
                entries=options["upstream_allowlist"].split(","),
                actor=SYSTEM_ACTOR,
            )
        _, plaintext = management_key_create(
            workspace=workspace, actor=SYSTEM_ACTOR, scope=KeyScope.MANAGE, name="created by CLI"
        )
        result = {"workspace_id": workspace.id, "management_key": plaintext}
        if options["webhook_url"]:
            endpoint, secret = webhook_endpoint_create(
                workspace=workspace, url=options["webhook_url"], actor=SYSTEM_ACTOR
            )
            result.update(webhook_endpoint_id=endpoint.id, webhook_secret=secret)
        return result
