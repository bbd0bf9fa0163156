"""Writing files atomically: the one way the workbook (client and server) writes a file.

Each function writes into a temporary file beside the target and renames it into place, so a reader
(a notebook, the server, a crash) sees the old file or the new one, never half of one. Text is UTF-8
with `\\n` line ends; JSON keeps Chinese characters as they are (`ensure_ascii=False`).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write bytes to path via a temporary file and a rename (file permissions `mode`); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write text as UTF-8 to path atomically; return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


def write_json_atomic(path: Path, data: Any, indent: int | None = 2) -> Path:
    """Write one JSON document (UTF-8, unescaped Chinese, a final newline) atomically; return the path."""
    return write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=indent) + "\n")
