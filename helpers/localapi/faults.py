"""Opt-in fault injection for tests: 429 with retry-after, 500, and slow responses on a seeded fraction of requests.

Switched on by `serve --faults 0.2` or `LOCALAPI_FAULTS=0.2` (seed: `--fault-seed` / `LOCALAPI_FAULT_SEED`).
A fixed extra latency on every API request (`--latency 1.0` / `LOCALAPI_LATENCY`) is there for concurrency benchmarks.

Faults are decided before the request reaches a handler, and the request body is read and dropped
first, so a retried upload or job creation is never half-done: the SDK's retries cannot create duplicates.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass

FAULT_KINDS = ("rate_limit", "server_error", "slow")


@dataclass(frozen=True)
class FaultSettings:
    """How often and how the server misbehaves on purpose."""

    rate: float = 0.0  # fraction of API requests that get a fault, 0..1
    seed: int = 0
    slow_seconds: float = 1.5  # delay of a "slow" fault (the request then succeeds)
    retry_after: float = 0.5  # seconds announced in retry-after-ms / retry-after on a 429
    latency: float = 0.0  # fixed delay added to every API request

    @property
    def active(self) -> bool:
        """True when anything is injected."""
        return self.rate > 0 or self.latency > 0


class FaultMiddleware:
    """ASGI middleware that injects the configured faults into `/v1/` requests (never into `/health`)."""

    def __init__(self, app, settings: FaultSettings) -> None:
        self.app = app
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.counts = {kind: 0 for kind in FAULT_KINDS}

    def draw(self) -> str | None:
        """The fault for the next request, or None (deterministic for a given seed and request order)."""
        if self.settings.rate <= 0:
            return None
        hit = self.rng.random() < self.settings.rate
        kind = self.rng.choice(FAULT_KINDS)
        return kind if hit else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        kind = self.draw()
        if self.settings.latency > 0:
            await asyncio.sleep(self.settings.latency)
        if kind is not None:
            self.counts[kind] += 1
        if kind == "slow":
            await asyncio.sleep(self.settings.slow_seconds)
        elif kind in ("rate_limit", "server_error"):
            await _drain(receive)
            await _send_fault(send, kind, self.settings.retry_after)
            return
        await self.app(scope, receive, send)


async def _drain(receive) -> None:
    """Read and drop the request body so the client can read our answer cleanly."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _send_fault(send, kind: str, retry_after: float) -> None:
    """Send a 429 or 500 in OpenAI's error shape."""
    if kind == "rate_limit":
        status = 429
        error = {"message": "Rate limit reached (injected by the local server's fault mode). Please try again shortly.",
                 "type": "requests", "param": None, "code": "rate_limit_exceeded"}
        headers = [(b"retry-after", str(max(1, round(retry_after))).encode()),
                   (b"retry-after-ms", str(int(retry_after * 1000)).encode())]
    else:
        status = 500
        error = {"message": "The server had an error while processing your request (injected by the local server's "
                            "fault mode). Sorry about that!", "type": "server_error", "param": None, "code": None}
        headers = []
    body = json.dumps({"error": error}).encode()
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
