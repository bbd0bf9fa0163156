"""The API's view of the model engine: which model ids exist, and generation with them.

Base models come from the registry (`models.py`); fine-tuned models and their checkpoints from the
database (the job manager registers them). Generation goes through one `generate.Generator` per
server process, which batches concurrent requests; weights are shared through one `models.ModelPool`.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from helpers.localapi import models, schemas, toolcalls
from helpers.localapi.errors import APIError, bad_request, not_found
from helpers.localapi.storage import Storage

log = logging.getLogger("helpers.localapi.engine")

BASE_CREATED = 1730419200  # 2024-11-01, when SmolLM2 was published; base models have no creation time of their own


class EngineError(APIError):
    """A model could not be loaded or run (500, with the reason)."""

    def __init__(self, message: str) -> None:
        super().__init__(500, message, type_="server_error", code="model_error")


@dataclass(frozen=True)
class ResolvedModel:
    """A model id the API accepts, and what it means on disk."""

    id: str
    kind: str  # "base", "fine-tune" or "checkpoint"
    base: str
    adapter_dir: Path | None
    created: int
    owned_by: str
    job_id: str | None = None

    def object(self) -> dict:
        """The `model` object."""
        return schemas.model_object(self.id, self.created, self.owned_by)


class Engine:
    """Model ids, model loading and generation for the API (loaded lazily, on first chat request)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._pool: Any = None
        self._generator: Any = None

    # ---- ids ---------------------------------------------------------------------------
    def base_model_ids(self) -> list[str]:
        """The base models that can be fine-tuned and chatted with."""
        return list(models.available_models())

    def list_models(self) -> list[dict]:
        """`GET /v1/models`: base models, then fine-tuned models (checkpoints are listed per job, as on OpenAI)."""
        out = [ResolvedModel(s.id, "base", s.id, None, BASE_CREATED, s.owned_by).object()
               for s in models.available_models().values()]
        out += [self._row_model(r).object() for r in self.storage.list_models("fine-tune")]
        return out

    def resolve(self, model_id: str) -> ResolvedModel:
        """What a model id names, or OpenAI's 404 `model_not_found`."""
        specs = models.available_models()
        if model_id in specs:
            spec = specs[model_id]
            return ResolvedModel(spec.id, "base", spec.id, None, BASE_CREATED, spec.owned_by)
        row = self.storage.get_model(model_id)
        if row is None:
            raise not_found(f"The model '{model_id}' does not exist or you do not have access to it.",
                            param="model", code="model_not_found")
        return self._row_model(row)

    @staticmethod
    def _row_model(row: dict) -> ResolvedModel:
        return ResolvedModel(row["id"], row["kind"], row["base_model"], Path(row["adapter_dir"]), row["created"],
                             schemas.OWNER, row["job_id"])

    def delete(self, resolved: ResolvedModel) -> None:
        """Delete a fine-tuned model or checkpoint: its record, its adapter in memory, and its adapter files."""
        self.storage.delete_model(resolved.id)
        self.forget(resolved.id, resolved.adapter_dir)
        still_used = any(Path(r["adapter_dir"]) == resolved.adapter_dir for r in self.storage.list_models())
        if resolved.adapter_dir is not None and not still_used and resolved.adapter_dir.is_relative_to(self.storage.jobs_dir):
            shutil.rmtree(resolved.adapter_dir, ignore_errors=True)

    def forget(self, model_id: str, adapter_dir: Path | None = None) -> None:
        """Drop a deleted model's adapter from memory."""
        if self._pool is not None and adapter_dir is not None:
            try:
                self._pool.forget_adapter(adapter_dir)
            except Exception:  # an adapter that was never loaded
                log.debug("forget_adapter(%s) failed", adapter_dir, exc_info=True)

    def release_models(self) -> int:
        """Unload every model the pool holds and the generator's cached prompts (KV caches of those models; all load
        again on the next request); the number of bases unloaded."""
        if self._generator is not None and self._generator.prefixes is not None:
            self._generator.prefixes.clear()
        return self._pool.release() if self._pool is not None else 0

    # ---- generation --------------------------------------------------------------------
    def _engine(self) -> tuple[Any, Any]:
        """The process's ModelPool and Generator, created on first use."""
        with self._lock:
            if self._generator is None:
                models.import_transformers()  # once, under its lock: concurrent first imports of transformers can fail
                from helpers.localapi import generate

                self._pool = models.ModelPool(self.storage.models_dir)
                self._generator = generate.Generator(self._pool)
            return self._pool, self._generator

    @staticmethod
    def _errors() -> type[Exception]:
        """The generator's exception for requests it cannot answer (a 400, not a 500)."""
        from helpers.localapi.generate import GenerationError

        return GenerationError

    def _view(self, resolved: ResolvedModel) -> Any:
        pool, _ = self._engine()
        if resolved.adapter_dir is not None and not (resolved.adapter_dir / "adapter_config.json").is_file():
            raise EngineError(f"The adapter of {resolved.id} is missing from {resolved.adapter_dir}; "
                              "the model cannot be used (delete it and fine-tune again).")
        try:
            return pool.get(resolved.base, resolved.adapter_dir)
        except models.ModelError as exc:
            raise EngineError(f"Could not load {resolved.id}: {exc}") from exc

    @staticmethod
    def _generation(resolved: ResolvedModel, view: Any, params: dict) -> dict:
        """The generator's arguments for a request: a 400 when it has tools the model's chat template cannot render;
        the functions a tool_choice forces (`forced`) become the call openings the answer must begin with."""
        if params.get("tools") and not models.supports_tools(view.tokenizer):
            raise bad_request(f"The chat template of {resolved.base} cannot render tools, so {resolved.id} cannot be "
                              "asked to call them; use a model fine-tuned from a base model whose template can: "
                              f"{', '.join(models.tool_model_ids())}.", param="tools", code="tools_not_supported")
        run = {k: v for k, v in params.items() if k != "forced"}
        if params.get("forced"):
            openings = [models.call_opening(view.tokenizer, name) for name in params["forced"]]
            if not all(o.lstrip().startswith(toolcalls.CALL_OPEN) for o in openings):
                raise bad_request(f"The chat template of {resolved.base} writes tool calls in a form the local server "
                                  "cannot force; use tool_choice 'auto'.", param="tool_choice",
                                  code="tool_choice_not_supported")
            run["openings"] = openings
        return run

    def count_tokens(self, resolved: ResolvedModel, messages: list[dict]) -> int:
        """Prompt tokens of chat messages as the model sees them (its base model's tokenizer and chat template), without
        loading the model or generating."""
        try:
            return models.count_chat_tokens(resolved.base, messages, self.storage.models_dir)
        except models.ModelError as exc:
            raise EngineError(f"Could not load the tokenizer of {resolved.id}: {exc}") from exc

    def complete(self, resolved: ResolvedModel, messages: list[dict], params: dict) -> list:
        """Finished choices for a chat request (list of generate.Choice)."""
        _, gen = self._engine()
        view = self._view(resolved)
        run = self._generation(resolved, view, params)
        try:
            return gen.complete(view, messages, **run)
        except self._errors() as exc:  # e.g. the prompt does not fit the model's context
            raise bad_request(f"{exc}", param=exc.param, code=exc.code) from None

    def stream(self, resolved: ResolvedModel, messages: list[dict], params: dict) -> Iterator[dict]:
        """Streamed pieces {index, text} and a final {index, finish_reason, prompt_tokens, completion_tokens} per choice."""
        _, gen = self._engine()
        view = self._view(resolved)
        run = self._generation(resolved, view, params)
        try:
            pieces = iter(gen.stream(view, messages, **run))
            first = next(pieces, None)  # start now, so that a failure still gets a proper HTTP status
        except self._errors() as exc:
            raise bad_request(f"{exc}", param=exc.param, code=exc.code) from None
        return itertools.chain([] if first is None else [first], pieces)
