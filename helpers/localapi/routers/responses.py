"""`POST /v1/responses`: parse, check (`responses.prepare`), generate with the engine (as chat completions do),
shape OpenAI's `response` object or its event stream; `POST /v1/responses/input_tokens`: the prompt's token count with
the model's own tokenizer, nothing generated; `GET`/`DELETE /v1/responses/{id}`: 404, nothing is stored."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from helpers.localapi import responses, schemas
from helpers.localapi.deps import EngineDep, SettingsDep
from helpers.localapi.errors import APIError
from helpers.localapi.storage import now

router = APIRouter(prefix="/v1/responses", tags=["responses"])


@router.post("")
async def create_response(body: schemas.ResponseCreate, engine: EngineDep, settings: SettingsDep):
    """A response (or a stream of its events) from a base or fine-tuned model."""
    request = responses.prepare(body, settings.default_max_tokens, engine.resolve)
    response_id, message_id, created = responses.new_id("resp_"), responses.new_id("msg_"), now()
    try:
        if not request.stream:
            (choice,) = await run_in_threadpool(engine.complete, request.resolved, request.messages, request.params)
            return responses.completed_response(request, response_id, message_id, created, choice)
        # start the generation before answering, so a bad request still gets a proper error status
        pieces = await run_in_threadpool(engine.stream, request.resolved, request.messages, request.params)
    except APIError as exc:
        raise responses.input_error(exc) from None
    events = responses.sse_events(request, response_id, message_id, created, pieces)
    return StreamingResponse(events, media_type="text/event-stream", headers={"cache-control": "no-cache"})


@router.post("/input_tokens")
async def count_input_tokens(body: schemas.InputTokensCount, engine: EngineDep) -> dict:
    """The input's token count as the model would see it (its chat template included), without generating."""
    resolved, messages = responses.count_request(body, engine.resolve)
    return responses.input_tokens_object(await run_in_threadpool(engine.count_tokens, resolved, messages))


@router.get("/{response_id}")
def retrieve_response(response_id: str) -> dict:
    """Stored responses: none on the local server."""
    raise responses.not_stored(response_id)


@router.delete("/{response_id}")
def delete_response(response_id: str) -> dict:
    """Stored responses: none on the local server."""
    raise responses.not_stored(response_id)
