"""`/v1/files`: upload (streamed to disk), list, retrieve, content, delete."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from helpers.localapi import schemas
from helpers.localapi.deps import SettingsDep, StorageDep
from helpers.localapi.errors import bad_request, not_found
from helpers.localapi.storage import Storage, new_id, now
from helpers.localapi.uploads import check_upload, discard, parse_upload

router = APIRouter(prefix="/v1/files", tags=["files"])


def file_row(storage: Storage, file_id: str) -> dict:
    """The stored file, or OpenAI's 404."""
    row = storage.get_file(file_id)
    if row is None:
        raise not_found(f"No such File object: {file_id}", param="id")
    return row


@router.post("")
async def create_file(request: Request, storage: StorageDep, settings: SettingsDep) -> dict:
    """Upload a file (multipart: `file`, `purpose`)."""
    content_type = request.headers.get("content-type", "")
    up = await parse_upload(request.stream(), content_type, storage.files_dir, settings.max_upload_bytes)
    try:
        purpose, filename = check_upload(up)
        file_id = new_id("file-", 22)
        os.replace(up.tmp_path, storage.blob_path(file_id))
        up.tmp_path = None
        row = storage.add_file({"id": file_id, "created_at": now(), "bytes": up.size, "filename": filename,
                                "purpose": purpose, "status": "processed", "status_details": None,
                                "sha256": up.sha256})
        return schemas.file_object(row)
    finally:
        discard(up)


@router.get("")
def list_files(storage: StorageDep, purpose: str | None = None, limit: int = 10000, after: str | None = None,
               order: str = "desc") -> dict:
    """Files, newest first unless `order=asc`."""
    if not 1 <= limit <= 10000:
        raise bad_request("limit must be between 1 and 10000.", param="limit")
    if order not in ("asc", "desc"):
        raise bad_request(f"'{order}' is not one of ['asc', 'desc'] - 'order'", param="order")
    got = storage.list_files(purpose=purpose, after=after, limit=limit, desc=order == "desc")
    if got is None:
        raise bad_request(f"No such File object: {after} (the 'after' cursor).", param="after")
    rows, more = got
    return schemas.page([schemas.file_object(r) for r in rows], more)


@router.get("/{file_id}")
def retrieve_file(file_id: str, storage: StorageDep) -> dict:
    """One file object."""
    return schemas.file_object(file_row(storage, file_id))


@router.get("/{file_id}/content")
def file_content(file_id: str, storage: StorageDep) -> FileResponse:
    """The file's bytes."""
    row = file_row(storage, file_id)
    media = "text/csv" if row["filename"].endswith(".csv") else "application/octet-stream"
    return FileResponse(storage.blob_path(file_id), media_type=media, filename=row["filename"])


@router.delete("/{file_id}")
def delete_file(file_id: str, storage: StorageDep) -> dict:
    """Delete a file and its blob."""
    file_row(storage, file_id)
    storage.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
