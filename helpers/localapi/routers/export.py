"""`POST /v1/local/export`: not part of OpenAI's API (OpenAI never releases weights) — the local server's export.

Body: `{"model": "ft:…", "format": "peft"|"merged"|"gguf", "out": "/absolute/new/folder", "copy_base": false}`.
Answers `{"object": "local.export", "model", "format", "out", "files": {name: bytes}, "base_gguf", "base_sha256"}`
once the folder is written (export.py does the work; this route only parses and shapes). With the SDK:
`client.post("/local/export", body={...}, cast_to=object)`. Errors in OpenAI's shape: an unknown model 404
`model_not_found`, an existing folder 409 `output_exists`, a full disk 507 `disk_full`, anything else 400.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from helpers.localapi import export as exporter
from helpers.localapi.deps import EngineDep, StorageDep
from helpers.localapi.errors import APIError

router = APIRouter(prefix="/v1/local", tags=["local"])


class ExportCreate(BaseModel):
    """The request body of `POST /v1/local/export`."""

    model_config = ConfigDict(extra="forbid")
    model: str
    format: Literal["peft", "merged", "gguf"]
    out: str
    copy_base: bool = False


_STATUS = {exporter.UnknownModelError: (404, "model_not_found", "model"),
           exporter.NotFineTunedError: (400, "model_not_fine_tuned", "model"),
           exporter.NoBaseGGUFError: (400, "no_base_gguf", "format"),
           exporter.OutputExistsError: (409, "output_exists", "out"),
           exporter.DiskFullError: (507, "disk_full", "out")}


@router.post("/export")
async def create_export(body: ExportCreate, storage: StorageDep, engine: EngineDep) -> dict:
    """Export a fine-tuned model or checkpoint into a new folder on this machine."""
    if not Path(body.out).is_absolute():
        raise APIError(400, f"'out' must be an absolute folder path (the server's current folder is not yours): {body.out}",
                       param="out", code="invalid_value")
    if body.format == "merged":  # it loads a float32 base of its own: do not hold the pool's copy beside it
        await run_in_threadpool(engine.release_models)
    try:
        result = await run_in_threadpool(exporter.export_model, storage, body.model, body.format, Path(body.out),
                                         body.copy_base)
    except exporter.ExportError as exc:
        status, code, param = _STATUS.get(type(exc), (400, "export_failed", None))
        raise APIError(status, str(exc), param=param, code=code) from None
    return {"object": "local.export", "model": result.model_id, "format": result.format, "out": str(result.out),
            "files": result.files, "base_gguf": str(result.base_gguf) if result.base_gguf else None,
            "base_sha256": result.base_sha256}
