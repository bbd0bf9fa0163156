"""Bearer-key authentication of every request except `GET /health` and the dashboard's static files, in OpenAI's 401 shape."""

from __future__ import annotations

import hmac

from helpers.localapi.errors import APIError, unauthorized

OPEN_PATHS = {"/health", "/"}  # liveness; the dashboard's page (static, no data: it asks for the key)
OPEN_PREFIXES = ("/dashboard/",)  # the dashboard's scripts and styles


def check_authorization(header: str, key: bytes) -> APIError | None:
    """None when `Authorization` carries the bearer key, else the 401 to answer."""
    auth = header.strip()
    if not auth:
        return unauthorized("You didn't provide an API key. You need to provide your API key in an Authorization "
                            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). The local server's "
                            "key is in LOCALAPI_KEY or in the work folder (localapi/api_key).")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
        return unauthorized("Incorrect API key provided. The local server's key is in LOCALAPI_KEY or in "
                            "the work folder (localapi/api_key).", code="invalid_api_key")
    return None


class AuthMiddleware:
    """ASGI middleware: 401 in OpenAI's shape unless the bearer key matches (also for unknown paths)."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        error = check_authorization(header, self.key)
        if error is None:
            await self.app(scope, receive, send)
            return
        while True:  # read the body so the client gets our answer, not a reset connection
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await error.response()(scope, receive, send)
