"""`x-request-id` on every response (errors and 401s included), as OpenAI sends it; the SDK shows it as `_request_id`."""

from __future__ import annotations

import secrets


def new_request_id() -> str:
    """A fresh id in OpenAI's form, `req_` and 32 hex digits."""
    return "req_" + secrets.token_hex(16)


class RequestIdMiddleware:
    """ASGI middleware (the outermost one): add `x-request-id` to the start of every HTTP response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = (b"x-request-id", new_request_id().encode("ascii"))

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        await self.app(scope, receive, send_with_id)
