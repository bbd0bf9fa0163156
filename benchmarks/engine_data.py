"""Shared set-up of the engine benchmarks: the course's seeded 100/20/50 split of Huatuo rows as chat files.

The rows come from `HUATUO_PATH` (read by `helpers.data` like the notebooks read it) or else the vendored real
test set `data/huatuo26M_test_datasets.jsonl` (checksum-verified, the course's default), cleaned and split
exactly as notebook 02 does (`helpers.clean.clean_rows`, then `helpers.split.split_rows` with seed 42 and the
course's sizes), so a benchmark trains on the rows the course trains on; the chat format and system prompt are
the workbook's own (`helpers.chatfmt`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from helpers.chatfmt import SYSTEM_PROMPT, to_chat
from helpers.clean import clean_rows
from helpers.config import VENDORED_PATH, huatuo_file
from helpers.data import check_vendored, read_rows_file
from helpers.split import split_rows

COURSE_MODEL = "smollm2-135m-instruct"  # cleaning's token limit is the same for every local model (4,096)


@dataclass
class Split:
    """Chat files and held-out rows for one benchmark run."""

    train_path: Path
    valid_path: Path
    heldout: list[dict[str, str]]  # {"questions", "answers"}
    system_prompt: str


def data_path() -> Path:
    """HUATUO_PATH as the notebooks read it (a file or a downloaded folder), else the vendored real test set."""
    given = os.environ.get("HUATUO_PATH", "").strip()
    if given:
        return huatuo_file(Path(given).expanduser().resolve(), given)
    check_vendored()
    return VENDORED_PATH


def load_rows(path: Path | None = None, model: str = COURSE_MODEL) -> list[dict[str, str]]:
    """The rows notebook 02 keeps: helpers.clean.clean_rows (trimmed, no empties or forms, one per question, within the limit)."""
    return clean_rows(read_rows_file(Path(path or data_path()))[0], model).rows


def make_split(folder: Path, n_train: int = 100, n_valid: int = 20, n_heldout: int = 50, seed: int = 42) -> Split:
    """Write train.jsonl / valid.jsonl (chat format) into `folder` and return them with the held-out rows."""
    parts = split_rows(load_rows(), n_train, n_valid, n_heldout, seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train.jsonl", parts.train), ("valid.jsonl", parts.valid)):
        path = folder / name
        path.write_text("".join(json.dumps(to_chat(r), ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        paths.append(path)
    return Split(paths[0], paths[1], parts.heldout, SYSTEM_PROMPT)


def question_messages(split: Split, question: str) -> list[dict[str, str]]:
    """The chat request for a held-out question, with the training system prompt."""
    return [{"role": "system", "content": split.system_prompt}, {"role": "user", "content": question}]
