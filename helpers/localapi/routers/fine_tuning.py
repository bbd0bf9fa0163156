"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume; a job's events and checkpoints.

What a job request may ask is checked in `jobs.new_job_row`; the job's life (validation, queue, training
worker) is `jobs.JobManager`.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from fastapi import APIRouter, Request

from helpers.localapi import schemas
from helpers.localapi.deps import EngineDep, ManagerDep, StorageDep
from helpers.localapi.errors import bad_request, not_found
from helpers.localapi.jobs import ACTIVE, PAUSABLE, new_job_row
from helpers.localapi.storage import Storage

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def check_limit(limit: int) -> None:
    """`limit` of a list endpoint must lie in 1..100."""
    if not 1 <= limit <= 100:
        raise bad_request("limit must be between 1 and 100.", param="limit")


def metadata_filter(request: Request) -> tuple[dict[str, str], bool]:
    """`metadata[k]=v` query pairs (the SDK's deep-object form), and whether `metadata=null` was sent."""
    pairs = {}
    null_only = False
    for key, value in request.query_params.multi_items():
        m = re.fullmatch(r"metadata\[(.+)\]", key)
        if m:
            pairs[m.group(1)] = value
        elif key == "metadata" and value == "null":
            null_only = True
    if null_only and pairs:
        raise bad_request("Use either metadata=null or metadata[key]=value filters, not both.", param="metadata")
    return pairs, null_only


def job_row(storage: Storage, job_id: str) -> dict:
    """The stored job, or OpenAI's 404."""
    row = storage.get_job(job_id)
    if row is None:
        raise not_found(f"Could not find fine-tuning job {job_id}.", param="fine_tuning_job_id",
                        code="fine_tuning_job_not_found")
    return row


def job_page(storage: Storage, job_id: str, after: str | None, limit: int, lister: Callable[..., Any],
             to_object: Callable[[Any], dict], what: str) -> dict:
    """One page of a job's events or checkpoints, newest first, continuing after the `after` cursor."""
    check_limit(limit)
    job_row(storage, job_id)
    got = lister(job_id, after=after, limit=limit)
    if got is None:
        raise bad_request(f"No such {what} {after} for job {job_id} (the 'after' cursor).", param="after")
    rows, more = got
    return schemas.page([to_object(r) for r in rows], more)


@router.post("")
def create_job(body: schemas.JobCreate, storage: StorageDep, engine: EngineDep, manager: ManagerDep) -> dict:
    """Create a job: checked now, files validated in the background, then queued."""
    row = new_job_row(body, storage, engine.base_model_ids())
    return schemas.job_object(manager.create(row))


@router.get("")
def list_jobs(request: Request, storage: StorageDep, after: str | None = None, limit: int = 20) -> dict:
    """Jobs, newest first, optionally filtered by metadata."""
    check_limit(limit)
    metadata, null_only = metadata_filter(request)
    got = (storage.list_jobs_null_metadata(after=after, limit=limit) if null_only
           else storage.list_jobs(metadata=metadata, after=after, limit=limit))
    if got is None:
        raise bad_request(f"Could not find fine-tuning job {after} (the 'after' cursor).", param="after")
    rows, more = got
    return schemas.page([schemas.job_object(r) for r in rows], more)


@router.get("/{job_id}")
def retrieve_job(job_id: str, storage: StorageDep) -> dict:
    """One job object."""
    return schemas.job_object(job_row(storage, job_id))


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, storage: StorageDep, manager: ManagerDep) -> dict:
    """Cancel a job that has not finished."""
    row = job_row(storage, job_id)
    if row["status"] not in ACTIVE:
        done = {"succeeded": "completed", "failed": "failed", "cancelled": "been cancelled"}.get(row["status"], row["status"])
        raise bad_request(f"Job has already {done}: {job_id}", param="fine_tuning_job_id")
    manager.cancel(job_id)
    return schemas.job_object(job_row(storage, job_id))


@router.post("/{job_id}/pause")
def pause_job(job_id: str, storage: StorageDep, manager: ManagerDep) -> dict:
    """Pause a queued or running job; it keeps its state (also across a server restart) until resumed."""
    row = job_row(storage, job_id)
    if row["status"] not in PAUSABLE:
        raise bad_request(f"Job {job_id} is {row['status']} and cannot be paused; only a queued or running job can.",
                          param="fine_tuning_job_id", code="invalid_job_status")
    manager.pause(job_id)
    return schemas.job_object(job_row(storage, job_id))


@router.post("/{job_id}/resume")
def resume_job(job_id: str, storage: StorageDep, manager: ManagerDep) -> dict:
    """Resume a paused job: it is queued and continues from the step where it paused."""
    row = job_row(storage, job_id)
    if row["status"] != "paused":
        raise bad_request(f"Job {job_id} is {row['status']} and cannot be resumed; only a paused job can.",
                          param="fine_tuning_job_id", code="invalid_job_status")
    manager.resume(job_id)
    return schemas.job_object(job_row(storage, job_id))


@router.get("/{job_id}/events")
def list_events(job_id: str, storage: StorageDep, after: str | None = None, limit: int = 20) -> dict:
    """A job's events, newest first."""
    return job_page(storage, job_id, after, limit, storage.list_events, schemas.event_object, "event")


@router.get("/{job_id}/checkpoints")
def list_checkpoints(job_id: str, storage: StorageDep, after: str | None = None, limit: int = 10) -> dict:
    """A job's checkpoints, newest first."""
    return job_page(storage, job_id, after, limit, storage.list_checkpoints, schemas.checkpoint_object, "checkpoint")
