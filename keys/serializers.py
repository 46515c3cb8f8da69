"""Wire shapes of federated API keys and legacy users' keys."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from gateway_project.kernel.apikit import TimestampField, batch_of, timestamp_wire
from groups import selectors as group_selectors
from groups.models import Group
from keys.models import ApiKey


@extend_schema_field(OpenApiTypes.DATETIME)
class ExpiresAtField(serializers.CharField):
    """An RFC 3339 timestamp in the future, checked by keys.services; null or absent: never."""


def _expires_at_input() -> ExpiresAtField:
    return ExpiresAtField(
        required=False,
        allow_null=True,
        default=None,
        help_text="RFC 3339, in the future: the key stops working at this instant.",
    )


class KeyMintSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=255, allow_blank=True, required=False, default="")
    expires_at = _expires_at_input()


class KeyBatchItemSerializer(KeyMintSerializer):
    group_id = serializers.CharField(max_length=40, help_text="A live group of the workspace")


class KeyBatchMintSerializer(serializers.Serializer[Any]):
    keys = batch_of(KeyBatchItemSerializer(), help_text="1..1,000 keys to mint")


class UserKeyMintSerializer(KeyMintSerializer):
    models = serializers.ListField(
        child=serializers.CharField(max_length=201),
        required=False,
        allow_null=True,
        default=None,
        help_text="The subset of the user's slugs this key may call (default: all of them).",
    )


class KeyRegisterSerializer(serializers.Serializer[Any]):
    key = serializers.CharField(trim_whitespace=False, max_length=1024)
    name = serializers.CharField(max_length=255, allow_blank=True, required=False, default="")
    expires_at = _expires_at_input()


class ApiKeyMintedSerializer(serializers.Serializer[Any]):
    api_key = serializers.CharField(help_text="Shown once; only a hash is stored.")
    prefix = serializers.CharField()
    name = serializers.CharField(allow_blank=True)
    expires_at = TimestampField(required=False, help_text="Present on expiring keys only")


class ApiKeyBatchMintedSerializer(ApiKeyMintedSerializer):
    group_id = serializers.CharField()


class ApiKeyBatchSerializer(serializers.Serializer[Any]):
    items = ApiKeyBatchMintedSerializer(many=True, help_text="The new keys, in the order asked")


class UserApiKeyMintedSerializer(ApiKeyMintedSerializer):
    models = group_selectors.ModelConfigOutSerializer(many=True)


class ApiKeyV1Serializer(serializers.Serializer[Any]):
    prefix = serializers.CharField()
    name = serializers.CharField(allow_blank=True)
    expires_at = TimestampField(required=False, help_text="Present on expiring keys only")


class ApiKeyRevokedSerializer(serializers.Serializer[Any]):
    prefix = serializers.CharField()


class OkSerializer(serializers.Serializer[Any]):
    ok = serializers.BooleanField()


# Built straight from the row, in the field order of the serializers above (which stay the schema).


def api_key_wire(key: ApiKey) -> dict[str, Any]:
    """`{prefix, name}` of a key (never its secret), and `expires_at` when it expires."""
    fields: dict[str, Any] = {"prefix": key.prefix, "name": key.name}
    if key.expires_at is not None:
        fields["expires_at"] = timestamp_wire(key.expires_at)
    return fields


def api_key_minted_wire(key: ApiKey, plaintext: str) -> dict[str, Any]:
    """The one response that carries the plaintext key."""
    return {"api_key": plaintext, **api_key_wire(key)}


def api_keys_minted_wire(minted: list[tuple[ApiKey, str]]) -> list[dict[str, Any]]:
    """The keys of a batch mint, each with its group and its plaintext (shown this once)."""
    return [{**api_key_minted_wire(key, plain), "group_id": key.group_id} for key, plain in minted]


def user_api_key_minted_wire(key: ApiKey, plaintext: str, *, user: Group) -> dict[str, Any]:
    """A user's new key with the model configs it may call."""
    models = group_selectors.group_models(group=user)
    if key.slugs is not None:
        models = [model for model in models if model["slug"] in key.slugs]
    return {**api_key_minted_wire(key, plaintext), "models": models}
