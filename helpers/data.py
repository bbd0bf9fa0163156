"""Loading the Huatuo-26M test set (the vendored copy, the synthetic fixture, a local JSONL, or the hub) and reading/writing JSONL files.

Taught in notebook 01 (`load_huatuo`); notebooks 02 and 03 read and write their files with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.config import HUATUO_HUB_ID, VENDORED_PATH, VENDORED_SHA256, Config
from helpers.config import display_path as shown_path  # notebook 03 names paths with it
from helpers.files import write_text_atomic

FIELDS = ("questions", "answers")
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark: accepted at the start of a data file


class DataError(ValueError):
    """A data file is missing or a row does not have the Huatuo schema; the message names file and line."""


SOURCE_LABELS = {"vendored": "仓库自带的副本（vendored）", "fixture": "合成的测试数据（fixture）", "path": "HUATUO_PATH 指定的文件",
                 "hub": "Hugging Face"}  # Dataset.describe's words for each source


@dataclass(frozen=True)
class Dataset:
    """The rows of the Huatuo test set as loaded, and where they came from."""

    rows: list[dict[str, str]]
    source: str  # "vendored", "fixture", "path" or "hub"
    origin: str  # the file path or the hub id
    blank_lines: int = 0  # blank lines in the file (not rows; shown so that nothing disappears unseen)

    def describe(self) -> str:
        """Notebook 01, in Chinese: how many rows from where (and how many blank lines were skipped)."""
        source = SOURCE_LABELS.get(self.source, self.source)
        blank = f"（跳过 {self.blank_lines} 个空行）" if self.blank_lines else ""
        return f"{len(self.rows):,} 行，来自{source}：{self.origin}{blank}"


def _parse_jsonl(data: bytes, path: Path) -> tuple[list[tuple[int, Any]], int]:
    """(line number, JSON value) for every non-blank line of JSONL content, and how many lines were blank."""
    lines = data.removeprefix(BOM).split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # after the newline that ends the last line
    out, blank = [], 0
    for n, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid UTF-8 (byte {exc.start + 1} of the line): save the file as UTF-8") from None
        if not line.strip():
            blank += 1
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            hint = " (a Parquet file? export it as JSONL first)" if path.suffix == ".parquet" or raw.startswith(b"PAR1") else ""
            raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}, column {exc.colno}){hint}") from None
    return out, blank


def read_jsonl_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, JSON value) for every non-blank line of a JSONL file; a bad line raises DataError with file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return _parse_jsonl(path.read_bytes(), path)[0]


def read_jsonl(path: Path) -> list[Any]:
    """All JSON values of a JSONL file (blank lines skipped); a bad line raises DataError with file:line."""
    return [value for _, value in read_jsonl_lines(path)]


def write_jsonl(path: Path, records: Iterable[Any]) -> int:
    """Write records as UTF-8 JSONL with real Chinese characters, atomically (temp file + rename); return the count."""
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in records]
    write_text_atomic(path, "".join(lines))
    return len(lines)


JSON_TYPES = {str: "string", int: "number", float: "number", bool: "boolean", list: "array", dict: "object", type(None): "null"}


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages in a reader's terms ('array', not 'list')."""
    return JSON_TYPES.get(type(value), type(value).__name__)


def _a(name: str) -> str:
    """A type name with its article: 'an array', 'a number' ('null' stays bare)."""
    return name if name == "null" else ("an " if name[0] in "aeiou" else "a ") + name


def check_rows(values: list[Any], origin: str, lines: list[int] | None = None) -> list[dict[str, str]]:
    """Check every value is {"questions": str, "answers": str} (extra keys dropped, null read as "" so cleaning counts it).

    Errors name `origin:LINE` when the values' line numbers are given, `origin: row N` otherwise.
    """
    rows = []
    for n, value in enumerate(values, start=1):
        where = f"{origin}:{lines[n - 1]}" if lines else f"{origin}: row {n}"
        if not isinstance(value, dict):
            raise DataError(f"{where}: expected a JSON object with keys questions, answers, got {_a(json_type(value))}")
        missing = [k for k in FIELDS if k not in value]
        if missing:
            keys = ", ".join(map(repr, value)) or "none"
            raise DataError(f"{where}: no {', '.join(repr(k) for k in missing)} (expected keys: questions, answers; found: {keys})")
        bad = [k for k in FIELDS if not isinstance(value[k], (str, type(None)))]
        if bad:
            raise DataError(f"{where}: {', '.join(bad)} must be a string, got {_a(json_type(value[bad[0]]))}")
        rows.append({k: value[k] or "" for k in FIELDS})
    return rows


def read_rows_file(path: Path) -> tuple[list[dict[str, str]], int]:
    """The Huatuo rows of a local file (JSON Lines, or one JSON array) and how many blank lines it had."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = path.read_bytes().removeprefix(BOM)
    if data.lstrip().startswith(b"["):  # a JSON array, e.g. written by pandas or json.dump
        try:
            values = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            values = None  # not one JSON document after all: read it line by line, which names the bad line
        if isinstance(values, list):
            return check_rows(values, str(path)), 0
    numbered, blank = _parse_jsonl(data, path)
    return check_rows([v for _, v in numbered], str(path), [n for n, _ in numbered]), blank


def load_hub(hub_id: str = HUATUO_HUB_ID, split: str = "test", timeout: float = 60.0) -> list[dict[str, str]]:
    """The test set from the Hugging Face hub through `datasets` (network; only when HUATUO_SOURCE=hub)."""
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout)))
    from datasets import load_dataset

    try:
        ds = load_dataset(hub_id)
    except Exception as exc:  # network, authentication, cache: all mean "not available now"
        raise DataError(f"could not load {hub_id} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
                        "without internet unset HUATUO_SOURCE (the vendored copy in data/) or set HUATUO_PATH to a local copy") from exc
    part = ds[split] if split in ds else ds[next(iter(ds))]
    return check_rows(list(part), f"{hub_id} ({split})")


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_vendored(path: Path = VENDORED_PATH, expected: str = VENDORED_SHA256) -> None:
    """Raise DataError unless the vendored test set is byte-identical to the published file (its SHA-256)."""
    shown = shown_path(path)
    if not Path(path).is_file():
        raise DataError(f"{shown}: the vendored Huatuo-26M test set is missing: restore it with `git checkout -- {shown}`")
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(f"{shown}: sha256 {actual[:12]}… is not the published test set's {expected[:12]}… (the file was edited): "
                        f"restore it with `git checkout -- {shown}`, or point HUATUO_PATH at your own edited copy")


def load_huatuo(cfg: Config) -> Dataset:
    """The rows cfg.data_source names: the vendored test set (checksum verified), the fixture, HUATUO_PATH, or the hub.

    No silent fallback: a missing or edited file is an error. Taught in notebook 01.
    """
    if cfg.data_source in ("vendored", "fixture", "path"):
        if cfg.data_path is None:
            raise DataError(f"data source {cfg.data_source!r} needs a file path (HUATUO_PATH)")
        if cfg.data_source == "vendored":
            check_vendored(cfg.data_path)
        rows, blank = read_rows_file(cfg.data_path)
        return Dataset(rows, cfg.data_source, shown_path(cfg.data_path), blank)
    if cfg.data_source == "hub":
        return Dataset(load_hub(), "hub", HUATUO_HUB_ID)
    raise DataError(f"unknown data source {cfg.data_source!r}: use vendored, fixture (HUATUO_SOURCE), path (HUATUO_PATH) or hub")
