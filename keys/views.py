"""Management API for federated keys of groups and of legacy users."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.response import Response

from gateway_project.kernel.apikit import GatewayAPIView, api_schema, body_bytes, list_schema
from groups import selectors as group_selectors
from groups.models import Group
from keys import selectors, services
from keys.models import ApiKey
from keys.serializers import (
    ApiKeyBatchSerializer,
    ApiKeyMintedSerializer,
    ApiKeyRevokedSerializer,
    ApiKeyV1Serializer,
    KeyBatchItemSerializer,
    KeyBatchMintSerializer,
    KeyMintSerializer,
    KeyRegisterSerializer,
    OkSerializer,
    UserApiKeyMintedSerializer,
    UserKeyMintSerializer,
    api_key_minted_wire,
    api_key_wire,
    api_keys_minted_wire,
    user_api_key_minted_wire,
)
from keys.signatures import SIGNATURE_HEADER, registration_signature_verify

GROUP_KEYS = ["group api keys"]
USER_KEYS = ["user api keys (legacy)"]


class OwnedKeyView(GatewayAPIView):
    """Keys hang off a live group (or, on the legacy routes, a live user) of the workspace."""

    legacy = False

    def owner(self, owner_id: str) -> Group:
        return group_selectors.group_get(
            workspace=self.workspace, group_id=owner_id, legacy=self.legacy
        )

    def keys_page(self, owner_id: str) -> Response:
        keys = selectors.api_key_list(group=self.owner(owner_id))
        return self.page(keys, lambda rows: [api_key_wire(key) for key in rows])

    def mint(
        self, owner_id: str, serializer_class: type[KeyMintSerializer]
    ) -> tuple[Group, ApiKey, str]:
        """The owner and its new key from a mint body (a legacy user's may name `models`)."""
        owner = self.owner(owner_id)
        data = self.input(serializer_class)
        key, plaintext = services.api_key_create(
            workspace=self.workspace,
            group=owner,
            actor=self.actor,
            name=data["name"],
            slugs=data.get("models"),
            expires_at=data["expires_at"],
        )
        return owner, key, plaintext


class GroupKeyListView(OwnedKeyView):
    @list_schema(
        ApiKeyV1Serializer,
        tags=GROUP_KEYS,
        summary="List a group's keys",
        operation_id="group_api_keys_list",
    )
    def get(self, request: Request, owner_id: str) -> Response:
        return self.keys_page(owner_id)

    @api_schema(
        request=KeyMintSerializer,
        response=ApiKeyMintedSerializer,
        tags=GROUP_KEYS,
        summary="Mint a key for a group",
        operation_id="group_api_keys_create",
    )
    def post(self, request: Request, owner_id: str) -> Response:
        _group, key, plaintext = self.mint(owner_id, KeyMintSerializer)
        return Response(api_key_minted_wire(key, plaintext))


class KeyBatchView(GatewayAPIView):
    @api_schema(
        request=KeyBatchMintSerializer,
        response=ApiKeyBatchSerializer,
        tags=GROUP_KEYS,
        summary="Mint keys for up to 1,000 groups at once, all or nothing",
        operation_id="group_api_keys_batch_create",
        description=(
            "Each item names a live group of the workspace (`group_id`) and takes the body of a "
            "single mint; an error names its item (`param` `keys[3].expires_at`) and no key is "
            "minted. The plaintexts are in this answer only."
        ),
    )
    def post(self, request: Request) -> Response:
        items = self.input_many(KeyBatchItemSerializer, field="keys")
        minted = services.api_key_create_many(
            workspace=self.workspace, actor=self.actor, items=items
        )
        return Response({"items": api_keys_minted_wire(minted)})


class GroupKeyRegisterView(OwnedKeyView):
    @api_schema(
        request=KeyRegisterSerializer,
        response=OkSerializer,
        tags=GROUP_KEYS,
        summary="Register a key the workspace generated (Ed25519-signed body)",
        operation_id="group_api_keys_register",
        description=f"`{SIGNATURE_HEADER}`: base64 Ed25519 signature of the raw body bytes.",
    )
    def post(self, request: Request, owner_id: str) -> Response:
        group = self.owner(owner_id)
        # The signature covers the exact bytes received: read them before DRF parses the body.
        raw = body_bytes(request)
        registration_signature_verify(
            workspace=self.workspace, body=raw, signature=request.headers.get(SIGNATURE_HEADER)
        )
        data = self.input(KeyRegisterSerializer)
        services.api_key_register(
            workspace=self.workspace,
            group=group,
            actor=self.actor,
            key=data["key"],
            name=data["name"],
            expires_at=data["expires_at"],
        )
        return Response({"ok": True})


class GroupKeyDetailView(OwnedKeyView):
    @api_schema(
        response=ApiKeyV1Serializer,
        tags=GROUP_KEYS,
        summary="Get a group's key by prefix",
        operation_id="group_api_keys_get",
    )
    def get(self, request: Request, owner_id: str, prefix: str) -> Response:
        key = selectors.api_key_get(group=self.owner(owner_id), prefix=prefix)
        return Response(api_key_wire(key))

    @api_schema(
        response=ApiKeyRevokedSerializer,
        tags=GROUP_KEYS,
        summary="Revoke a group's key (irreversible)",
        operation_id="group_api_keys_delete",
    )
    def delete(self, request: Request, owner_id: str, prefix: str) -> Response:
        key = services.owned_key_revoke(
            workspace=self.workspace,
            owner_id=owner_id,
            legacy=self.legacy,
            prefix=prefix,
            actor=self.actor,
        )
        return Response({"prefix": key.prefix})


class UserKeyListView(GroupKeyListView):
    legacy = True

    @list_schema(
        ApiKeyV1Serializer,
        tags=USER_KEYS,
        summary="List a user's keys",
        operation_id="user_api_keys_list",
    )
    def get(self, request: Request, owner_id: str) -> Response:
        return self.keys_page(owner_id)

    @api_schema(
        request=UserKeyMintSerializer,
        response=UserApiKeyMintedSerializer,
        tags=USER_KEYS,
        summary="Mint a key for a user, optionally restricted to some of its models",
        operation_id="user_api_keys_create",
    )
    def post(self, request: Request, owner_id: str) -> Response:
        user, key, plaintext = self.mint(owner_id, UserKeyMintSerializer)
        return Response(user_api_key_minted_wire(key, plaintext, user=user))


class UserKeyDetailView(GroupKeyDetailView):
    legacy = True

    @api_schema(
        response=ApiKeyV1Serializer,
        tags=USER_KEYS,
        summary="Get a user's key by prefix",
        operation_id="user_api_keys_get",
    )
    def get(self, request: Request, owner_id: str, prefix: str) -> Response:
        return super().get(request, owner_id, prefix)

    @api_schema(
        response=ApiKeyRevokedSerializer,
        tags=USER_KEYS,
        summary="Revoke a user's key (irreversible)",
        operation_id="user_api_keys_delete",
    )
    def delete(self, request: Request, owner_id: str, prefix: str) -> Response:
        return super().delete(request, owner_id, prefix)
