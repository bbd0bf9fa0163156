"""`POST /v1/chat/completions`: parse, check (`chat.prepare`), generate with the engine, shape the answer."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from helpers.localapi import chat, schemas
from helpers.localapi.deps import EngineDep, SettingsDep
from helpers.localapi.storage import new_id, now

router = APIRouter(prefix="/v1/chat", tags=["chat"])


@router.post("/completions")
async def create_chat_completion(body: schemas.ChatCreate, engine: EngineDep, settings: SettingsDep):
    """A completion (or a stream of chunks) from a base or fine-tuned model."""
    request = chat.prepare(body, settings.default_max_tokens, engine.resolve)
    completion_id = "chatcmpl-" + new_id("", 29)
    created = now()
    if not request.stream:
        choices = await run_in_threadpool(engine.complete, request.resolved, request.messages, request.params)
        return chat.completion_object(completion_id, created, request.model, choices, request.params["tools"],
                                      bool(request.params["forced"]))
    # start the generation before answering, so a bad request still gets a proper error status
    pieces = await run_in_threadpool(engine.stream, request.resolved, request.messages, request.params)
    chunks = chat.sse_chunks(completion_id, created, request.model, pieces, request.include_usage,
                             request.params["n"], request.params["tools"], bool(request.params["forced"]))
    return StreamingResponse(chunks, media_type="text/event-stream", headers={"cache-control": "no-cache"})
