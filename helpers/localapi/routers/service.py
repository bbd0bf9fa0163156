"""Routes outside OpenAI's API, for the helpers: `GET /health` (open), `GET /local/info`, `POST /local/release`,
`POST /local/shutdown`."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from helpers.localapi.deps import EngineDep, ManagerDep, SettingsDep
from helpers.localapi.errors import APIError

VERSION = "1.0"

router = APIRouter(tags=["service"])


@router.get("/health")
def health() -> dict:
    """Liveness, without a key."""
    return {"status": "ok"}


@router.get("/local/info")
def info(settings: SettingsDep, manager: ManagerDep) -> dict:
    """The work folder, pid, limits, fault settings and the job training now."""
    faults = settings.faults
    return {"object": "local.info", "version": VERSION, "pid": os.getpid(), "work_dir": str(settings.work_dir),
            "max_upload_bytes": settings.max_upload_bytes,
            "faults": {"rate": faults.rate, "seed": faults.seed, "latency": faults.latency},
            "training": manager.training()}


@router.post("/local/release")
async def release(engine: EngineDep) -> dict:
    """Unload the generation models (they load again on the next chat request), so that another program can have
    their memory: notebook 08 calls it before llama.cpp loads the same model (issue 17)."""
    released = await run_in_threadpool(engine.release_models)
    return {"object": "local.release", "released": released}


@router.post("/local/shutdown")
def shutdown(settings: SettingsDep) -> dict:
    """Ask the uvicorn server that runs this app to exit."""
    if settings.request_shutdown is None:
        raise APIError(501, "This server was not started by `python -m helpers.localapi serve`.")
    settings.request_shutdown()
    return {"object": "local.shutdown", "stopping": True}
