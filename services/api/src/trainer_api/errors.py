"""Every error leaves the API as `{code, message, request_id}`; no stack trace ever does."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from platform_core.api_models import ErrorBody
from platform_core.errors import AppError, ErrorCode

_log = logging.getLogger(__name__)
# what each error status means, for the OpenAPI schema: every response the API can give is
# declared, so a schema check (schemathesis) holds the API to it
_MEANING = {
    401: "X-Api-Key missing or wrong (when the API has a key)",
    404: "no such run, tokenizer, request or artifact",
    409: "the request conflicts with the current state (e.g. cancelling a finished run)",
    413: "request body too large",
    422: "invalid input: the message names each bad field",
    503: "Redis is unreachable or did not answer within its timeout; try again shortly",
}
OpenApiResponses = dict[int | str, dict[str, object]]
_BY_STATUS = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_INPUT,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    422: ErrorCode.INVALID_INPUT,
    429: ErrorCode.RATE_LIMITED,
}


def error_responses(*statuses: int) -> OpenApiResponses:
    """OpenAPI `responses=` entries: `statuses` answer with an ErrorBody."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]} for status in statuses}


def document_common_errors(schema: dict[str, object], probes: frozenset[str]) -> None:
    """Declare in `schema` the errors that any route can give: 503 wherever Redis is asked
    (every operation but the probes, which report Redis instead), 413 on every operation
    with a body (the size limit applies before routing), and a 422 FastAPI declared with its
    own `HTTPValidationError` body as the ErrorBody it is (`_validation_error`)."""
    paths = schema.get("paths")
    if not isinstance(paths, dict):
        return
    body = ErrorBody.model_json_schema()["title"]
    for path, operations in paths.items():
        if not isinstance(operations, dict):
            continue
        for operation in operations.values():
            _no_null_parameters(operation)
        for method, operation in operations.items():
            responses = operation.get("responses") if isinstance(operation, dict) else None
            if not isinstance(responses, dict):
                continue
            if "HTTPValidationError" in str(responses.get("422", "")):
                responses["422"] = _error_response(422, body)
            if path in probes:
                continue
            wanted = [503, 413] if method in {"post", "put", "patch"} else [503]
            for status in wanted:
                responses.setdefault(str(status), _error_response(status, body))
    components = schema.get("components")
    schemas = components.get("schemas") if isinstance(components, dict) else None
    if isinstance(schemas, dict) and "HTTPValidationError" not in str(paths):
        # FastAPI's own error bodies, now referenced by nothing: no answer has them
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _error_response(status: int, body: str) -> dict[str, object]:
    return {
        "description": _MEANING[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
    }


def exact_integer_bounds(node: object) -> None:
    """FastAPI publishes every bound as a float (`maximum: 512.0`); an integer's bounds are
    written back as integers, exact as long as the float was (bounds past 2**53 are chosen to
    be powers of two, see api_models.DISCORD_ID_LIMIT)."""
    if isinstance(node, list):
        for item in node:
            exact_integer_bounds(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "integer":
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            bound = node.get(key)
            if isinstance(bound, float) and bound.is_integer():
                node[key] = int(bound)
    for child in node.values():
        exact_integer_bounds(child)


def _no_null_parameters(operation: object) -> None:
    """An optional header or query parameter is absent or a string on the wire, never null:
    FastAPI declares `X | None` parameters nullable, which no request can honour."""
    parameters = operation.get("parameters") if isinstance(operation, dict) else None
    for parameter in parameters if isinstance(parameters, list) else []:
        schema = parameter.get("schema") if isinstance(parameter, dict) else None
        variants = schema.get("anyOf") if isinstance(schema, dict) else None
        if not isinstance(schema, dict) or not isinstance(variants, list):
            continue
        kept = [v for v in variants if v != {"type": "null"}]
        if len(kept) == 1 and isinstance(kept[0], dict):
            del schema["anyOf"]
            schema.update(kept[0])


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def error_response(request: Request, status: int, code: ErrorCode, message: str) -> JSONResponse:
    body = ErrorBody(code=code.value, message=message, request_id=request_id_of(request))
    return JSONResponse(body.model_dump(), status_code=status)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    _log.info("request refused: %s", exc.message, extra={"error_code": exc.code.value})
    return error_response(request, exc.http_status, exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body') or 'body'}: {err.get('msg')}"
        for err in exc.errors()
    )
    return error_response(request, 422, ErrorCode.INVALID_INPUT, f"invalid request: {problems}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # FastAPI's answer to a body it cannot even decode
        return error_response(
            request, 422, ErrorCode.INVALID_INPUT, "invalid request: the body is not UTF-8 JSON"
        )
    code = _BY_STATUS.get(exc.status_code, ErrorCode.INTERNAL)
    response = error_response(request, exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        response.headers["allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """The methods the published schema documents for this path (HEAD is declared wherever
    GET is). Starlette's own Allow names only the first route whose path matched, so a path
    served by two routes (GET and POST /models/{name}/versions) was announced as GET alone."""
    paths = request.app.openapi().get("paths", {})
    methods: set[str] = set()
    # OpenAPI matches a concrete path before its templated counterparts (/runs/train is not
    # /runs/{run_id}), as clients reading the schema do
    exact = paths.get(request.url.path)
    candidates = {request.url.path: exact} if exact is not None else paths
    for template, operations in candidates.items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {method.upper() for method in operations if method in _HTTP_METHODS}
    return sorted(methods)


_HTTP_METHODS = frozenset({"get", "head", "post", "put", "patch", "delete", "options"})


async def _redis_unreachable(request: Request, exc: Exception) -> JSONResponse:
    # the message names no host: the client cannot act on it, the log (masked) can
    _log.warning("redis unreachable: %s", exc, extra={"error_code": "REDIS_UNAVAILABLE"})
    message = "Redis is unreachable; try again shortly"
    return error_response(request, 503, ErrorCode.REDIS_UNAVAILABLE, message)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    _log.exception("unhandled error", extra={"error_code": ErrorCode.INTERNAL.value})
    return error_response(request, 500, ErrorCode.INTERNAL, "internal error; see the API log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RedisConnectionError, _redis_unreachable)
    app.add_exception_handler(RedisTimeoutError, _redis_unreachable)
    app.add_exception_handler(Exception, _unexpected)
