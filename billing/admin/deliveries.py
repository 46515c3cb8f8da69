"""Webhook deliveries in the admin and their attempt log: resend one, release one from
quarantine, or recover everything that failed since a time."""

from __future__ import annotations

import json
import time
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from billing.admin.staff import json_shown, milliseconds, request_actor
from billing.health import duration_words, worker_heartbeat_age
from billing.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from billing.services.quarantine import deliveries_release
from billing.services.webhooks import deliveries_recover, delivery_resend
from billing.tasks import delivery_attempt, delivery_enqueue
from gateway_project.kernel.admin_pages import ReadOnlyPageMixin
from gateway_project.kernel.admin_paging import WholeTermSearchMixin
from gateway_project.kernel.errors import GatewayError
from groups.models import Workspace

RECOVER_TEMPLATE = "admin/billing/recover_form.html"


class DeliveryAttemptInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration", "status_code", "error", "response_body")
    readonly_fields = fields

    @admin.display(description="duration")
    def duration(self, obj: DeliveryAttempt) -> str:
        return milliseconds(obj.duration_ms)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecoverForm(forms.Form):
    since = forms.DateTimeField(help_text="UTC, e.g. 2026-05-05 12:00:00 UTC")
    workspace = forms.ModelChoiceField(
        Workspace.objects.all(),
        required=False,
        help_text="All when empty",
        widget=AutocompleteSelect(WebhookEndpoint._meta.get_field("workspace"), admin.site),
    )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(WholeTermSearchMixin, ReadOnlyPageMixin, admin.ModelAdmin):  # type: ignore[type-arg]
    """Deliveries and their attempt log; resend one, or recover everything failed since T."""

    list_display = (
        "id",
        "endpoint",
        "status",
        "attempts",
        "event_count",
        "next_attempt_at",
        "last_status_code",
        "created_at",
        "delivered_at",
    )
    list_filter = ("status", "endpoint__workspace")
    search_fields = ("id__exact",)
    list_select_related = ("endpoint",)
    inlines = [DeliveryAttemptInline]
    actions = ["resend", "release", "recover_failed_since"]
    fields = (
        "id",
        "endpoint",
        "status",
        "attempts",
        "event_count",
        "next_attempt_at",
        "lease_until",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
        "body_json",
    )
    readonly_fields = fields

    search_help_text = "A delivery id, or the start of an endpoint's URL."

    def search_q(self, term: str) -> Q:
        urls = WebhookEndpoint.objects.filter(url__startswith=term).values_list("pk", flat=True)
        return super().search_q(term) | Q(endpoint_id__in=list(urls))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Body (frozen)")
    def body_json(self, obj: WebhookDelivery) -> str:
        try:
            return json_shown(json.loads(bytes(obj.body)))
        except (ValueError, RecursionError):
            return bytes(obj.body).decode("utf-8", errors="backslashreplace")

    @admin.action(
        description="Release from quarantine (one more attempt, same id and bytes)",
        permissions=("change",),
    )
    def release(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = deliveries_release(ids=ids, actor=request_actor(request))
        self.message_user(request, f"Released {count} quarantined delivery(ies).")

    @admin.action(
        description="Resend (one more attempt, same id and bytes)", permissions=("change",)
    )
    def resend(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        """Mark each for another attempt, hand it to a live worker, and say what happened."""
        for delivery in queryset.select_related("endpoint"):
            try:
                delivery_resend(delivery=delivery, actor=request_actor(request))
            except GatewayError as exc:
                self.message_user(request, f"{delivery.id}: {exc.message}", messages.ERROR)
                continue
            level, report = resend_report(delivery)
            self.message_user(request, f"{delivery.id}: {report}", level)

    @admin.action(
        description="Recover everything that failed since a time…", permissions=("change",)
    )
    def recover_failed_since(
        self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]
    ) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:billing_webhookdelivery_recover"))

    def get_urls(self) -> list[URLPattern]:
        recover = path(
            "recover/",
            self.admin_site.admin_view(self.recover_view),
            name="billing_webhookdelivery_recover",
        )
        return [recover, *super().get_urls()]

    def recover_view(self, request: HttpRequest) -> HttpResponse:
        """Ask for T, then queue every delivery that failed since T for one more attempt."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        form = RecoverForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            count = deliveries_recover(
                since=form.cleaned_data["since"],
                workspace=form.cleaned_data["workspace"],
                actor=request_actor(request),
            )
            self.message_user(request, f"Queued {count} failed delivery(ies) for another attempt.")
            return HttpResponseRedirect(reverse("admin:billing_webhookdelivery_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "title": "Recover failed deliveries",
        }
        return TemplateResponse(request, RECOVER_TEMPLATE, context)


def resend_report(delivery: WebhookDelivery) -> tuple[int, str]:
    """Enqueue a delivery marked for resend when a worker is alive, wait for its attempt, and
    describe the outcome (message level, text): never "queued" when nothing will send it."""
    eager = bool(delivery_attempt.app.conf.task_always_eager)
    age = worker_heartbeat_age()
    if not eager and (age is None or age > settings.GATEWAY_BILLING_HEARTBEAT_STALE_SECONDS):
        seen = "ever" if age is None else f"for {duration_words(age)}"
        return messages.ERROR, (
            f"NOT sent: no Celery worker has run a task {seen} (the worker is down). "
            "It is pending and goes out once a worker runs."
        )
    before = delivery.attempts
    try:
        queued = delivery_enqueue(delivery.pk)
    except Exception as exc:  # noqa: BLE001 - the broker's failure is the report
        return messages.ERROR, f"NOT sent: the broker refused it ({type(exc).__name__}: {exc})."
    after = _attempt_wait(delivery, before=before)
    if after is None:
        state = "was already queued" if not queued else "was queued to a live worker"
        wait = duration_words(settings.GATEWAY_ADMIN_RESEND_WAIT_SECONDS)
        return messages.WARNING, f"{state}, but no attempt finished within {wait}; still pending."
    return _outcome(after)


def _attempt_wait(delivery: WebhookDelivery, *, before: int) -> WebhookDelivery | None:
    """The delivery once an attempt after `before` is recorded, or None at the deadline."""
    deadline = time.monotonic() + float(settings.GATEWAY_ADMIN_RESEND_WAIT_SECONDS)
    while True:
        row = WebhookDelivery.objects.get(pk=delivery.pk)
        if row.attempts > before and row.lease_until is None:
            return row
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)  # a staff action waiting on a worker; nothing to subscribe to


def _outcome(row: WebhookDelivery) -> tuple[int, str]:
    code = f"HTTP {row.last_status_code}" if row.last_status_code else row.last_error or "error"
    if row.status == DeliveryStatus.DELIVERED:
        return messages.SUCCESS, f"delivered on attempt {row.attempts} ({code})."
    nxt = f"{row.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC" if row.next_attempt_at else "none"
    detail = f"{code}: {row.last_error}" if row.last_status_code and row.last_error else code
    return messages.WARNING, (
        f"attempt {row.attempts} failed ({detail}); now {row.status}, next attempt: {nxt}."
    )
