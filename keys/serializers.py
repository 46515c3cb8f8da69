"""Wire shapes of federated API keys and legacy users' keys."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from groups import selectors as group_selectors
from groups.models import Group
from keys.models import ApiKey


class KeyMintSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=255, allow_blank=True, required=False, default="")


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


class ApiKeyMintedSerializer(serializers.Serializer[Any]):
    api_key = serializers.CharField(help_text="Shown once; only a hash is stored.")
    prefix = serializers.CharField()
    name = serializers.CharField(allow_blank=True)


class UserApiKeyMintedSerializer(ApiKeyMintedSerializer):
    models = group_selectors.ModelConfigOutSerializer(many=True)


class ApiKeyV1Serializer(serializers.Serializer[Any]):
    prefix = serializers.CharField()
    name = serializers.CharField(allow_blank=True)


class ApiKeyRevokedSerializer(serializers.Serializer[Any]):
    prefix = serializers.CharField()


class OkSerializer(serializers.Serializer[Any]):
    ok = serializers.BooleanField()


def api_key_wire(key: ApiKey) -> dict[str, Any]:
    """`{prefix, name}` of a key (never its secret)."""
    return ApiKeyV1Serializer(key).data


def api_key_minted_wire(key: ApiKey, plaintext: str) -> dict[str, Any]:
    """The one response that carries the plaintext key."""
    return ApiKeyMintedSerializer(
        {"api_key": plaintext, "prefix": key.prefix, "name": key.name}
    ).data


def user_api_key_minted_wire(key: ApiKey, plaintext: str, *, user: Group) -> dict[str, Any]:
    """A user's new key with the model configs it may call."""
    models = group_selectors.group_models(group=user)
    if key.slugs is not None:
        models = [model for model in models if model["slug"] in key.slugs]
    return UserApiKeyMintedSerializer(
        {"api_key": plaintext, "prefix": key.prefix, "name": key.name, "models": models}
    ).data
