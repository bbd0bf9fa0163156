"""`/v1/models`: list, retrieve, delete (fine-tuned models and checkpoints only)."""

from __future__ import annotations

from fastapi import APIRouter

from helpers.localapi.deps import EngineDep
from helpers.localapi.errors import APIError

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(engine: EngineDep) -> dict:
    """Base models, fine-tuned models and their checkpoints."""
    return {"object": "list", "data": engine.list_models()}


@router.get("/{model_id:path}")
def retrieve_model(model_id: str, engine: EngineDep) -> dict:
    """One model object."""
    return engine.resolve(model_id).object()


@router.delete("/{model_id:path}")
def delete_model(model_id: str, engine: EngineDep) -> dict:
    """Delete a fine-tuned model (base models cannot be deleted)."""
    resolved = engine.resolve(model_id)
    if resolved.kind == "base":
        raise APIError(403, f"The model '{model_id}' is a base model of the local server and cannot be deleted; "
                            "only fine-tuned models can.", type_="invalid_request_error", param="model",
                       code="model_not_deletable")
    engine.delete(resolved)
    return {"id": model_id, "object": "model", "deleted": True}
