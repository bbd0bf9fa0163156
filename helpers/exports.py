"""Notebook 08: take the fine-tuned model home — export it through the local server, and check what was exported.

The export itself is the local server's `POST /v1/local/export` (helpers/localapi/export.py), which notebook 08
calls with the SDK in a cell. Here: where each export goes and the find-or-reuse that makes re-running the
notebook safe (`export_once`), what a folder holds (`files_table`), and the two checks the lesson shows —
the merged model against base + adapter in transformers (`merged_against_adapter`), and llama.cpp's greedy
answers against the local server's (`opening_agreement`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.config import Config, display_path
from helpers.localapi import heap
from helpers.workflow import load_state, update_state

MANIFESTS = {"peft": "training.json", "merged": "training.json", "gguf": "export.json"}  # each names its model


class ExportCheckError(RuntimeError):
    """An export folder that cannot be reused, or a check that could not run; the message says what to do."""


def export_folder(cfg: Config, fmt: str) -> Path:
    """Where notebook 08 puts an export of this format: the work folder's `exports/<format>`."""
    return cfg.work_dir / "exports" / fmt


def exported_model(folder: Path, fmt: str) -> str | None:
    """The model id an existing export folder was made from (its manifest), or None when there is no export there."""
    manifest = folder / MANIFESTS[fmt]
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text(encoding="utf-8")).get("model")


def export_once(cfg: Config, model: str, fmt: str, export: Callable[[Path], Any]) -> tuple[Path, bool]:
    """Notebook 08: (folder, reused): reuse this model's export in its folder, else call `export(folder)` once."""
    folder = export_folder(cfg, fmt)
    found = exported_model(folder, fmt)
    if found == model:
        return folder, True
    if folder.exists():
        raise ExportCheckError(f"{display_path(folder)} holds an export of {found or 'something else'}, not of {model}; "
                               "delete that folder (or move it away) and run this cell again")
    export(folder)
    update_state(cfg, exports={fmt: {"model": model, "folder": display_path(folder)}})
    return folder, False


def recorded_exports(cfg: Config) -> dict[str, dict[str, str]]:
    """The exports notebook 08 made, as recorded in run_state.json."""
    return load_state(cfg).get("exports", {})


def files_table(folder: Path) -> pd.DataFrame:
    """Each file of an export folder with its size in MB, largest first."""
    rows = [{"文件": p.name, "大小（MB）": round(p.stat().st_size / 1e6, 2)} for p in Path(folder).iterdir() if p.is_file()]
    return pd.DataFrame(rows).sort_values("大小（MB）", ascending=False).reset_index(drop=True)


@dataclass(frozen=True)
class MergeCheck:
    """The merged model against base + adapter on the same prompts: logits and greedy answers."""

    max_logit_difference: float  # the largest absolute difference of any next-token logit at any prompt position
    same_answers: int  # prompts whose greedy answers are token for token the same
    n_prompts: int
    answers_merged: list[str]
    answers_adapter: list[str]

    def lines(self) -> list[str]:
        """The check's result in Chinese."""
        return [f"最大的 logit 差：{self.max_logit_difference:.2e}（{self.n_prompts} 个提示的每个位置、每个词元）",
                f"贪心回答逐词元相同：{self.same_answers} / {self.n_prompts}"]


def _greedy_and_logits(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> tuple[list, list[str]]:
    """Each prompt's logits (float32) and greedy answer text from a transformers model."""
    import torch

    logits, answers = [], []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            logits.append(model(**ids).logits[0].float())
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
            answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return logits, answers


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No progress bars and no library deprecation warnings while models load (a cell shows the check, not the noise)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def merged_against_adapter(base_folder: Path, peft_folder: Path, merged_folder: Path, prompts: Sequence[str],
                           max_new_tokens: int = 48) -> MergeCheck:
    """Load the merged folder with plain transformers, then the base with the exported PEFT adapter, one after the
    other (never both in memory), and compare their logits and greedy answers on the same prompts."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged_folder)
    with quiet_loading():
        merged = AutoModelForCausalLM.from_pretrained(merged_folder, dtype="float32")
        merged_logits, merged_answers = _greedy_and_logits(merged, tokenizer, prompts, max_new_tokens)
        del merged
        gc.collect()
        base = AutoModelForCausalLM.from_pretrained(base_folder, dtype="float32")
        adapted = PeftModel.from_pretrained(base, peft_folder)
        adapter_logits, adapter_answers = _greedy_and_logits(adapted, tokenizer, prompts, max_new_tokens)
        del adapted, base
        gc.collect()
    heap.trim()  # hand the freed weights back to the system: the server loads the model again next (issue 17)
    diff = max(float((a - b).abs().max()) for a, b in zip(merged_logits, adapter_logits))
    same = sum(a == b for a, b in zip(merged_answers, adapter_answers))
    return MergeCheck(diff, same, len(prompts), merged_answers, adapter_answers)


def common_prefix_tokens(tokenizer: Any, a: str, b: str) -> int:
    """How many opening tokens two answers share (counted with the model's tokenizer)."""
    x = tokenizer(a, add_special_tokens=False)["input_ids"]
    y = tokenizer(b, add_special_tokens=False)["input_ids"]
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
        n += 1
    return n


def opening_agreement(tokenizer: Any, questions: Sequence[str], server: Sequence[str], with_adapter: Sequence[str],
                      without_adapter: Sequence[str], chars: int = 40) -> pd.DataFrame:
    """Notebook 08's llama.cpp table: per question, the server's answer, llama.cpp's with and without the adapter,
    and how many opening tokens each shares with the server's."""
    rows = []
    for q, s, w, wo in zip(questions, server, with_adapter, without_adapter):
        rows.append({"问题": q[:chars], "本地服务器（微调模型）": s[:chars], "llama.cpp + 适配器": w[:chars],
                     "相同的开头词元（有适配器）": common_prefix_tokens(tokenizer, s, w),
                     "llama.cpp，不加适配器": wo[:chars],
                     "相同的开头词元（无适配器）": common_prefix_tokens(tokenizer, s, wo)})
    return pd.DataFrame(rows)


def _field(entry: Any, name: str) -> Any:
    """A field of a logprobs entry, from the SDK's object or a plain dict."""
    return entry[name] if isinstance(entry, dict) else getattr(entry, name)


def _text(pieces: Sequence[bytes]) -> str:
    """Tokens' bytes as text (a character cut between tokens shows as U+FFFD)."""
    return b"".join(pieces).decode("utf-8", errors="replace")


def parting_table(tokenizer: Any, questions: Sequence[str], server_logprobs: Sequence[Sequence[Any]],
                  llama_tokens: Sequence[Sequence[int]], chars: int = 20) -> pd.DataFrame:
    """Notebook 08: where llama.cpp's greedy answer first differs from the server's, token by token, and how sure
    the server was there: its log-probability for its own token and for llama.cpp's (from `top_logprobs`; None
    when llama.cpp's token is not among them), and their difference. Questions whose answers never differ are left out.

    `server_logprobs` holds each answer's `choices[0].logprobs.content` (the server's own tokens); `llama_tokens`
    llama.cpp's token ids for the same questions.
    """
    from helpers.localapi.toolcalls import token_bytes  # a token's UTF-8 bytes, as the API's `bytes` field has them

    rows = []
    for question, entries, ids in zip(questions, server_logprobs, llama_tokens):
        mine = [bytes(token_bytes(tokenizer, t)) for t in ids]
        k = next((i for i, (e, b) in enumerate(zip(entries, mine)) if bytes(_field(e, "bytes")) != b), None)
        if k is None:
            continue
        entry = entries[k]
        theirs = next((float(_field(t, "logprob")) for t in _field(entry, "top_logprobs")
                       if bytes(_field(t, "bytes")) == mine[k]), None)
        server_bytes = [bytes(_field(e, "bytes")) for e in entries]
        rows.append({"问题": question[:chars], "分开的位置（第几个词元）": k + 1,
                     "相同的开头": _text(server_bytes[:k]),
                     "服务器接着写": _text(server_bytes[k:k + 4]), "服务器给自己这个词元的对数概率": float(_field(entry, "logprob")),
                     "llama.cpp 接着写": _text(mine[k:k + 4]),
                     "服务器给 llama.cpp 这个词元的对数概率": theirs,
                     "相差": None if theirs is None else float(_field(entry, "logprob")) - theirs})
    return pd.DataFrame(rows)


def require_local(cfg: Config) -> None:
    """Notebook 08 runs on the local backend only: OpenAI never hands out a fine-tuned model's weights."""
    if not cfg.is_local:
        raise ExportCheckError(
            "第 08 节只能在本地后端上运行：OpenAI 不提供微调后模型的权重，只能通过它的 API 调用。"
            "在 OpenAI 上，你能带走的是训练数据（train.jsonl、valid.jsonl）和结果文件；想要能带回家的模型，"
            "就用本地后端，或者用开源工具（如 transformers + peft）在同样的数据上自己训练。")


def base_folder(cfg: Config) -> Path:
    """The base model's transformers folder on this machine (the float32 weights the adapter was trained on)."""
    from helpers.localapi import models  # the model registry: which files a local base model is (no server state)

    return Path(models.ensure_converted(cfg.base_model, cfg.localapi_dir / "models"))


def gguf_problem(cfg: Config) -> str | None:
    """Why this run cannot export to GGUF and run llama.cpp (in Chinese), or None when it can."""
    from helpers.llamacpp import runtime_problem
    from helpers.localapi import models

    spec = models.available_models().get(cfg.base_model)
    if spec is None or spec.kind != "gguf":
        return f"基础模型 {cfg.base_model} 没有 GGUF 文件，llama.cpp 没有可以叠加适配器的底座（测试用的 tiny-test 就是这样）"
    problem = runtime_problem()
    return None if problem is None else f"llama.cpp 运行时不可用：{problem}"


def chat_prompts(tokenizer: Any, system: str, questions: Sequence[str]) -> list[str]:
    """The questions rendered with the model's chat template, ready for the assistant's answer (what the server sends)."""
    return [tokenizer.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": q}],
                                          tokenize=False, add_generation_prompt=True) for q in questions]


def gguf_base_file(folder: Path) -> Path:
    """The base GGUF a GGUF export applies its adapter to (beside it when copied, else where export.json says)."""
    manifest = json.loads((Path(folder) / "export.json").read_text(encoding="utf-8"))["base_gguf"]
    copied = Path(folder) / manifest["file"]
    return copied if copied.is_file() else Path(manifest["path"])
