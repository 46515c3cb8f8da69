"""The third step of an inference request: its token (and spend) reservation, admitted by every
limit of its group chain or refused with a 429, before anything goes upstream."""

from __future__ import annotations

from gateway_project.kernel.hot_settings import hot
from gateway_project.kernel.meanwhile import meanwhile
from routing.activity import Rejection, rejection_note
from routing.admission import Admission, limits_admit
from routing.failover import upstream_draft
from routing.inference_request import InferenceRequest
from routing.metrics import limit_rejections
from routing.pricing import reservation_micro
from routing.usage import usage_reserve


async def request_admit(request: InferenceRequest) -> Admission | None:
    """The request's admission (None: no limit applies); raises the 429 of a refusal.

    An admitted request's body gets the completion caps it was reserved for, so the upstream
    cannot produce more."""
    limits = request.entry.limits.get(request.slug)
    if not limits:
        return None
    budget = usage_reserve(
        kind=request.kind,
        body=request.body,
        body_bytes=request.body_bytes,
        default_max_tokens=hot.GATEWAY_DEFAULT_MAX_TOKENS,
        ceiling=hot.GATEWAY_MAX_TOKENS_CEILING,
        media_tokens=hot.GATEWAY_MEDIA_PART_TOKENS,
    )
    spend = None
    if request.pricing is not None:
        spend = reservation_micro(
            request.pricing,
            prompt_tokens=budget.prompt,
            completion_tokens=budget.tokens - budget.prompt,
        )
    meanwhile(_ahead, request, budget.fields)
    admission = await limits_admit(
        limits=limits, reserve_tokens=budget.tokens, slug=request.slug, reserve_spend=spend
    )
    if not admission.allowed:
        _refusal_note(request, admission)
        raise admission.error()
    request.body.update(budget.fields)
    return admission


def _ahead(request: InferenceRequest, caps: dict[str, int]) -> None:
    """What an admitted request needs next, built while its admission waits for Redis: its
    upstream call's draft and its usage event's key."""
    upstream_draft(request, caps)
    request.event_key  # noqa: B018 - drawn now rather than after the answer


def _refusal_note(request: InferenceRequest, admission: Admission) -> None:
    limit_rejections.labels(admission.limit_type, admission.limit_unit, request.slug).inc()
    rejection_note(
        Rejection(
            group_id=request.entry.group_id,
            key_prefix=request.entry.key_prefix,
            slug=request.slug,
            limit_type=admission.limit_type,
            limit_unit=admission.limit_unit,
            threshold=admission.limit_threshold,
            limit_group=admission.limit_group,
            reason=admission.message or "",
        )
    )
