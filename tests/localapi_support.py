"""Test support for the local API: run the real server as a separate process on a free port.

Tests talk to it only through the official `openai` SDK, httpx or curl, never by calling handlers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openai import OpenAI

from helpers.config import REPO_ROOT
from helpers.net import free_port

__all__ = ["KEY", "MODEL_CACHE", "Server", "chat_line", "free_port", "write_chat_jsonl", "write_preference_jsonl"]

KEY = "test-key-" + "x" * 16
# one converted-model cache for every test server of a session (the tiny model's tokenizer converts once)
MODEL_CACHE = Path(os.environ.get("LOCALAPI_TEST_MODEL_CACHE") or Path(tempfile.gettempdir()) / "localapi-test-model-cache")


@dataclass
class Server:
    """A local API server process started by a test."""

    work_dir: Path
    port: int
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "server-test.log"

    def start(self, timeout: float = 180.0) -> "Server":
        """Start `python -m helpers.localapi serve` and wait for /health."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "LOCALAPI_KEY": KEY, "LOCALAPI_MODEL_CACHE": str(MODEL_CACHE),
               "LOCALAPI_LOG_LEVEL": "info"}
        for name in ("LOCALAPI_FAULTS", "LOCALAPI_LATENCY", "LOCALAPI_MAX_UPLOAD_BYTES", "WORKBOOK_WORK_DIR"):
            env.pop(name, None)
        cmd = [sys.executable, "-m", "helpers.localapi", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--work-dir", str(self.work_dir), *self.args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop the server process (SIGTERM: graceful; SIGKILL: a crash)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        """The server's output so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def client(self, **kwargs) -> OpenAI:
        """An official SDK client for this server."""
        opts = {"timeout": 60.0, "max_retries": 0, **kwargs}
        return OpenAI(base_url=self.base_url, api_key=KEY, **opts)


def chat_line(question: str, answer: str, system: str | None = "你是一名医生。") -> str:
    """One line of a chat fine-tuning JSONL."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": messages}, ensure_ascii=False)


def write_chat_jsonl(path: Path, n: int, offset: int = 0) -> Path:
    """A small, valid chat fine-tuning file with `n` examples."""
    lines = [chat_line(f"问题{i}：血压130/80算高吗？", f"回答{i}：这属于正常高值，建议定期复查。") for i in range(offset, offset + n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_preference_jsonl(path: Path, n: int, offset: int = 0) -> Path:
    """A small, valid preference (DPO) file with `n` pairs: a doctor's answer preferred to a curt one."""
    lines = [json.dumps({"input": {"messages": [{"role": "system", "content": "你是一名医生。"},
                                                {"role": "user", "content": f"问题{i}：血压130/80算高吗？"}]},
                         "preferred_output": [{"role": "assistant", "content": f"回答{i}：这属于正常高值，建议定期复查。"}],
                         "non_preferred_output": [{"role": "assistant", "content": "不知道。"}]}, ensure_ascii=False)
             for i in range(offset, offset + n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
