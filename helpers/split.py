"""A seeded, reproducible split into training, validation and held-out rows, disjoint by question."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.data import write_jsonl

FILES = {"train": "train_rows.jsonl", "valid": "valid_rows.jsonl", "heldout": "heldout.jsonl"}


class SplitError(ValueError):
    """Too few rows for the requested sizes, or parts that share a question."""


@dataclass(frozen=True)
class Split:
    """The three disjoint parts, each in a stable order."""

    train: list[dict[str, str]]
    valid: list[dict[str, str]]
    heldout: list[dict[str, str]]
    seed: int

    def sizes(self) -> dict[str, int]:
        """Rows per part."""
        return {"train": len(self.train), "valid": len(self.valid), "heldout": len(self.heldout)}


def rank_key(seed: int, question: str) -> str:
    """A row's place in the shuffled order: a hash of the seed and its question (independent of input order)."""
    return hashlib.sha256(f"{seed}\x00{question}".encode("utf-8")).hexdigest()


def split_rows(rows: Sequence[dict[str, str]], n_train: int, n_valid: int, n_heldout: int, seed: int) -> Split:
    """Shuffle by rank_key and cut: the same rows and seed give the same split on any machine, in any input order."""
    need = n_train + n_valid + n_heldout
    questions = [r["questions"] for r in rows]
    if len(set(questions)) != len(questions):
        raise SplitError("rows share questions: clean them first (helpers.clean.clean_rows drops duplicate questions)")
    if len(rows) < need:
        raise SplitError(f"{len(rows)} rows after cleaning, but train+valid+heldout = {n_train}+{n_valid}+{n_heldout} = {need}: "
                         "lower WORKBOOK_N_TRAIN / WORKBOOK_N_VALID / WORKBOOK_N_HELDOUT or use a bigger data source")
    ordered = sorted(rows, key=lambda r: rank_key(seed, r["questions"]))
    split = Split(ordered[:n_train], ordered[n_train:n_train + n_valid], ordered[n_train + n_valid:need], seed)
    check_disjoint(split)
    return split


def check_disjoint(split: Split) -> None:
    """Raise SplitError if two parts share a question."""
    parts = {name: {r["questions"] for r in getattr(split, name)} for name in FILES}
    for a, b in (("train", "valid"), ("train", "heldout"), ("valid", "heldout")):
        shared = parts[a] & parts[b]
        if shared:
            raise SplitError(f"{a} and {b} share {len(shared)} questions, e.g. {next(iter(shared))!r}")


def write_split(split: Split, work_dir: Path) -> dict[str, Path]:
    """Write train_rows.jsonl, valid_rows.jsonl and heldout.jsonl into work_dir (atomically); return their paths."""
    paths = {}
    for name, filename in FILES.items():
        paths[name] = Path(work_dir) / filename
        write_jsonl(paths[name], getattr(split, name))
    return paths


def read_split(work_dir: Path, name: str) -> list[dict[str, str]]:
    """Rows of one part written by notebook 02 ("train", "valid" or "heldout"); a clear error if it is missing."""
    from helpers.data import read_jsonl

    path = Path(work_dir) / FILES[name]
    if not path.is_file():
        raise SplitError(f"{path} does not exist: run notebook 02 (02_sample) first, with the same WORKBOOK_WORK_DIR")
    return read_jsonl(path)
