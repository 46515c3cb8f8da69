"""Serializers of a group's `models` list and its limits, configured and effective.

They describe the shape for the schema; groups.limits validates it. Another app's wire shape that
carries a models list reaches `ModelConfigOutSerializer` through groups.selectors, next to the read
(`group_models`) whose items it describes.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from groups.limits import LIMIT_TYPES, RATE, TYPES_BY_KIND, UNITS_BY_KIND, USAGE

MAX_THRESHOLD = 2**63 - 1


class RateLimitSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=list(LIMIT_TYPES))
    unit = serializers.ChoiceField(choices=list(UNITS_BY_KIND[RATE]))
    threshold = serializers.IntegerField(min_value=0, max_value=MAX_THRESHOLD)


class UsageLimitSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=list(TYPES_BY_KIND[USAGE]))
    unit = serializers.ChoiceField(choices=list(UNITS_BY_KIND[USAGE]))
    threshold = serializers.IntegerField(
        min_value=0,
        max_value=MAX_THRESHOLD,
        help_text="SPEND: micro-units of the endpoint's currency (1 USD = 1000000), at most 2^53-1",
    )


class ModelConfigSerializer(serializers.Serializer[Any]):
    """A group's access to one slug with its limits."""

    slug = serializers.CharField(max_length=201)
    rate_limits = RateLimitSerializer(many=True, required=False)
    usage_limits = UsageLimitSerializer(many=True, required=False)


@extend_schema_field(ModelConfigSerializer(many=True))
class ModelsField(serializers.JSONField):
    """The `models` list, checked by the groups services (shape, set semantics, limits)."""


class EffectiveRateLimitSerializer(RateLimitSerializer):
    source_group = serializers.CharField()


class EffectiveUsageLimitSerializer(UsageLimitSerializer):
    source_group = serializers.CharField()


class EffectiveModelSerializer(serializers.Serializer[Any]):
    slug = serializers.CharField()
    rate_limits = EffectiveRateLimitSerializer(many=True)
    usage_limits = EffectiveUsageLimitSerializer(many=True)


class ModelConfigOutSerializer(serializers.Serializer[Any]):
    slug = serializers.CharField()
    rate_limits = RateLimitSerializer(many=True)
    usage_limits = UsageLimitSerializer(many=True)
