"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

log = logging.getLogger("helpers.localapi")


class APIError(Exception):
    """An error the API reports to the client, as OpenAI would."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body OpenAI sends for this error."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        """This error as an HTTP response."""
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """400: the request is malformed or names something unusable."""
    return APIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """404: an unknown id."""
    return APIError(404, message, param=param, code=code)


def unauthorized(message: str, code: str | None = None) -> APIError:
    """401: missing or wrong bearer key."""
    return APIError(401, message, code=code)


def request_error(errors: list[dict]) -> APIError:
    """A pydantic validation failure as OpenAI's 400."""
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        return bad_request("We could not parse the JSON body of your request. (HINT: This likely means you aren't "
                           "using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
    if kind == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param=param)
    if kind == "missing":
        return bad_request(f"Missing required parameter: '{param}'.", param=param)
    return bad_request(f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param=param,
                       code="invalid_value")


def install_error_handlers(app: Any) -> None:
    """Answer every error in OpenAI's shape: our APIErrors, request validation, unknown routes, crashes."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return request_error(exc.errors()).response()

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return not_found(f"Invalid URL ({request.method} {request.url.path})").response()
        if exc.status_code == 405:
            return APIError(405, f"Method not allowed ({request.method} {request.url.path})").response()
        return APIError(exc.status_code, str(exc.detail)).response()

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return APIError(500, f"The local server had an error while processing your request: {type(exc).__name__}: "
                             f"{exc}. See server.log in its work folder.", type_="server_error").response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, server_error)
