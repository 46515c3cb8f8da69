"""`manage.py secrets_reencrypt`: every stored secret under the current GATEWAY_ENCRYPTION_KEY."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from billing.models import WebhookSecret
from gateway_project.kernel.encryption import Reencrypted, ciphertexts_reencrypt
from groups.models import Secret


class Command(BaseCommand):
    help = (
        "Re-encrypt provider secrets and webhook signing secrets stored under one of "
        "GATEWAY_ENCRYPTION_KEYS_PREVIOUS with the current GATEWAY_ENCRYPTION_KEY. "
        "All or nothing; running it again changes nothing."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        results = self._reencrypt()
        for label, result in results.items():
            self.stdout.write(
                f"{label}: {result.reencrypted} re-encrypted, {result.current} already current"
            )
        self.stdout.write("Every stored secret is under the current key.")

    @transaction.atomic
    def _reencrypt(self) -> dict[str, Reencrypted]:
        results = {
            "provider secrets": ciphertexts_reencrypt(rows=Secret.objects.all()),
            "webhook signing secrets": ciphertexts_reencrypt(rows=WebhookSecret.objects.all()),
        }
        broken = {label: r.undecryptable for label, r in results.items() if r.undecryptable}
        if broken:
            listed = "; ".join(f"{label}: {', '.join(ids)}" for label, ids in broken.items())
            raise CommandError(
                f"Nothing changed: no configured key decrypts these ({listed}). Add the key they "
                "were stored under to GATEWAY_ENCRYPTION_KEYS_PREVIOUS and run this again."
            )
        return results
