"""Loading the Huatuo-26M test set (fixture, a local JSONL, or the hub) and reading/writing JSONL files."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.config import HUATUO_HUB_ID, Config

FIELDS = ("questions", "answers")


class DataError(ValueError):
    """A data file is missing or a row does not have the Huatuo schema; the message names file and line."""


@dataclass(frozen=True)
class Dataset:
    """The rows of the Huatuo test set as loaded, and where they came from."""

    rows: list[dict[str, str]]
    source: str  # "fixture", "path" or "hub"
    origin: str  # the file path or the hub id

    def describe(self) -> str:
        """One line: how many rows from where."""
        return f"{len(self.rows)} rows from {self.source}: {self.origin}"


def read_jsonl(path: Path) -> list[Any]:
    """All JSON values of a JSONL file (blank lines skipped); a bad line raises DataError with file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    return out


def write_jsonl(path: Path, records: Iterable[Any]) -> int:
    """Write records as UTF-8 JSONL with real Chinese characters, atomically (temp file + rename); return the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def write_json(path: Path, data: Any) -> None:
    """Write one JSON document (UTF-8, indented, unescaped), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_rows(values: list[Any], origin: str) -> list[dict[str, str]]:
    """Check every value is {"questions": str, "answers": str} (extra keys dropped, null read as "" so cleaning counts it)."""
    rows = []
    for n, value in enumerate(values, start=1):
        if not isinstance(value, dict):
            raise DataError(f"{origin}: row {n} is not a JSON object")
        missing = [k for k in FIELDS if k not in value]
        if missing:
            raise DataError(f"{origin}: row {n} has no {', '.join(repr(k) for k in missing)} (expected keys: questions, answers)")
        bad = [k for k in FIELDS if not isinstance(value[k], (str, type(None)))]
        if bad:
            raise DataError(f"{origin}: row {n}: {', '.join(bad)} must be a string")
        rows.append({k: value[k] or "" for k in FIELDS})
    return rows


def load_hub(hub_id: str = HUATUO_HUB_ID, split: str = "test", timeout: float = 60.0) -> list[dict[str, str]]:
    """The test set from the Hugging Face hub through `datasets` (network; only when HUATUO_SOURCE=hub)."""
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout)))
    from datasets import load_dataset

    try:
        ds = load_dataset(hub_id)
    except Exception as exc:  # network, authentication, cache: all mean "not available now"
        raise DataError(f"could not load {hub_id} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
                        "without internet unset HUATUO_SOURCE (bundled fixture) or set HUATUO_PATH to a local copy") from exc
    part = ds[split] if split in ds else ds[next(iter(ds))]
    return check_rows(list(part), f"{hub_id} ({split})")


def load_huatuo(cfg: Config) -> Dataset:
    """The rows cfg.data_source names: the bundled fixture, HUATUO_PATH, or the hub. No silent fallback."""
    if cfg.data_source in ("fixture", "path"):
        if cfg.data_path is None:
            raise DataError(f"data source {cfg.data_source!r} needs a file path (HUATUO_PATH)")
        return Dataset(check_rows(read_jsonl(cfg.data_path), str(cfg.data_path)), cfg.data_source, str(cfg.data_path))
    if cfg.data_source == "hub":
        return Dataset(load_hub(), "hub", HUATUO_HUB_ID)
    raise DataError(f"unknown data source {cfg.data_source!r}: use fixture, path (HUATUO_PATH) or hub (HUATUO_SOURCE=hub)")
