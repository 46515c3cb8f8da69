"""Wire shapes of endpoints and of a group's usage."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from gateway_project.kernel.apikit import TimestampField
from groups.models import LimitType
from routing import selectors
from routing.models import Endpoint, Provider, Region, Strategy
from routing.strategy import FIRST_BYTE_TIMEOUT_MAX, routing_wire
from routing.targets import WEIGHT_MAX, WEIGHT_MIN


class TargetSerializer(serializers.Serializer[Any]):
    """One upstream; only its provider's fields are present."""

    provider = serializers.ChoiceField(choices=Provider.choices)
    model_id = serializers.CharField(required=False, help_text="BASETEN")
    environment_name = serializers.CharField(
        required=False, help_text="BASETEN (default production)"
    )
    base_url = serializers.CharField(required=False, help_text="OPENAI_COMPATIBLE")
    target_model = serializers.CharField(required=False, help_text="OPENAI_COMPATIBLE, OPENAI")
    secret_id = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="A workspace secret (BASETEN, OPENAI; optional for OPENAI_COMPATIBLE)",
    )
    weight = serializers.IntegerField(
        required=False,
        min_value=WEIGHT_MIN,
        max_value=WEIGHT_MAX,
        help_text="Share of requests under the WEIGHTED strategy (default 1)",
    )


class RoutingSerializer(serializers.Serializer[Any]):
    """How a request picks among the targets."""

    strategy = serializers.ChoiceField(
        choices=Strategy.choices,
        required=False,
        help_text="PRIORITY (default): in order; WEIGHTED: at random by weight",
    )
    first_byte_timeout = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=FIRST_BYTE_TIMEOUT_MAX,
        help_text="Seconds to wait for a target's first byte (null: the gateway's rule)",
    )


@extend_schema_field(RoutingSerializer)
class RoutingField(serializers.JSONField):
    """The `routing` object, checked by the routing services."""


@extend_schema_field(TargetSerializer(many=True))
class TargetsField(serializers.JSONField):
    """The `targets` list, checked per provider by the routing services."""


class PricingSerializer(serializers.Serializer[Any]):
    """Prices per million tokens: decimal strings >= 0 with at most 6 decimals."""

    currency = serializers.CharField(help_text="ISO 4217 code, e.g. USD")
    input_per_million = serializers.CharField(help_text='e.g. "0.50"')
    output_per_million = serializers.CharField(help_text='e.g. "1.50"')
    cached_input_per_million = serializers.CharField(
        required=False, help_text="Cached prompt tokens (default: input_per_million)"
    )


@extend_schema_field(PricingSerializer(allow_null=True))
class PricingField(serializers.JSONField):
    """The optional `pricing` object, checked by routing/pricing.py; null: unpriced."""


class EndpointCreateSerializer(serializers.Serializer[Any]):
    slug = serializers.CharField(max_length=201)
    targets = TargetsField()
    region = serializers.ChoiceField(choices=Region.choices, required=False)
    routing = RoutingField(required=False)
    pricing = PricingField(required=False, allow_null=True)


class EndpointUpdateSerializer(serializers.Serializer[Any]):
    slug = serializers.CharField(max_length=201, required=False)
    targets = TargetsField(required=False)
    routing = RoutingField(required=False)
    pricing = PricingField(required=False, allow_null=True)


class EndpointV1Serializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    slug = serializers.CharField()
    region = serializers.ChoiceField(choices=Region.choices)
    routing = RoutingSerializer()
    targets = TargetSerializer(many=True)
    pricing = PricingSerializer(required=False, help_text="Present on priced endpoints only")
    created_at = TimestampField()
    updated_at = TimestampField()


class EndpointDeletedSerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    slug = serializers.CharField()


class UsageStateSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=LimitType.choices)
    unit = serializers.ChoiceField(choices=["DAY", "MONTH"])
    threshold = serializers.IntegerField(help_text="SPEND: micro-units of the endpoint's currency")
    current_usage = serializers.IntegerField(allow_null=True)
    reset_at = TimestampField(allow_null=True)


class GroupUsageSerializer(serializers.Serializer[Any]):
    customer_id = serializers.CharField()
    usage = serializers.DictField(child=UsageStateSerializer(many=True))


def endpoint_wire(endpoint: Endpoint) -> dict[str, Any]:
    """EndpointV1 (targets from the prefetch cache when present; `pricing` only when priced)."""
    wire = {
        "id": endpoint.id,
        "slug": endpoint.slug,
        "region": endpoint.region,
        "routing": routing_wire(endpoint),
        "targets": selectors.endpoint_targets(endpoint=endpoint),
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }
    if endpoint.pricing is not None:
        wire["pricing"] = endpoint.pricing
    return EndpointV1Serializer(wire).data


def endpoint_deleted_wire(endpoint: Endpoint) -> dict[str, Any]:
    """The tombstone of a deleted endpoint."""
    return EndpointDeletedSerializer({"id": endpoint.id, "slug": endpoint.slug}).data
