"""The HTTP API of the local server: OpenAI's files, fine-tuning, models, chat and responses endpoints under `/v1`.

Built with FastAPI; `create_app(settings)` returns the ASGI app and `__main__.py` runs it with uvicorn.
One router per resource in `routers/` (files, fine_tuning, models, chat, responses, and service for `/health` and
`/local/*`); each handler parses the request, calls the domain module (jobs, chat, engine, storage) and shapes
the answer. The storage, job manager, engine and settings are on `app.state` and reach handlers through
`deps.py`. Every request needs `Authorization: Bearer <key>` except `GET /health` and the dashboard's static
files (auth.py); the dashboard (`dashboard/`, at `/`) reads the same `/v1` API with the key its user types in. Errors use
OpenAI's shape `{"error": {"message", "type", "param", "code"}}` (errors.py); every response carries
an `x-request-id` (request_id.py).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from helpers.localapi.auth import AuthMiddleware
from helpers.localapi.dashboard import router as dashboard
from helpers.localapi.engine import Engine
from helpers.localapi.errors import install_error_handlers
from helpers.localapi.faults import FaultMiddleware
from helpers.localapi.jobs import JobManager
from helpers.localapi.request_id import RequestIdMiddleware
from helpers.localapi.routers import chat, export, files, fine_tuning, models, responses, service
from helpers.localapi.settings import ServerSettings
from helpers.localapi.storage import Storage

__all__ = ["ServerSettings", "create_app"]

log = logging.getLogger("helpers.localapi")


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Start the job manager; on the way out stop the jobs and close the database.

    The engine (torch, transformers, the models) loads on the first chat request, not here: imported at start it
    kept 0.4 GB in the server while notebook 06's job trained beside it (issue 17, benchmarks/README.md)."""
    state = app.state
    state.manager.start()
    log.info("local API ready: work folder %s", state.settings.work_dir)
    try:
        yield
    finally:
        state.manager.close()
        state.storage.close()


def create_app(settings: ServerSettings) -> FastAPI:
    """The FastAPI app of the local server (storage, job manager and engine start with it)."""
    app = FastAPI(title="微调实战 local OpenAI-compatible API", version=service.VERSION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    storage = Storage(settings.root, settings.model_cache)
    app.state.storage, app.state.settings = storage, settings
    engine = Engine(storage)
    app.state.engine, app.state.manager = engine, JobManager(storage, before_training=engine.release_models,
                                                             base_weights=settings.train_base_weights)
    install_error_handlers(app)
    for module in (service, files, fine_tuning, models, chat, responses, export, dashboard):
        app.include_router(module.router)
    app.add_middleware(FaultMiddleware, settings=settings.faults)
    app.add_middleware(AuthMiddleware, api_key=settings.api_key)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost, so 401s and crashes carry it too
    return app
