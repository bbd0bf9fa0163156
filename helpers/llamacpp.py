"""Run a GGUF model (with a GGUF LoRA adapter) in a real llama.cpp runtime: greedy answers, for notebook 08 and tests.

The runtime is node-llama-cpp 3.21.1 with its prebuilt linux-x64 CPU binaries, installed from the npm registry
into `helpers/llamacpp_runtime/node_modules` by `make setup` (`npm ci`, about 10 s; nothing is compiled). A small script,
`helpers/llamacpp_runtime/generate.mjs`, loads the base GGUF, applies the adapter the way `llama-cli --lora` does, and
decodes greedily until an end-of-generation token or `max_tokens`. This module only starts that script: it knows
nothing of the local server and is as usable on a GGUF exported anywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


RUNTIME_DIR = Path(__file__).resolve().parent / "llamacpp_runtime"
SCRIPT = RUNTIME_DIR / "generate.mjs"
INSTALL_HINT = "install it with `make setup` (or: npm ci --prefix helpers/llamacpp_runtime --omit=optional --ignore-scripts)"


class LlamaCppError(RuntimeError):
    """The llama.cpp runtime is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class LlamaAnswer:
    """One greedy answer: its token ids (llama.cpp's, the same vocabulary as the model's), text, and how it ended."""

    tokens: list[int]
    text: str
    stopped: bool  # True when generation ended at an end-of-generation token (end of turn), not at max_tokens


def runtime_problem() -> str | None:
    """Why the llama.cpp runtime cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js (`node`) is not installed; the llama.cpp runtime runs on it (Debian package nodejs)"
    if not (RUNTIME_DIR / "node_modules" / "node-llama-cpp").is_dir():
        return f"the llama.cpp runtime (node-llama-cpp) is not installed; {INSTALL_HINT}"
    return None


def greedy(model: Path, prompts: list[str | list[int]], adapter: Path | None = None, max_tokens: int = 64,
           context_size: int = 1024, threads: int | None = None, timeout: float = 900.0) -> list[LlamaAnswer]:
    """Greedy answers of a GGUF model (plus a GGUF LoRA adapter) to prompts: text rendered with the chat template
    (special tokens are parsed) or token ids; one model load for all prompts."""
    problem = runtime_problem()
    if problem:
        raise LlamaCppError(problem)
    for what, path in (("model", model), ("adapter", adapter)):
        if path is not None and not Path(path).is_file():
            raise LlamaCppError(f"the {what} file {Path(path).name} does not exist")
    request = {"model": str(Path(model).resolve()), "lora": str(Path(adapter).resolve()) if adapter else None,
               "prompts": prompts, "maxTokens": max_tokens, "contextSize": context_size,
               "threads": threads or int(os.environ.get("LOCALAPI_TORCH_THREADS") or os.cpu_count() or 1)}
    try:
        done = subprocess.run(["node", str(SCRIPT)], input=json.dumps(request, ensure_ascii=False),
                              capture_output=True, text=True, encoding="utf-8", cwd=RUNTIME_DIR, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LlamaCppError(f"llama.cpp did not answer {len(prompts)} prompt(s) within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise LlamaCppError(f"llama.cpp failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    try:
        answers = json.loads(done.stdout)["answers"]
    except (ValueError, KeyError):
        raise LlamaCppError(f"llama.cpp wrote no answers: {done.stdout[-500:]!r} {done.stderr[-1500:]}") from None
    return [LlamaAnswer(list(a["tokens"]), a["text"], bool(a["stopped"])) for a in answers]
