"""Shared set-up of the engine benchmarks: a seeded 100/20/50 split of Huatuo-style rows as chat files.

The rows come from `data/huatuo_fixture.jsonl` (or `HUATUO_PATH`, read by `helpers.data` like the notebooks read it), cleaned the simple way (trimmed, no empty
question or answer, one row per question, answers of at most 1,000 characters) and split with a seed, like
notebooks 02-03 do; the chat format and system prompt are the workbook's own (`helpers.chatfmt`).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from helpers.chatfmt import SYSTEM_PROMPT, to_chat
from helpers.config import REPO_ROOT, huatuo_file
from helpers.data import read_rows_file

MAX_ANSWER_CHARS = 1000


@dataclass
class Split:
    """Chat files and held-out rows for one benchmark run."""

    train_path: Path
    valid_path: Path
    heldout: list[dict[str, str]]  # {"questions", "answers"}
    system_prompt: str


def load_rows(path: Path | None = None) -> list[dict[str, str]]:
    """Cleaned Huatuo-schema rows: trimmed, non-empty, one per question, answers not overly long."""
    given = os.environ.get("HUATUO_PATH", "").strip()
    if path is None:  # HUATUO_PATH as the notebooks read it (a file or a downloaded folder), else the fixture
        path = huatuo_file(Path(given).expanduser().resolve(), given) if given else REPO_ROOT / "data" / "huatuo_fixture.jsonl"
    rows, seen = [], set()
    for row in read_rows_file(Path(path))[0]:
        q, a = row["questions"].strip(), row["answers"].strip()
        if not q or not a or q in seen or len(a) > MAX_ANSWER_CHARS or q.startswith("患者性别"):
            continue
        seen.add(q)
        rows.append({"questions": q, "answers": a})
    return rows


def make_split(folder: Path, n_train: int = 100, n_valid: int = 20, n_heldout: int = 50, seed: int = 42) -> Split:
    """Write train.jsonl / valid.jsonl (chat format) into `folder` and return them with the held-out rows."""
    rows = load_rows()
    random.Random(seed).shuffle(rows)
    if len(rows) < n_train + n_valid + n_heldout:
        raise SystemExit(f"only {len(rows)} clean rows; need {n_train + n_valid + n_heldout}")
    train, valid = rows[:n_train], rows[n_train:n_train + n_valid]
    heldout = rows[n_train + n_valid:n_train + n_valid + n_heldout]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, part in (("train.jsonl", train), ("valid.jsonl", valid)):
        path = folder / name
        path.write_text("".join(json.dumps(to_chat(r), ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        paths.append(path)
    return Split(paths[0], paths[1], heldout, SYSTEM_PROMPT)


def question_messages(split: Split, question: str) -> list[dict[str, str]]:
    """The chat request for a held-out question, with the training system prompt."""
    return [{"role": "system", "content": split.system_prompt}, {"role": "user", "content": question}]
