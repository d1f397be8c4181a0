"""Every error as OpenAI's JSON shape, ``{"error": {"message", "type", "param", "code"}}``.

Bad requests get a 4xx whose message starts with the field path and whose ``param`` names
it. Only a genuine bug reaches the catch-all, which logs it and answers a JSON 500.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
RATE_LIMIT = "rate_limit_error"
UNAVAILABLE = "server_unavailable"
SERVER_ERROR = "server_error"

# Parts of a pydantic error location that name a union branch or a validator, not a field.
_BRANCH_MARKERS = ("[", "function-", "json-or-python", "constrained-")
_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none", "tagged-union", "nullable"}


class ApiError(Exception):
    """A request the server refuses, with the status, the type and the field it is about."""

    def __init__(self, status: int, message: str, *, type: str = INVALID_REQUEST, param: Optional[str] = None,
                 code: Optional[str] = None, headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}


def error_body(message: str, type: str, param: Optional[str] = None, code: Optional[str] = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error.message, error.type, error.param, error.code), status_code=error.status,
                        headers=error.headers)


def field_path(loc: tuple[Any, ...]) -> str:
    """``("body", "messages", 0, "content", "str")`` -> ``messages[0].content``."""
    path = ""
    for part in loc[1:] if loc and loc[0] in ("body", "query", "header", "path") else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif any(marker in str(part) for marker in _BRANCH_MARKERS) or str(part) in _TYPE_NAMES:
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """One message naming each bad field once, and the first field as ``param``."""
    seen: dict[str, str] = {}
    for item in errors:
        # A JSON syntax error's location ends in a character offset, not a field.
        path = "body" if item.get("type") == "json_invalid" else field_path(tuple(item.get("loc", ())))
        seen.setdefault(path, str(item.get("msg", "invalid value")))
    # Of a union's branches, the one that got deeper says more: drop a path another one extends.
    seen = {path: message for path, message in seen.items()
            if not any(other.startswith((path + ".", path + "[")) for other in seen)}
    first = next(iter(seen), "body")
    return "; ".join(f"{path}: {message}" for path, message in seen.items()), first


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    message, param = validation_message(list(error.errors()))
    return JSONResponse(error_body(message, INVALID_REQUEST, param), status_code=400)


async def _on_api_error(request: Request, error: ApiError) -> JSONResponse:
    return error_response(error)


async def _on_http_error(request: Request, error: HTTPException) -> JSONResponse:
    error_type = AUTHENTICATION if error.status_code == 401 else INVALID_REQUEST
    return JSONResponse(error_body(str(error.detail), error_type), status_code=error.status_code,
                        headers=dict(error.headers or {}))


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal server error", SERVER_ERROR), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
