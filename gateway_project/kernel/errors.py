"""The one error envelope, for DRF views, plain Django views and the proxy alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response


class GatewayError(Exception):
    """A domain error that renders as the gateway's error envelope."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def body(self) -> dict[str, Any]:
        """The JSON body of the envelope."""
        return error_body(message=self.message, type=self.type, code=self.code, param=self.param)


class ValidationFailed(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"
    code = "not_found"


def tracebacks_drop(exc: BaseException) -> None:
    """Let go of the frames `exc` and the exceptions it was raised from or during hold.

    An exception kept after it was caught (an error answered later, a failure noted before a
    fallback) holds its traceback, whose frames hold the locals that keep the exception: a
    reference cycle that reference counting never frees, which takes the request's whole state
    with it to the cyclic garbage collector. Once an error is answered or noted, where it was
    raised is of no more use (log it first)."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def error_body(*, message: str, type: str, code: str, param: str | None = None) -> dict[str, Any]:
    """The envelope `{"error": {message, type, code, param}}`."""
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def error_bytes(*, message: str, type: str, code: str, param: str | None = None) -> bytes:
    """The envelope as JSON bytes, for raw ASGI responses."""
    return json.dumps(error_body(message=message, type=type, code=code, param=param)).encode()


def json_error_response(
    *, status: int, message: str, type: str, code: str, param: str | None = None
) -> HttpResponse:
    """A plain Django response carrying the envelope."""
    return HttpResponse(
        error_bytes(message=message, type=type, code=code, param=param),
        status=status,
        content_type="application/json",
    )


_DRF_MAP: dict[type[Exception], tuple[str, str]] = {
    drf_exceptions.ParseError: ("invalid_request_error", "invalid_json"),
    drf_exceptions.AuthenticationFailed: ("authentication_error", "invalid_api_key"),
    drf_exceptions.NotAuthenticated: ("authentication_error", "missing_api_key"),
    drf_exceptions.PermissionDenied: ("permission_error", "forbidden"),
    drf_exceptions.NotFound: ("not_found_error", "not_found"),
    drf_exceptions.MethodNotAllowed: ("invalid_request_error", "method_not_allowed"),
    drf_exceptions.NotAcceptable: ("invalid_request_error", "not_acceptable"),
    drf_exceptions.UnsupportedMediaType: ("invalid_request_error", "unsupported_media_type"),
    drf_exceptions.Throttled: ("rate_limit_error", "rate_limit_exceeded"),
}


def _first_validation_error(detail: Any, path: str = "") -> tuple[str, str | None, str]:
    """Flatten DRF's nested ValidationError detail into (message, param, code)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            sub = key if key == "non_field_errors" or not path else f"{path}.{key}"
            if key == "non_field_errors":
                sub = path
            return _first_validation_error(value, sub)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)) and not isinstance(value, str):
                return _first_validation_error(value, f"{path}[{index}]" if path else str(index))
            return _first_validation_error(value, path)
    code = getattr(detail, "code", None) or "invalid"
    message = str(detail)
    param = path or None
    return (f"{param}: {message}" if param else message), param, str(code)


def drf_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every failure in the one envelope."""
    if isinstance(exc, GatewayError):
        return Response(exc.body(), status=exc.status, headers=exc.headers)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if isinstance(exc, drf_exceptions.ValidationError):
        message, param, code = _first_validation_error(exc.detail)
        body = error_body(message=message, type="invalid_request_error", code=code, param=param)
        return Response(body, status=400)
    if isinstance(exc, drf_exceptions.APIException):
        type_, code = _DRF_MAP.get(type(exc), ("invalid_request_error", exc.default_code))
        headers: dict[str, str] = {}
        wait = getattr(exc, "wait", None)
        if isinstance(exc, drf_exceptions.Throttled) and wait is not None:
            headers["Retry-After"] = str(int(wait))
        body = error_body(message=str(exc.detail), type=type_, code=code)
        return Response(body, status=exc.status_code, headers=headers)
    return None


@contextmanager
def item_errors(prefix: str) -> Iterator[None]:
    """Errors raised while checking one item of a batch point into it: `param` `groups[3].models`
    rather than `models`, and the message names the item."""
    try:
        yield
    except drf_exceptions.ValidationError as exc:
        raise drf_exceptions.ValidationError({prefix: exc.detail}) from None
    except ValidationFailed as exc:
        param = f"{prefix}.{exc.param}" if exc.param else prefix
        raise ValidationFailed(f"{prefix}: {exc.message}", code=exc.code, param=param) from None
