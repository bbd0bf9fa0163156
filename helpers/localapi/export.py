"""Export a fine-tuned model of the local server, to run it outside the course (notebook 08 teaches it).

`python -m helpers.localapi export MODEL --format peft|merged|gguf --out DIR` calls `export_model`. MODEL is a
fine-tuned model id (`ft:<base>:local:<suffix>:<job>`) or one of its checkpoints (`…:ckpt-step-N`). Formats:

- `peft`: the LoRA adapter as transformers + peft load it (`PeftModel.from_pretrained(base, DIR)`), its
  `adapter_config.json` naming the base by its public hub id instead of this machine's folder, with the tokenizer
  and its chat template, and the training's hyperparameters (`training.json`).
- `merged`: the adapter merged into the base weights (`merge_and_unload`), a standalone float32 transformers folder
  (safetensors, config, tokenizer, chat template, `generation_config.json` whose `eos_token_id` lists the
  end-of-turn token) that `AutoModelForCausalLM.from_pretrained(DIR)` loads without peft.
- `gguf`: the adapter as a GGUF LoRA in llama.cpp's adapter format (`general.type = adapter`,
  `adapter.type = lora`, `adapter.lora.alpha`; tensors `blk.N.<name>.weight.lora_a` / `.lora_b`, named with
  gguf-py's tensor-name map), for the base GGUF it was trained on (referenced by path and sha256 in `export.json`,
  or copied beside it with `copy_base=True`), with an Ollama `Modelfile` (FROM the base, ADAPTER, the ChatML
  template of Qwen/SmolLM2, the end-of-turn stop tokens, the training's system prompt as default SYSTEM).

Every format writes a README.md (Chinese and English) on how to run what it wrote. Nothing is half-written:
the files go into a hidden staging folder beside DIR, renamed to DIR at the end; on any error the staging folder
is removed. An existing DIR is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from helpers.files import write_json_atomic, write_text_atomic
from helpers.localapi import heap, modelfiles, models
from helpers.localapi.storage import Storage

FORMATS = ("peft", "merged", "gguf")
ADAPTER_GGUF = "adapter.gguf"
# The public id of each built-in base, written where the trained adapter named this machine's converted folder.
# The adapters were trained on the GGUF's dequantised weights (Q4_K_M for Qwen): the README says so.
PORTABLE_BASE_IDS = {models.QWEN_MODEL: "Qwen/Qwen2.5-Coder-0.5B-Instruct",
                     models.DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}
# llama.cpp's converter reorders the rows of q and k for these architectures (rotary layout); LoRA B follows them
_PERMUTED_QK_ARCHS = {"llama"}


class ExportError(RuntimeError):
    """An export could not be made; the message names the model, format or folder and what to do."""


class UnknownModelError(ExportError):
    """The model id is not a model of this local server."""


class NotFineTunedError(ExportError):
    """The model id is a base model: there is no fine-tuned adapter to export."""


class NoBaseGGUFError(ExportError):
    """The fine-tuned model's base has no GGUF file for llama.cpp to apply the adapter to."""


class OutputExistsError(ExportError):
    """The output folder already exists (an export never overwrites)."""


class DiskFullError(ExportError):
    """The disk filled up while writing; nothing was left behind."""


@dataclass(frozen=True)
class ExportSource:
    """A fine-tuned model (or checkpoint) of the server: its base and the folder of its trained adapter."""

    model_id: str
    kind: str  # "fine-tune" or "checkpoint"
    base_model: str
    adapter_dir: Path
    job_id: str | None


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the folder, the format, each file's size, and the base GGUF it needs (gguf only)."""

    model_id: str
    format: str
    out: Path
    files: dict[str, int] = field(default_factory=dict)
    base_gguf: Path | None = None
    base_sha256: str | None = None


# ---- finding what to export ---------------------------------------------------------------------------------
def find_source(storage: Storage, model_id: str) -> ExportSource:
    """The fine-tuned model or checkpoint behind an id, or a clear error for unknown ids and base models."""
    if model_id in models.available_models():
        raise NotFineTunedError(
            f"{model_id} is a base model, not a fine-tuned one: there is no adapter to export. Export a fine-tuned "
            "model (ft:…) or one of its checkpoints; `client.models.list()` shows them.")
    row = storage.get_model(model_id)
    if row is None:
        known = [r["id"] for r in storage.list_models("fine-tune")]
        listed = ", ".join(known[-5:]) if known else "none yet (fine-tune one first, notebooks 04-05)"
        raise UnknownModelError(f"the local server has no model {model_id!r}; its fine-tuned models: {listed}")
    adapter_dir = Path(row["adapter_dir"])
    if not (adapter_dir / "adapter_config.json").is_file() or not (adapter_dir / "adapter_model.safetensors").is_file():
        raise ExportError(f"the adapter files of {model_id} are missing from the server's work folder; "
                          "delete the model and fine-tune it again")
    return ExportSource(model_id, row["kind"], row["base_model"], adapter_dir, row["job_id"])


def portable_base_id(base_model: str) -> str:
    """The id other tools know the base by: the hub id of a built-in base, else the server's own id."""
    if base_model in PORTABLE_BASE_IDS:
        return PORTABLE_BASE_IDS[base_model]
    spec = models.available_models().get(base_model)
    if spec is not None and spec.kind == "hf" and not Path(spec.source).is_absolute():
        return spec.source
    return Path(base_model).name or base_model


def training_system_prompt(storage: Storage, source: ExportSource) -> str:
    """The system prompt the model was fine-tuned with (its training file's first system message), else the course's."""
    from helpers.chatfmt import SYSTEM_PROMPT

    job = storage.get_job(source.job_id) if source.job_id else None
    path = storage.blob_path(job["training_file"]) if job else None
    if path is None or not path.is_file():
        return SYSTEM_PROMPT
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                messages = json.loads(line).get("messages") or []
            except (ValueError, AttributeError):
                continue
            for message in messages:
                if message.get("role") in ("system", "developer") and isinstance(message.get("content"), str):
                    return message["content"]
            break
    return SYSTEM_PROMPT


# ---- staging: write into a hidden folder beside the target, rename at the end -------------------------------
@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A staging folder that becomes `out` when the block succeeds and vanishes when it fails (disk full named)."""
    out = Path(out)
    if out.exists():
        raise OutputExistsError(f"the output folder {out} already exists; choose a new folder (an export never "
                                "overwrites one)")
    tmp: Path | None = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        yield tmp
        if out.exists():
            raise OutputExistsError(f"the output folder {out} appeared while exporting; nothing was written to it")
        os.rename(tmp, out)
        tmp = None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"the disk is full: the export to {out} could not be written and was removed; "
                                "free some space (or choose a folder on another disk) and export again") from None
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _sizes(folder: Path) -> dict[str, int]:
    """Each file of a folder and its size in bytes."""
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


# ---- the three formats ------------------------------------------------------------------------------------
def export_model(storage: Storage, model_id: str, fmt: str, out: Path, copy_base: bool = False) -> ExportResult:
    """Export a fine-tuned model or checkpoint of the server as `peft`, `merged` or `gguf` into the new folder `out`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    source = find_source(storage, model_id)
    out = Path(out).expanduser().absolute()
    if out.exists():
        raise OutputExistsError(f"the output folder {out} already exists; choose a new folder (an export never "
                                "overwrites one)")
    cache_dir = storage.models_dir
    if fmt == "gguf":
        base_path, base_sha = base_gguf(source.base_model, cache_dir)
        system = training_system_prompt(storage, source)
        with staged_folder(out) as tmp:
            write_gguf_export(source, tmp, base_path, base_sha, system, cache_dir, copy_base)
        copied = out / base_path.name
        return ExportResult(model_id, fmt, out, _sizes(out), copied if copy_base else base_path, base_sha)
    with staged_folder(out) as tmp:
        (write_peft_export if fmt == "peft" else write_merged_export)(source, tmp, cache_dir)
    if fmt == "merged":  # its float32 model is gone: give its pages back before the next model loads
        gc.collect()
        heap.trim()
    return ExportResult(model_id, fmt, out, _sizes(out))


def _training_info(source: ExportSource) -> dict[str, Any]:
    """What the adapter's train_meta.json says about its training (no paths), plus where it came from."""
    meta_path = source.adapter_dir / "train_meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    keep = {k: meta[k] for k in ("epoch", "step", "hyperparameters", "metrics", "trained_tokens") if k in meta}
    return {"model": source.model_id, "kind": source.kind, "base_model": source.base_model,
            "base_model_public_id": portable_base_id(source.base_model), **keep}


def portable_adapter_config(adapter_dir: Path, base_model: str) -> dict[str, Any]:
    """The adapter's peft config with the base named by its portable id (not this machine's folder)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = portable_base_id(base_model)
    return config


def write_peft_export(source: ExportSource, folder: Path, cache_dir: Path) -> None:
    """Write the PEFT adapter, its portable config, the tokenizer with its chat template and a README into `folder`."""
    shutil.copyfile(source.adapter_dir / "adapter_model.safetensors", folder / "adapter_model.safetensors")
    write_json_atomic(folder / "adapter_config.json", portable_adapter_config(source.adapter_dir, source.base_model))
    models.load_tokenizer(source.base_model, cache_dir).save_pretrained(folder)
    write_json_atomic(folder / "training.json", _training_info(source))
    write_text_atomic(folder / "README.md", peft_readme(source))


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The ids that end an assistant turn, the template's end-of-turn token first (what generation_config lists)."""
    ids = sorted(models.stop_token_ids(tokenizer))
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return [eot] + [i for i in ids if i != eot] if eot in ids else ids


def write_merged_export(source: ExportSource, folder: Path, cache_dir: Path) -> None:
    """Merge the adapter into the float32 base and write a standalone transformers model folder into `folder`."""
    loaded = models.load_model(source.base_model, cache_dir, source.adapter_dir, device="cpu", dtype="float32")
    merged = loaded.model.merge_and_unload()
    merged.config.name_or_path = portable_base_id(source.base_model)
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    tok = loaded.tokenizer
    eos = end_of_turn_ids(tok)
    merged.config.eos_token_id = eos[0]
    merged.generation_config.eos_token_id = eos
    merged.generation_config.pad_token_id = tok.pad_token_id
    merged.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    write_json_atomic(folder / "training.json", _training_info(source))
    write_text_atomic(folder / "README.md", merged_readme(source))


# ---- GGUF ---------------------------------------------------------------------------------------------------
def base_gguf(base_model: str, cache_dir: Path) -> tuple[Path, str]:
    """The verified GGUF file of a base model and its sha256, or NoBaseGGUFError."""
    spec = models.available_models().get(base_model)
    if spec is None or spec.kind != "gguf":
        have = ", ".join(s.id for s in models.available_models().values() if s.kind == "gguf")
        raise NoBaseGGUFError(f"the base model {base_model} has no GGUF file, so llama.cpp has nothing to apply the "
                              f"adapter to; --format gguf works for fine-tunes of {have}. Use --format peft or merged.")
    try:
        folder, name = models.gguf_location(spec, cache_dir)
    except models.ModelError as exc:
        raise NoBaseGGUFError(f"the GGUF file of {base_model} is not available: {exc}") from None
    path = folder / name
    if name == modelfiles.QWEN_GGUF.name:
        return path, modelfiles.QWEN_GGUF.sha256  # ensure_file checked it against this sha256
    return path, modelfiles.file_digest(path)[1]


@dataclass(frozen=True)
class GGUFArch:
    """What the adapter needs to know of the base GGUF: architecture name, blocks, attention heads."""

    name: str
    blocks: int
    heads: int
    kv_heads: int


def read_gguf_arch(path: Path) -> GGUFArch:
    """The architecture fields of a GGUF file's metadata (memory-mapped; the weights are not read)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def value(key: str) -> Any:
        found = reader.get_field(key)
        if found is None:
            raise NoBaseGGUFError(f"{path.name} has no {key} in its metadata: not a model GGUF")
        return found.contents()

    arch = value("general.architecture")
    heads = int(value(f"{arch}.attention.head_count"))
    kv = reader.get_field(f"{arch}.attention.head_count_kv")
    return GGUFArch(arch, int(value(f"{arch}.block_count")), heads, int(kv.contents()) if kv is not None else heads)


def lora_tensor_pairs(adapter_dir: Path) -> dict[str, tuple[Any, Any]]:
    """The adapter's (A, B) weights by the base weight's transformers name (`model.layers.0.self_attn.q_proj.weight`)."""
    from safetensors.torch import load_file

    pairs: dict[str, list[Any]] = {}
    for name, tensor in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        if ".lora_A." in name or ".lora_B." in name:
            base = name.removeprefix("base_model.model.").replace(".lora_A.", ".").replace(".lora_B.", ".")
            pairs.setdefault(base, [None, None])[0 if ".lora_A." in name else 1] = tensor
        else:
            raise ExportError(f"the adapter holds a tensor llama.cpp's LoRA format cannot carry: {name}")
    missing = [n for n, (a, b) in pairs.items() if a is None or b is None]
    if missing:
        raise ExportError(f"the adapter is incomplete (A or B missing for {missing[0]}); fine-tune it again")
    return {n: (a, b) for n, (a, b) in pairs.items()}


def _permute_rows(rows: Any, heads: int) -> Any:
    """llama.cpp's reordering of q/k rows (each head's two rotary halves interleaved), applied to LoRA B."""
    out, rank = rows.shape
    return rows.reshape(heads, 2, out // heads // 2, rank).swapaxes(1, 2).reshape(out, rank)


def write_gguf_adapter(adapter_dir: Path, arch: GGUFArch, target: Path) -> int:
    """Write the PEFT adapter as a GGUF LoRA (float32) for the architecture `arch`; the number of tensors written."""
    import gguf

    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern") or config.get("use_dora"):
        raise ExportError("the adapter uses rsLoRA, DoRA or per-layer ranks, which llama.cpp's LoRA format cannot carry")
    arch_ids = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch.name not in arch_ids:
        raise NoBaseGGUFError(f"gguf-py does not know the architecture {arch.name!r} of the base GGUF")
    names = gguf.get_tensor_name_map(arch_ids[arch.name], arch.blocks)
    writer = gguf.GGUFWriter(str(target), arch.name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    count = 0
    for hf_name, (a, b) in lora_tensor_pairs(adapter_dir).items():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"no llama.cpp tensor name for {hf_name} in architecture {arch.name}")
        lora_a, lora_b = a.float().numpy(), b.float().numpy()
        if arch.name in _PERMUTED_QK_ARCHS and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            lora_b = _permute_rows(lora_b, arch.heads if "q_proj" in hf_name else arch.kv_heads)
        writer.add_tensor(f"{gguf_name}.lora_a", lora_a)
        writer.add_tensor(f"{gguf_name}.lora_b", lora_b)
        count += 2
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return count


def stop_strings(tokenizer: Any) -> list[str]:
    """The end-of-turn / end-of-text tokens as text, for Ollama's `stop` parameters."""
    return [tokenizer.convert_ids_to_tokens(i) for i in end_of_turn_ids(tokenizer)]


# Ollama's Go template for ChatML, as Qwen2.5's and SmolLM2's templates render a conversation without tools:
# the system prompt, each user/assistant turn between <|im_start|>ROLE and <|im_end|>, then the assistant header.
OLLAMA_CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""


def modelfile_text(base_ref: str, system: str, stops: list[str]) -> str:
    """An Ollama Modelfile: FROM the base GGUF, ADAPTER the GGUF LoRA, the chat template, stop tokens, SYSTEM."""
    quoted = system.replace('"""', "'''")
    lines = [f"FROM {base_ref}", f"ADAPTER ./{ADAPTER_GGUF}", f'TEMPLATE """{OLLAMA_CHATML_TEMPLATE}"""']
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines += ["PARAMETER temperature 0", f'SYSTEM """{quoted}"""']
    return "\n".join(lines) + "\n"


def write_gguf_export(source: ExportSource, folder: Path, base_path: Path, base_sha: str, system: str,
                      cache_dir: Path, copy_base: bool) -> None:
    """Write adapter.gguf, the Modelfile, export.json and the README (and a copy of the base when asked) into `folder`."""
    arch = read_gguf_arch(base_path)
    n_tensors = write_gguf_adapter(source.adapter_dir, arch, folder / ADAPTER_GGUF)
    if copy_base:
        shutil.copyfile(base_path, folder / base_path.name)
        if modelfiles.file_digest(folder / base_path.name)[1] != base_sha:
            raise ExportError(f"the copy of {base_path.name} does not match its sha256; export again")
    base_ref = f"./{base_path.name}" if copy_base else str(base_path)
    tok = models.load_tokenizer(source.base_model, cache_dir)
    stops = stop_strings(tok)
    write_text_atomic(folder / "Modelfile", modelfile_text(base_ref, system, stops))
    manifest = {"model": source.model_id, "format": "gguf", "adapter": ADAPTER_GGUF, "tensors": n_tensors,
                "architecture": arch.name, "base_model": source.base_model,
                "base_model_public_id": portable_base_id(source.base_model),
                "base_gguf": {"file": base_path.name, "path": base_ref, "sha256": base_sha,
                              "bytes": base_path.stat().st_size, "copied": copy_base},
                "stop": stops, "system_prompt": system, "training": _training_info(source)}
    write_json_atomic(folder / "export.json", manifest)
    write_text_atomic(folder / "README.md", gguf_readme(source, base_ref, base_sha, system))


# ---- READMEs (Chinese, then English) ------------------------------------------------------------------------
def peft_readme(source: ExportSource) -> str:
    """How to load the PEFT export."""
    hub = portable_base_id(source.base_model)
    code = (f"```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'base = AutoModelForCausalLM.from_pretrained("{hub}")\n'
            f'model = PeftModel.from_pretrained(base, "PATH/TO/THIS/FOLDER")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")\n'
            f"merged = model.merge_and_unload()  # optional: one plain transformers model\n```\n")
    return (f"# {source.model_id} — LoRA 适配器（PEFT）\n\n"
            f"本文件夹是本地服务器微调得到的 LoRA 适配器（adapter），基座模型（base model）为 `{hub}`。"
            f"适配器在基座 GGUF 反量化后的权重上训练；在原版权重上加载也能用，但回答可能与本地服务器略有不同。\n\n"
            f"{code}\n"
            f"`training.json` 记录训练的超参数；`chat_template.jinja` 是对话模板。\n\n"
            f"## English\n\nThe LoRA adapter of `{source.model_id}`, fine-tuned by the workbook's local server on "
            f"`{hub}` (on the dequantised weights of its GGUF file: with the original weights it works too, with "
            f"slightly different answers). Load it with transformers + peft as above; `training.json` holds the "
            f"hyperparameters, `chat_template.jinja` the chat template.\n")


def merged_readme(source: ExportSource) -> str:
    """How to load the merged export."""
    code = ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            'model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/FOLDER")\n'
            'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER")\n'
            'ids = tokenizer.apply_chat_template([{"role": "user", "content": "..."}], add_generation_prompt=True,\n'
            '                                    return_tensors="pt")\n'
            "out = model.generate(ids, max_new_tokens=256)  # stops at <|im_end|> (generation_config.json)\n```\n")
    return (f"# {source.model_id} — 合并后的完整模型\n\n"
            f"LoRA 适配器已合并进基座权重（`merge_and_unload`），不需要 peft，直接用 transformers 加载：\n\n{code}\n"
            f"权重为 float32；`generation_config.json` 把回合结束词元 `<|im_end|>` 设为 `eos_token_id`，生成会自己停下。\n\n"
            f"## English\n\n`{source.model_id}` with its LoRA adapter merged into the base weights: a standalone "
            f"float32 transformers model (no peft needed), loaded as above. `generation_config.json` lists the "
            f"end-of-turn token as `eos_token_id`, so generation stops at the end of the answer.\n")


def gguf_readme(source: ExportSource, base_ref: str, base_sha: str, system: str) -> str:
    """How to run the GGUF export with llama.cpp and with Ollama."""
    short = system if len(system) <= 60 else system[:60] + "…"
    llama = (f"```bash\nllama-cli -m {base_ref} --lora ./{ADAPTER_GGUF} -sys \"{short}\" -cnv --temp 0\n"
             f"llama-server -m {base_ref} --lora ./{ADAPTER_GGUF} --port 8080   # OpenAI-compatible: http://127.0.0.1:8080/v1\n```\n")
    ollama = "```bash\nollama create my-doctor -f Modelfile\nollama run my-doctor \"高血压怎么治疗？\"\n```\n"
    return (f"# {source.model_id} — GGUF LoRA 适配器（llama.cpp / Ollama）\n\n"
            f"- `{ADAPTER_GGUF}`：LoRA 适配器，llama.cpp 的 GGUF 格式（float32），加载时叠加在基座上；\n"
            f"- 基座 GGUF：`{base_ref}`（sha256 `{base_sha}`），适配器就是在它反量化后的权重上训练的；\n"
            f"- `Modelfile`：Ollama 的模型描述（FROM 基座、ADAPTER 适配器、对话模板、停止词元、默认系统提示）；\n"
            f"- `export.json`：以上信息的机器可读版本。\n\n"
            f"用 llama.cpp 运行（`-sys` 后面填完整的系统提示，见 `export.json` 的 `system_prompt`）：\n\n{llama}\n"
            f"用 Ollama 运行（在本文件夹里执行）：\n\n{ollama}\n"
            f"回答在回合结束词元 `<|im_end|>` 处自己停下。\n\n"
            f"## English\n\n`{ADAPTER_GGUF}` is the LoRA adapter of `{source.model_id}` in llama.cpp's GGUF adapter "
            f"format; it applies at load time to the base GGUF `{base_ref}` (sha256 `{base_sha}`), the file it was "
            f"trained on (dequantised). Run it with llama.cpp (give `-sys` the full system prompt from `export.json`):\n\n"
            f"{llama}\nor with Ollama, from this folder:\n\n{ollama}\n"
            f"The `Modelfile` has the chat template, the stop tokens and the training's system prompt as default "
            f"SYSTEM; answers stop at the end-of-turn token `<|im_end|>`.\n")
