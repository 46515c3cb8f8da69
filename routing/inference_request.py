"""The second step of an inference request: its body read, parsed and checked, its model resolved
to an endpoint the key may call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billing.services.usage import usage_event_key
from gateway_project.kernel.errors import NotFound, ValidationFailed
from routing.authcache import KeyEntry, route_lookup
from routing.client_connection import Receive
from routing.models import Endpoint
from routing.pricing import Pricing
from routing.request_read import (
    request_body_parse,
    request_body_read,
    request_metadata,
)
from routing.targets import ResolvedEndpoint

# Embeddings never stream: a `stream: true` there is answered (and billed) as one JSON body.
STREAMING_KINDS = frozenset({"chat", "completions", "responses"})
MAX_SLUG_LENGTH = Endpoint._meta.get_field("slug").max_length or 201


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One authenticated, parsed inference request, as the later steps need it."""

    request_id: str
    path: str
    kind: str  # chat, completions, embeddings, responses
    started: float  # time.perf_counter() when the request arrived
    entry: KeyEntry
    endpoint: ResolvedEndpoint
    body: dict[str, Any]
    body_bytes: int  # as the client sent it (prompt estimates count these)
    strict_json: bool  # False: a body only the standard library reads, written back by it
    headers: dict[str, str]
    metadata: dict[str, Any]
    stream: bool
    # Its usage event's idempotency key, drawn once, on first use (while its admission waits,
    # or by its note or record): the worker's event and a reaper's carry it.
    _event_key: str = field(default="", init=False, repr=False, compare=False)
    # Its upstream call drafted ahead of time (routing/failover.py), None until then.
    _draft: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def event_key(self) -> str:
        """Its usage event's idempotency key (drawn once)."""
        if not self._event_key:
            object.__setattr__(self, "_event_key", usage_event_key())  # a frozen field's cache
        return self._event_key

    @property
    def draft(self) -> Any:
        """Its UpstreamDraft (routing/failover.py), None when none was built."""
        return self._draft

    def draft_set(self, draft: Any) -> None:
        """Keep the UpstreamDraft built for it."""
        object.__setattr__(self, "_draft", draft)  # a frozen field's cache

    @property
    def slug(self) -> str:
        """The endpoint's slug (only a resolved slug becomes a metric label or a log field)."""
        return self.endpoint.slug

    @property
    def pricing(self) -> Pricing | None:
        """The endpoint's prices now: its event and SPEND settle use them."""
        return self.endpoint.pricing


async def request_parse(
    *,
    request_id: str,
    path: str,
    kind: str,
    started: float,
    entry: KeyEntry,
    headers: dict[str, str],
    receive: Receive,
) -> InferenceRequest:
    """Read and check the body; 413, 415, 400 or 404 (`model_not_found`) when it cannot go on."""
    raw = await request_body_read(headers, receive)
    body, strict = request_body_parse(headers, raw)
    endpoint = await endpoint_for(entry, _model_of(body))
    if kind == "responses":
        _responses_check(body)
    return InferenceRequest(
        request_id=request_id,
        path=path,
        kind=kind,
        started=started,
        entry=entry,
        endpoint=endpoint,
        body=body,
        body_bytes=len(raw),
        strict_json=strict,
        headers=headers,
        metadata=request_metadata(headers),
        stream=_streaming(body) and kind in STREAMING_KINDS,
    )


async def endpoint_for(entry: KeyEntry, slug: str) -> ResolvedEndpoint:
    """The live endpoint `slug` names, if the key may call it; 404 otherwise."""
    endpoint = await route_lookup(slug=slug) if slug in entry.allowed_slugs else None
    if endpoint is None or endpoint.workspace_id != entry.workspace_id:
        raise NotFound(
            f"The model `{slug}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return endpoint


def _responses_check(body: dict[str, Any]) -> None:
    """A background response is generated after the answer, where no usage can be read: refused
    rather than let it run unbilled."""
    if body.get("background") not in (None, False):
        raise ValidationFailed(
            "`background` responses are not supported through the gateway.",
            code="invalid_parameter",
            param="background",
        )


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValidationFailed("`model` is required.", code="missing_model", param="model")
    if len(model) > MAX_SLUG_LENGTH:
        raise ValidationFailed(
            f"`model` is a slug of at most {MAX_SLUG_LENGTH} characters.",
            code="invalid_model",
            param="model",
        )
    return model


def _streaming(body: dict[str, Any]) -> bool:
    """Only JSON `true` streams; `false`, `null` or no `stream` do not; anything else is a 400."""
    stream = body.get("stream")
    if stream is None or isinstance(stream, bool):
        return stream is True
    raise ValidationFailed(
        "`stream` must be true or false.", code="invalid_parameter", param="stream"
    )
