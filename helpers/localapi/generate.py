"""Batched chat generation for the local server: one Generator per process, shared by all request threads.

Requests (from any thread) go into a queue; one worker thread takes the oldest, waits up to `window` seconds
(default 20 ms) for more requests for the same weights (same base model and adapter), and decodes them together:
prompts prefilled in groups of similar length (left-padded within a group), then one forward pass per new token for
the whole batch with a KV cache. A prompt that opens like a recent one (the same system prompt, the same few-shot examples)
starts from that prompt's cached keys and values and runs only the rest (`PrefixCache`).
Rows that finish leave the batch (their cache rows are dropped); requests for the same weights that arrive
meanwhile join it between two steps while there is room (their prompts are prefilled on their own, and the two
caches left-padded to one length): continuous batching, so a request never waits for a running batch's longest
answer (on 2 CPU cores it buys latency, not throughput: benchmarks/README.md). Requests for other weights wait
until the running batch ends. Each row samples on its own (temperature, top_p, a seeded generator per choice:
`seed` + choice index), so a seeded request gives the same answer whatever else shares its batch (up to float
rounding, which can differ between batch shapes and flip near-tied greedy choices). Before sampling, a row's
logits get OpenAI's `logit_bias` (added per token id) and its `frequency_penalty` / `presence_penalty`
(subtracted: count x frequency_penalty + presence_penalty for every token the choice has generated so far);
logprobs stay those of the model's own distribution. A request may also say how its answer must begin
(`openings`, e.g. a tool call's opening `<tool_call>\n{"name": "f", "arguments": ` for each allowed function
`f`): until a row's text covers one of them, only tokens that spell an opening the way the tokenizer does (the
first token of its encoding of the rest), or complete one and run on past it, can be picked, whatever the
temperature (`_constrained`). Where several openings remain (several functions), the model's logits choose among
them; then it writes on freely.

Usage is counted with the model's own tokenizer: prompt_tokens = the rendered chat prompt, completion_tokens =
tokens generated (the end-of-turn token not included). finish_reason is "stop" (end-of-turn token or a stop
string, which is cut off) or "length" (max_tokens or the model's context is used up). An explicit limit
(`max_tokens_param` names it) that does not fit the model's context with the prompt is a GenerationError naming
that parameter, as OpenAI answers; only the server's default limit is cut to what fits.

Streaming yields `{"index": i, "text": delta}` pieces while decoding (text is held back while it could still be
the start of a stop string or is an incomplete UTF-8 character) and one final
`{"index": i, "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens"}` per choice (cached_tokens: the
prompt tokens a cached prefix saved, reported as OpenAI reports prompt caching).
"""

from __future__ import annotations

import bisect
import functools
import queue
import secrets
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from helpers.localapi import models

DEFAULT_WINDOW = 0.02  # seconds to wait for more requests before a batch starts
DEFAULT_MAX_BATCH = 16  # rows (choices) decoded together; see benchmarks/README.md
PREFILL_SLACK = 0.1  # a prefill pads at most this share of its tokens: rows are prefilled in groups of similar length
PREFIX_MIN_TOKENS = 32  # a prompt reuses a cached prefix (a recent prompt's KV cache) at least this long
PREFIX_CACHE_TOKENS = 8192  # tokens of recent prompts kept with their KV cache (Qwen 0.5B, float32: 25 KB a token)
CACHE_ROOM = 128  # token slots a KV cache layer keeps free, so that decoding appends in place (`_growing_layer_class`)
PENALTIES = ("frequency_penalty", "presence_penalty", "logit_bias")  # OpenAI's logit adjustments, see `_penalised`


class GenerationError(ValueError):
    """A request the model cannot answer (e.g. the prompt does not fit its context); `param` names the field at fault."""

    def __init__(self, message: str, param: str = "messages", code: str = "context_length_exceeded") -> None:
        super().__init__(message)
        self.param, self.code = param, code


@dataclass
class Usage:
    """Token counts of one choice, with the model's tokenizer."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of prompt_tokens, those whose prefill a cached prefix saved (OpenAI's prompt caching)


@dataclass
class Choice:
    """One finished answer."""

    index: int
    text: str
    finish_reason: str  # "stop" or "length"
    usage: Usage
    logprobs: list[dict[str, Any]] | None = None  # OpenAI's logprobs.content entries, when asked for


@dataclass
class _Row:
    """One choice being decoded."""

    request: "_Request"
    index: int
    max_tokens: int
    rng: Any  # torch.Generator, or None for greedy
    ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    done: bool = False
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # one entry per generated token, when asked for
    logprobs_sent: int = 0
    cached: int = 0  # prompt tokens taken from the prefix cache
    opening: str = ""  # the text of the tokens picked while the answer had to begin with one of request.openings
    opened: bool = True  # False while the answer must still begin with one of request.openings


@dataclass
class _Request:
    """One chat request (n choices) waiting for or in a batch."""

    view: models.LoadedModel
    prompt: list[int]
    temperature: float
    top_p: float
    stop: list[str]
    top_logprobs: int | None = None  # None: no logprobs; else how many alternatives per token (0-20)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit
    openings: list[str] | None = None  # the answer must begin with one of these texts (None: free)
    rows: list[_Row] = field(default_factory=list)
    out: "queue.SimpleQueue[dict]" = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False


@dataclass
class _Batch:
    """Rows being decoded together: their KV cache, attention mask (as long as the cache), next positions and the
    tokens picked last (the next step's input)."""

    rows: list[_Row]
    cache: Any  # transformers.DynamicCache, batch dimension = rows
    mask: Any  # [rows, cached length] 1 = a real token, 0 = left padding
    next_pos: Any  # [rows, 1] position id of the next token
    tokens: Any  # [rows] the tokens to feed next

    def select(self, keep: list[int]) -> None:
        """Keep only these rows, and drop the cache columns that no row needs any more (padding only)."""
        import torch

        index = torch.tensor(keep, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            return
        self.cache.batch_select_indices(index)
        self.mask, self.next_pos, self.tokens = self.mask[index], self.next_pos[index], self.tokens[index]
        unused = int(self.mask.any(dim=0).int().argmax())  # leading columns that are padding in every row
        if unused:
            self.mask = self.mask[:, unused:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]

    def merged(self, other: "_Batch") -> "_Batch":
        """This batch and another one as one: the shorter cache left-padded (masked out) to the longer."""
        import torch

        if not self.rows:
            return other
        if not other.rows:
            return self
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            k1, v1, k2, v2 = (_left_pad(t, width) for t in (mine.keys, mine.values, theirs.keys, theirs.values))
            mine.keys, mine.values = torch.cat([k1, k2]), torch.cat([v1, v2])
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(other.mask, width)])
        self.next_pos = torch.cat([self.next_pos, other.next_pos])
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.rows = self.rows + other.rows
        return self


def length_groups(rows: list[_Row], slack: float = PREFILL_SLACK) -> list[list[_Row]]:
    """Rows grouped by prompt length so that padding a group to its longest prompt adds at most `slack` of its tokens."""
    groups: list[list[_Row]] = []
    total = 0
    for row in sorted(rows, key=lambda r: len(r.request.prompt)):
        n = len(row.request.prompt)  # the longest so far: the group's padded width if the row joins
        if groups and n * (len(groups[-1]) + 1) <= (1 + slack) * (total + n):
            groups[-1].append(row)
            total += n
        else:
            groups.append([row])
            total = n
    return groups


@functools.lru_cache(maxsize=None)
def _growing_layer_class() -> type:
    """transformers' DynamicLayer, but appending into spare room (CACHE_ROOM slots) instead of concatenating.

    DynamicLayer copies the whole cache at every decoding step (torch.cat): with 8 answers of 500 prompt tokens
    that was 30 % of a step on 2 AVX2 cores. Here `keys` / `values` are views of larger buffers, written in place;
    the buffers are rebuilt (with fresh room) only when full or when the generator replaced the tensors (rows
    selected, caches merged, padding dropped). Built on first use: transformers is imported lazily.
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            old = self.keys.shape[-2] if self.keys.dim() == 4 else 0
            new = key_states.shape[-2]
            buffers = getattr(self, "_buffers_kv", None)
            in_place = (buffers is not None and old + new <= buffers[0].shape[-2] and
                        all(t.dim() == 4 and t.data_ptr() == b.data_ptr() and t.stride() == b.stride() and
                            t.shape[:2] == b.shape[:2] for t, b in zip((self.keys, self.values), buffers)))
            if not in_place:
                shape = list(key_states.shape)
                shape[-2] = old + new + CACHE_ROOM
                buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
                if old:
                    buffers[0][:, :, :old] = self.keys
                    buffers[1][:, :, :old] = self.values
                self._buffers_kv = buffers
            buffers[0][:, :, old:old + new] = key_states
            buffers[1][:, :, old:old + new] = value_states
            self.keys, self.values = buffers[0][:, :, :old + new], buffers[1][:, :, :old + new]
            return self.keys, self.values

    return GrowingLayer


def new_cache(config: Any) -> Any:
    """An empty DynamicCache for `config` whose plain layers append in place (`_growing_layer_class`)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    growing = _growing_layer_class()
    cache.layers = [growing() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _left_pad(t: Any, width: int) -> Any:
    """A cache tensor [B, H, T, D] or mask [B, T] padded with zeros on the left of its sequence axis to `width`."""
    import torch

    axis = 2 if t.dim() == 4 else 1
    missing = width - t.shape[axis]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[axis] = missing
    return torch.cat([t.new_zeros(shape), t], dim=axis)


@dataclass(frozen=True)
class PieceTable:
    """A tokenizer's vocabulary as text: the tokens of each piece, and the pieces sorted (for prefix look-ups)."""

    ids: dict[str, list[int]]  # piece text -> token ids with that text
    sorted_pieces: list[str]
    text: dict[int, str]  # token id -> piece text

    def allowed(self, remaining: str, tokenizer: Any) -> set[int]:
        """Token ids that may come next when the text must go on with `remaining`: the first token of the tokenizer's
        own encoding of it (else the longest token that begins it), and tokens that cover all of it and run on."""
        first = tokenizer(remaining, add_special_tokens=False)["input_ids"][:1]
        out = {t for t in first if self.text.get(t) and remaining.startswith(self.text[t])}
        if not out:
            longest = next((remaining[:k] for k in range(len(remaining), 0, -1) if remaining[:k] in self.ids), None)
            out = set(self.ids[longest]) if longest else set()
        start = bisect.bisect_left(self.sorted_pieces, remaining)
        for piece in itertools.takewhile(lambda p: p.startswith(remaining), self.sorted_pieces[start:]):
            out.update(self.ids[piece])
        return out


@functools.lru_cache(maxsize=4)
def piece_table(tokenizer: Any) -> PieceTable:
    """The PieceTable of a tokenizer (special tokens and tokens that are part of a character left out); built once."""
    from helpers.localapi.toolcalls import token_bytes

    special = set(tokenizer.all_special_ids)
    ids: dict[str, list[int]] = {}
    text: dict[int, str] = {}
    for tid in range(len(tokenizer)):
        if tid in special:
            continue
        try:
            piece = bytes(token_bytes(tokenizer, tid)).decode("utf-8")
        except UnicodeDecodeError:
            continue
        if piece:
            ids.setdefault(piece, []).append(tid)
            text[tid] = piece
    return PieceTable(ids, sorted(ids), text)


@dataclass
class _Prefix:
    """A recent prompt and its KV cache (one [1, heads, tokens, dim] keys/values pair per layer)."""

    key: str  # the weights (LoadedModel.key)
    tokens: list[int]
    layers: list[tuple[Any, Any]]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two token lists share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PrefixCache:
    """KV caches of recent prompts, so that a prompt that starts like a recent one skips that part of its prefill.

    Attention is causal: the keys and values of a prompt's first k tokens depend on those k tokens only, so any
    cached prompt serves every later prompt that shares its opening (the system prompt, the few-shot examples of
    notebook 07). A prompt is kept when no cached prompt covers half of it; least recently used ones go first
    once more than `max_tokens` are kept. Thread-safe: the generator's worker thread uses it, and `clear` may come
    from any thread (the server unloading its models).
    """

    def __init__(self, max_tokens: int = PREFIX_CACHE_TOKENS, min_tokens: int = PREFIX_MIN_TOKENS) -> None:
        self.max_tokens, self.min_tokens = max_tokens, min_tokens
        self._entries: list[_Prefix] = []  # least recently used first
        self._lock = threading.Lock()
        self.tokens_reused = 0  # for tests and benchmarks: prompt tokens whose prefill was skipped

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every cached prompt (their KV caches are freed once no batch uses them)."""
        with self._lock:
            self._entries = []

    def lookup(self, key: str, prompt: list[int]) -> tuple[_Prefix | None, int]:
        """The cached prompt sharing the longest opening with `prompt`, and how many tokens of it to reuse (at most
        all but the prompt's last token, whose logits the first answer token needs); (None, 0) when under min_tokens."""
        best, length = None, 0
        with self._lock:
            for entry in self._entries:
                if entry.key == key:
                    n = min(common_prefix(entry.tokens, prompt), len(prompt) - 1)
                    if n > length:
                        best, length = entry, n
            if best is None or length < self.min_tokens:
                return None, 0
            self._entries.remove(best)
            self._entries.append(best)
        return best, length

    def wants(self, key: str, prompt: list[int]) -> bool:
        """True when no cached prompt covers half of this one (then it is worth keeping)."""
        with self._lock:
            covered = max((common_prefix(e.tokens, prompt) for e in self._entries if e.key == key), default=0)
        return len(prompt) >= self.min_tokens and covered < len(prompt) // 2 and len(prompt) <= self.max_tokens

    def store(self, key: str, prompt: list[int], layers: list[tuple[Any, Any]]) -> None:
        """Keep a prompt's KV cache, dropping the least recently used ones beyond max_tokens."""
        with self._lock:
            self._entries.append(_Prefix(key, list(prompt), layers))
            while sum(len(e.tokens) for e in self._entries) > self.max_tokens:
                self._entries.pop(0)


class Generator:
    """Dynamic-batching text generator; thread-safe; one worker thread runs every forward pass."""

    def __init__(self, pool: models.ModelPool | None = None, *, window: float = DEFAULT_WINDOW,
                 max_batch: int = DEFAULT_MAX_BATCH, continuous: bool = True, prefix_cache: bool = True,
                 prefill_slack: float = PREFILL_SLACK) -> None:
        self.pool = pool
        self.prefixes = PrefixCache() if prefix_cache else None
        self.prefill_slack = prefill_slack
        self.window = window
        self.max_batch = max_batch
        self.continuous = continuous  # False: a batch takes no new rows once it runs (the benchmark's comparison)
        self._pending: list[_Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="generator", daemon=True)
        self._worker.start()
        self.batches_run = 0  # for tests and benchmarks: how many batches were decoded
        self.largest_batch = 0
        self.rows_joined = 0  # rows that joined a batch already decoding

    # ---- public API -------------------------------------------------------------------------

    def complete(self, model: models.LoadedModel, messages: list[dict[str, Any]], *, max_tokens: int = 256,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None,
                 n: int = 1, tools: list[dict[str, Any]] | None = None, top_logprobs: int | None = None,
                 openings: list[str] | None = None, max_tokens_param: str | None = None,
                 **penalties: Any) -> list[Choice]:
        """Finished choices for one chat request (blocks until all n are done); `tools` go into the chat template,
        `top_logprobs` (0-20, None for none) asks for each token's logprob and that many alternatives; `openings`:
        texts one of which each answer must begin with; `max_tokens_param`: the request's name for an explicit
        max_tokens (None: the server's default, cut to what fits); `penalties`: frequency_penalty, presence_penalty,
        logit_bias ({token id: bias})."""
        request = self._submit(model, messages, max_tokens, temperature, top_p, seed, stop, n, tools, top_logprobs,
                               openings=openings, max_tokens_param=max_tokens_param, **penalties)
        return self._collect(request)

    def stream(self, model: models.LoadedModel, messages: list[dict[str, Any]], *, max_tokens: int = 256,
               temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None,
               n: int = 1, tools: list[dict[str, Any]] | None = None, top_logprobs: int | None = None,
               openings: list[str] | None = None, max_tokens_param: str | None = None,
               **penalties: Any) -> Iterator[dict[str, Any]]:
        """Text deltas {index, text[, logprobs]} as they are decoded, then {index, finish_reason, prompt_tokens,
        completion_tokens[, logprobs]} (logprobs: the entries of the tokens not sent yet); the other parameters as
        in `complete`."""
        request = self._submit(model, messages, max_tokens, temperature, top_p, seed, stop, n, tools, top_logprobs,
                               openings=openings, max_tokens_param=max_tokens_param, **penalties)
        return self._pieces(request)

    def complete_many(self, model: models.LoadedModel, conversations: list[list[dict[str, Any]]],
                      **params: Any) -> list[list[Choice]]:
        """Answer many conversations at once (batched like concurrent requests); for scripts and benchmarks."""
        requests = [self._submit(model, messages, params.get("max_tokens", 256), params.get("temperature", 1.0),
                                 params.get("top_p", 1.0), params.get("seed"), params.get("stop"), params.get("n", 1),
                                 params.get("tools"), params.get("top_logprobs"),
                                 **{k: params[k] for k in PENALTIES if k in params})
                    for messages in conversations]
        return [self._collect(r) for r in requests]

    def close(self) -> None:
        """Stop the worker thread (pending requests get an error)."""
        with self._cond:
            self._closed = True
            for request in self._pending:
                request.out.put({"error": GenerationError("the generator was closed")})
            self._pending.clear()
            self._cond.notify_all()
        self._worker.join(timeout=10)

    # ---- requests ---------------------------------------------------------------------------

    def _submit(self, view: models.LoadedModel, messages: list[dict[str, Any]], max_tokens: int, temperature: float,
                top_p: float, seed: int | None, stop: list[str] | None, n: int,
                tools: list[dict[str, Any]] | None = None, top_logprobs: int | None = None,
                frequency_penalty: float | None = 0.0, presence_penalty: float | None = 0.0,
                logit_bias: dict[int, float] | None = None, openings: list[str] | None = None,
                max_tokens_param: str | None = None) -> _Request:
        """Check and queue a request."""
        import torch

        if n < 1 or max_tokens < 1:
            raise GenerationError(f"n and max_tokens must be at least 1 (got n={n}, max_tokens={max_tokens})")
        if tools and not models.supports_tools(view.tokenizer):
            raise GenerationError(f"the chat template of {view.model_id} cannot render tools; use a base model whose "
                                  f"template can ({', '.join(models.tool_model_ids())})", param="tools",
                                  code="tools_not_supported")
        prompt = models.encode_prompt(view.tokenizer, messages, tools)
        context = int(getattr(view.model.config, "max_position_embeddings", 2048) or 2048)
        room = context - len(prompt)
        if room < 1:
            raise GenerationError(f"the prompt has {len(prompt)} tokens; {view.model_id} reads at most {context - 1} "
                                  "(shorten the messages)")
        if max_tokens_param and max_tokens > room:
            raise GenerationError(*_limit_problem(max_tokens, max_tokens_param, len(prompt), context))
        vocab = int(getattr(view.model.config, "vocab_size", 0) or 0)
        outside = sorted(t for t in (logit_bias or {}) if vocab and not 0 <= int(t) < vocab)
        if outside:
            raise GenerationError(f"logit_bias names token id {outside[0]}, but {view.model_id} has token ids 0 to "
                                  f"{vocab - 1} only", param="logit_bias", code="invalid_value")
        request = _Request(view, prompt, float(temperature or 0.0), float(1.0 if top_p is None else top_p),
                           [s for s in (stop or []) if s], top_logprobs, float(frequency_penalty or 0.0),
                           float(presence_penalty or 0.0),
                           {int(t): float(b) for t, b in (logit_bias or {}).items()} or None, list(openings or []) or None)
        base_seed = secrets.randbits(62) if seed is None else int(seed)
        for i in range(n):
            rng = None
            if request.temperature > 0:
                rng = torch.Generator(device=view.device)
                rng.manual_seed((base_seed + i) % (2**63))
            request.rows.append(_Row(request, i, min(max_tokens, room), rng, opened=request.openings is None))
        with self._cond:
            if self._closed:
                raise GenerationError("the generator was closed")
            self._pending.append(request)
            self._cond.notify_all()
        return request

    def _collect(self, request: _Request) -> list[Choice]:
        """Wait for every choice of a request."""
        texts = {row.index: "" for row in request.rows}
        logprobs: dict[int, list[dict[str, Any]]] = {row.index: [] for row in request.rows}
        done: dict[int, Choice] = {}
        for piece in self._pieces(request):
            i = piece["index"]
            logprobs[i] += piece.get("logprobs") or []
            if "text" in piece:
                texts[i] += piece["text"]
            else:
                done[i] = Choice(i, texts[i], piece["finish_reason"],
                                 Usage(piece["prompt_tokens"], piece["completion_tokens"], piece.get("cached_tokens", 0)),
                                 logprobs[i] if request.top_logprobs is not None else None)
        return [done[i] for i in sorted(done)]

    def _pieces(self, request: _Request) -> Iterator[dict[str, Any]]:
        """The request's output queue until every choice finished; cancels the rows if the consumer goes away."""
        remaining = len(request.rows)
        try:
            while remaining:
                piece = request.out.get()
                if "error" in piece:
                    raise piece["error"]
                if "finish_reason" in piece:
                    remaining -= 1
                yield piece
        finally:
            request.cancelled = remaining > 0

    # ---- worker -----------------------------------------------------------------------------

    def _take_batch(self) -> list[_Request] | None:
        """The oldest request plus others for the same weights that arrive within the window."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            first = self._pending[0]
            deadline = time.monotonic() + self.window
            while True:
                same = [r for r in self._pending if r.view.key == first.view.key]
                rows = sum(len(r.rows) for r in same)
                left = deadline - time.monotonic()
                if rows >= self.max_batch or left <= 0:
                    break
                self._cond.wait(timeout=left)
            batch, total = [], 0
            for r in same:
                if batch and total + len(r.rows) > self.max_batch:
                    break
                batch.append(r)
                total += len(r.rows)
            for r in batch:
                self._pending.remove(r)
            return batch

    def _loop(self) -> None:
        """Worker thread: decode batches until closed."""
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._decode(batch)
            except Exception as exc:  # report to every waiting request, keep serving
                for request in batch:
                    request.out.put({"error": exc})
            # Drop the finished batch before waiting for the next: its requests hold their model, which would stay
            # in memory after ModelPool.release() until the next request arrived (benchmarks/README.md, "Memory").
            del batch

    def _admit(self, key: Any, room: int) -> list[_Row]:
        """Rows of waiting requests for the same weights that fit into a running batch (no waiting), taken off the queue."""
        if room <= 0:
            return []
        with self._cond:
            if self._pending and self._pending[0].view.key != key:
                return []  # the oldest waiting request needs other weights: let this batch drain, then serve it
            taken, rows = [], []
            for r in self._pending:
                if r.view.key == key and len(rows) + len(r.rows) <= room:
                    taken.append(r)
                    rows += r.rows
            for r in taken:
                self._pending.remove(r)
        return rows

    def _decode(self, batch: list[_Request]) -> None:
        """Generate every row of a batch of requests for the same weights; waiting requests for the same weights
        join between decode steps while there is room (continuous batching)."""
        import torch

        view = batch[0].view
        self.batches_run += 1
        state: _Batch | None = None
        joining = [row for request in batch for row in request.rows]
        with view.activated() as model, torch.no_grad():
            while True:
                if joining:
                    fresh = self._prefill(model, view, joining)
                    state = fresh if state is None else state.merged(fresh)
                if state is None or not state.rows:
                    return
                self.largest_batch = max(self.largest_batch, len(state.rows))
                state.mask = torch.cat([state.mask, state.mask.new_ones((len(state.rows), 1))], dim=1)
                out = model(input_ids=state.tokens[:, None], attention_mask=state.mask, position_ids=state.next_pos,
                            past_key_values=state.cache, use_cache=True)
                state.next_pos = state.next_pos + 1
                self._step(view, state, out.logits[:, -1, :].float())
                joining = self._admit(view.key, self.max_batch - len(state.rows)) if self.continuous else []
                self.rows_joined += len(joining)

    def _prefill(self, model: Any, view: models.LoadedModel, rows: list[_Row]) -> "_Batch":
        """Run the prompts of new rows and pick their first tokens; the rows still going, as one batch. Rows are
        prefilled in groups of similar prompt length (`length_groups`), so that short prompts are not padded to the
        longest one (padding costs as much compute as a real token)."""
        state: _Batch | None = None
        fresh_rows = []
        for row in rows:
            prefix, length = self.prefixes.lookup(view.key, row.request.prompt) if self.prefixes else (None, 0)
            if prefix is None:
                fresh_rows.append(row)
                continue
            self.prefixes.tokens_reused += length
            row.cached = length
            fresh = self._prefill_group(model, view, [row], (prefix, length))
            state = fresh if state is None else state.merged(fresh)
        for group in length_groups(fresh_rows, self.prefill_slack):
            fresh = self._prefill_group(model, view, group)
            state = fresh if state is None else state.merged(fresh)
        assert state is not None
        return state

    def _prefill_group(self, model: Any, view: models.LoadedModel, rows: list[_Row],
                       prefix: tuple[_Prefix, int] | None = None) -> "_Batch":
        """Run the prompts of new rows (left-padded) and pick their first tokens; the rows still going, as a batch.
        With `prefix` (a cached prompt and how many of its tokens to reuse; one row only), only the rest is run."""
        import torch

        tok = view.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(view.stop_ids))
        cache = new_cache(model.config)
        skip = 0
        if prefix is not None:
            entry, skip = prefix
            for i, (keys, values) in enumerate(entry.layers):
                cache.update(keys[:, :, :skip], values[:, :, :skip], i)  # copied into the layer's own buffer
        width = max(len(row.request.prompt) for row in rows) - skip
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), skip + width), dtype=torch.long)
        for r, row in enumerate(rows):
            prompt = row.request.prompt
            ids[r, width - len(prompt) + skip:] = torch.tensor(prompt[skip:])
            mask[r, skip + width - len(prompt):] = 1
        positions = ((mask.cumsum(-1) - 1).clamp(min=0))[:, skip:]
        ids, mask, positions = ids.to(view.device), mask.to(view.device), positions.to(view.device)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        if self.prefixes is not None:
            for r, row in enumerate(rows):
                prompt = row.request.prompt
                if self.prefixes.wants(view.key, prompt):
                    start = skip + width - len(prompt)
                    self.prefixes.store(view.key, prompt, [(layer.keys[r:r + 1, :, start:].clone(),
                                                            layer.values[r:r + 1, :, start:].clone())
                                                           for layer in cache.layers])
        state = _Batch(rows, cache, mask, positions[:, -1:] + 1, torch.zeros(len(rows), dtype=torch.long))
        self._step(view, state, out.logits[:, -1, :].float())
        return state

    def _step(self, view: models.LoadedModel, state: "_Batch", logits: Any) -> None:
        """Pick each row's next token from its logits, advance the rows, and drop the finished ones from the batch."""
        tokens = self._sample(self._constrained(self._penalised(logits, state.rows), state.rows, view.tokenizer), state.rows)
        entries = self._logprobs(logits, tokens, state.rows, view.tokenizer)
        for row, token, entry in zip(state.rows, tokens.tolist(), entries):
            if not row.opened:
                row.opening += piece_table(view.tokenizer).text.get(token, "")
                row.opened = any(row.opening.startswith(o) for o in row.request.openings or [])
            self._advance(row, token, view.stop_ids, view.tokenizer, entry)
        state.tokens = tokens
        keep = [i for i, row in enumerate(state.rows) if not row.done]
        if len(keep) < len(state.rows):
            state.select(keep)

    @staticmethod
    def _penalised(logits: Any, rows: list[_Row]) -> Any:
        """The logits to sample from: each row's logit_bias added, and count x frequency_penalty + presence_penalty
        subtracted for every token the row has generated (OpenAI's formula); `logits` itself when no row asks."""
        import torch

        out = None
        for r, row in enumerate(rows):
            request = row.request
            if not (request.logit_bias or (row.ids and (request.frequency_penalty or request.presence_penalty))):
                continue
            if out is None:
                out = logits.clone()
            if request.logit_bias:
                ids = torch.tensor(list(request.logit_bias), dtype=torch.long, device=out.device)
                out[r, ids] += torch.tensor(list(request.logit_bias.values()), dtype=out.dtype, device=out.device)
            if row.ids and (request.frequency_penalty or request.presence_penalty):
                seen, counts = torch.tensor(row.ids, device=out.device).unique(return_counts=True)
                out[r, seen] -= counts.to(out.dtype) * request.frequency_penalty + request.presence_penalty
        return logits if out is None else out

    @staticmethod
    def _constrained(logits: Any, rows: list[_Row], tokenizer: Any) -> Any:
        """The logits with every token masked out that cannot continue an opening the row's answer must still begin
        with (`request.openings`); `logits` itself when no row is bound to an opening."""
        out = None
        for r, row in enumerate(rows):
            if row.opened:
                continue
            table = piece_table(tokenizer)
            allowed = set().union(*(table.allowed(o[len(row.opening):], tokenizer) for o in row.request.openings or []
                                    if o.startswith(row.opening)))
            if not allowed:  # no token spells the opening (not so for byte-level vocabularies): let the model go on
                row.opened = True
                continue
            if out is None:
                out = logits.clone()
            keep = out[r, sorted(allowed)].clone()
            out[r] = float("-inf")
            out[r, sorted(allowed)] = keep
        return logits if out is None else out

    @staticmethod
    def _sample(logits: Any, rows: list[_Row]) -> Any:
        """One next token per row: greedy at temperature 0, else nucleus sampling with the row's seeded generator."""
        import torch

        tokens = logits.argmax(-1)
        for r, row in enumerate(rows):
            request = row.request
            if request.temperature <= 0:
                continue
            probs = torch.softmax(logits[r] / request.temperature, dim=-1)
            if request.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                outside = sorted_probs.cumsum(0) - sorted_probs > request.top_p  # keep the smallest set reaching top_p
                sorted_probs[outside] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            tokens[r] = torch.multinomial(probs, 1, generator=row.rng)[0]
        return tokens

    @staticmethod
    def _logprobs(logits: Any, tokens: Any, rows: list[_Row], tok: Any) -> list[dict[str, Any] | None]:
        """Per row, OpenAI's logprob entry of the chosen token (the model's own distribution, before temperature and
        top_p), or None for rows that did not ask for logprobs."""
        import torch

        from helpers.localapi.toolcalls import logprob_entry

        wanted = [r for r, row in enumerate(rows) if row.request.top_logprobs is not None]
        out: list[dict[str, Any] | None] = [None] * len(rows)
        if not wanted:
            return out
        logp = torch.log_softmax(logits[wanted], dim=-1)
        for j, r in enumerate(wanted):
            k = rows[r].request.top_logprobs or 0
            top = logp[j].topk(k) if k else None
            pairs = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
            token = int(tokens[r])
            out[r] = logprob_entry(tok, token, float(logp[j, token]), pairs)
        return out

    @staticmethod
    def _advance(row: _Row, token: int, stop_ids: set[int], tok: Any, entry: dict[str, Any] | None = None) -> None:
        """Add a token to a row: detect the end, cut stop strings, emit the safe part of the new text."""
        request = row.request
        finish = None
        if request.cancelled:
            finish = "stop"
        elif token in stop_ids:
            finish = "stop"
        else:
            row.ids.append(token)
            if entry is not None:
                row.logprobs.append(entry)
            row.text = tok.decode(row.ids, skip_special_tokens=True)
            cut = min((i for i in (row.text.find(s) for s in request.stop) if i >= 0), default=-1)
            if cut >= 0:
                row.text, finish = row.text[:cut], "stop"
            elif len(row.ids) >= row.max_tokens:
                finish = "length"
        if finish is None:
            safe = len(row.text.rstrip("\ufffd"))  # an incomplete multi-byte character decodes as U+FFFD
            for s in request.stop:
                for k in range(min(len(s) - 1, safe), 0, -1):
                    if row.text[:safe].endswith(s[:k]):
                        safe -= k
                        break
            if safe > row.emitted:
                request.out.put({"index": row.index, "text": row.text[row.emitted:safe], **Generator._new_logprobs(row)})
                row.emitted = safe
            return
        row.done = True
        final = row.text.rstrip("\ufffd")
        if len(final) > row.emitted:
            request.out.put({"index": row.index, "text": final[row.emitted:], **Generator._new_logprobs(row)})
            row.emitted = len(final)
        request.out.put({"index": row.index, "finish_reason": finish, "prompt_tokens": len(request.prompt),
                         "completion_tokens": len(row.ids), "cached_tokens": row.cached, **Generator._new_logprobs(row)})

    @staticmethod
    def _new_logprobs(row: _Row) -> dict[str, Any]:
        """{"logprobs": entries not sent yet} for a row that asked for logprobs, else {}."""
        if row.request.top_logprobs is None:
            return {}
        entries, row.logprobs_sent = row.logprobs[row.logprobs_sent:], len(row.logprobs)
        return {"logprobs": entries}


def _limit_problem(max_tokens: int, param: str, prompt_tokens: int, context: int) -> tuple[str, str, str]:
    """(message, param, code) of OpenAI's 400 for an explicit output limit that does not fit the model's context."""
    if max_tokens >= context:
        return (f"{param} is too large: {max_tokens}. This model supports at most {context - 1} completion tokens, "
                f"whereas you provided {max_tokens}.", param, "invalid_value")
    return (f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the completion). "
            f"Please reduce the length of the prompt or {param}.", param, "context_length_exceeded")


def naive_generate(view: models.LoadedModel, messages: list[dict[str, Any]], max_tokens: int) -> str:
    """Greedy `model.generate` on one question at a time: the baseline the benchmark compares against."""
    import torch

    prompt = models.encode_prompt(view.tokenizer, messages)
    with view.activated() as model, torch.no_grad():
        out = model.generate(torch.tensor([prompt], device=view.device), max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=sorted(view.stop_ids), pad_token_id=view.tokenizer.pad_token_id)
    return view.tokenizer.decode(out[0][len(prompt):], skip_special_tokens=True)

