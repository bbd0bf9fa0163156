"""The committed notebooks as a reader on GitHub reads them: calls shown, prose agreeing with outputs, no test scaffolding.

- The SDK call each lesson teaches stands in one of its code cells.
- A markdown cell tagged `what-we-saw` (cell metadata "tags") quotes only numbers that its notebook's
  committed outputs print; 06 and 07 must have one.
- No committed output shows an absolute path of the machine that ran it.
- No notebook source mentions NBVAL_CHECK_OUTPUT (nbval's checks are cell-metadata tags).
- The notebooks use the glossary's terms, never the synonyms it rules out (its "不用“…”" notes).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
ALL = sorted(NOTEBOOKS.glob("0*.ipynb"))

# The SDK calls each lesson makes in a cell of its own (issue 9).
TAUGHT_CALLS = {
    "04": ["OpenAI(", "client.files.create("],
    "05": ["OpenAI(", "client.fine_tuning.jobs.create("],
    "06": [
        "client.fine_tuning.jobs.retrieve(",
        "client.fine_tuning.jobs.list_events(",
        "client.files.content(",
        "client.fine_tuning.jobs.checkpoints.list(",
    ],
    "07": ["client.chat.completions.create("],
    "08": ['client.post(\n            "/local/export"', "client.chat.completions.create("],
    "09": ["OpenAI(", "client.fine_tuning.jobs.create(", "client.files.content("],
}
MUST_SAY_WHAT_WE_SAW = {"06", "07", "08", "09"}

# A number as prose quotes it: 4.315, 30.50, 1,024, 87%, 12 (single digits are too common to check).
NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.,])\d+\.\d+|(?<![\w.,])\d{2,}")
GLOSSARY = NOTEBOOKS.parent / "docs" / "GLOSSARY.md"
RULED_OUT = re.compile(r"不用((?:“[^”]+”、?)+)")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:work|tmp|root|home|Users|var/folders|private|opt|mnt|srv)/[\w.-]")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _output_texts(nb: dict) -> list[str]:
    """Every text a reader sees in the committed outputs (streams, plain text, HTML, errors)."""
    texts: list[str] = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if "text" in out:
                texts.append("".join(out["text"]) if isinstance(out["text"], list) else out["text"])
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    texts.append("".join(value) if isinstance(value, list) else json.dumps(value, ensure_ascii=False))
            if out.get("output_type") == "error":
                texts.append("\n".join(out.get("traceback", [])))
    return texts


def _numbers(text: str) -> set[str]:
    return {m.group(0).replace(",", "") for m in NUMBER.finditer(text)}


def _key(path: Path) -> str:
    return path.name[:2]


@pytest.mark.parametrize("path", ALL, ids=_key)
def test_the_taught_calls_stand_in_code_cells(path: Path) -> None:
    code = "\n".join(_source(c) for c in _load(path)["cells"] if c["cell_type"] == "code")
    missing = [call for call in TAUGHT_CALLS.get(_key(path), []) if call not in code]
    assert not missing, f"{path.name}: no code cell makes {missing}"


BARE_CALLS = {"04": "client.files.create(", "05": "client.fine_tuning.jobs.create(", "09": "client.fine_tuning.jobs.create("}


@pytest.mark.parametrize("path", [p for p in ALL if _key(p) in BARE_CALLS], ids=_key)
def test_the_taught_create_call_stands_bare_with_its_arguments(path: Path) -> None:
    """Issue 18: the call is not hidden in a lambda or behind `**kwargs`; its keyword arguments are written out."""
    call = BARE_CALLS[_key(path)]
    code = "\n".join(_source(c) for c in _load(path)["cells"] if c["cell_type"] == "code")
    for line in code.splitlines():
        if call in line:
            assert "lambda" not in line, f"{path.name}: {call} appears only inside a lambda: {line.strip()!r}"
    start = code.index(call)
    args = code[start:code.index("\n    )", start)]
    assert "**" not in args and args.count("=") >= 2, f"{path.name}: {call} without its arguments written out"


@pytest.mark.parametrize("path", ALL, ids=_key)
def test_what_we_saw_quotes_the_committed_outputs(path: Path) -> None:
    nb = _load(path)
    cells = [c for c in nb["cells"] if c["cell_type"] == "markdown" and "what-we-saw" in c.get("metadata", {}).get("tags", [])]
    if _key(path) in MUST_SAY_WHAT_WE_SAW:
        assert cells, f"{path.name}: no markdown cell tagged 'what-we-saw'"
    printed = set().union(*(_numbers(t) for t in _output_texts(nb))) if cells else set()
    for cell in cells:
        quoted = _numbers(_source(cell))
        assert quoted, f"{path.name}: the 'what-we-saw' cell quotes no number from the run"
        stray = sorted(quoted - printed)
        assert not stray, f"{path.name}: 'what-we-saw' quotes {stray}, which no committed output prints"


@pytest.mark.parametrize("path", ALL, ids=_key)
def test_outputs_show_no_absolute_paths(path: Path) -> None:
    repo = str(NOTEBOOKS.parent)
    for text in _output_texts(_load(path)):
        assert repo not in text, f"{path.name}: an output shows the repository's absolute path"
        hit = ABSOLUTE_PATH.search(text)
        assert hit is None, f"{path.name}: an output shows a machine path: {text[max(0, hit.start() - 40):hit.end() + 40]!r}"


@pytest.mark.parametrize("path", ALL, ids=_key)
def test_no_test_scaffolding_in_the_lessons(path: Path) -> None:
    for cell in _load(path)["cells"]:
        assert "NBVAL_CHECK_OUTPUT" not in _source(cell), f"{path.name}: use the cell tag 'nbval-check-output' instead"


def test_the_number_reader_reads_prose_as_written() -> None:
    """The checker itself: thousands separators, decimals and percentages are read; single digits are not."""
    assert _numbers("损失从 4.315 降到 4.040，共 1,024 个词元，87% 的回答，第 3 轮") == {"4.315", "4.040", "1024", "87"}


READABILITY_LINE = re.compile(r"^(?P<arm>[^：\n]+)：空回答 (?P<empty>\d+)，只有一个字符 (?P<one>\d+)，含 U\+FFFD (?P<fffd>\d+)，"
                              r"汉字占比 (?P<cjk>\d+)%", re.M)


def test_committed_fine_tuned_answers_are_readable_chinese() -> None:
    """Issue 11's bar on the committed 07: the fine-tuned answers are Chinese (at least 60% CJK ideographs), at most
    1 in 20 contains U+FFFD, none is empty or one repeated character (the counts 07's summary cell prints)."""
    from helpers.evaluation import TUNED_ARM

    text = "\n".join(_output_texts(_load(NOTEBOOKS / "07_compare.ipynb")))
    rows = {m.group("arm"): m for m in READABILITY_LINE.finditer(text)}
    assert TUNED_ARM in rows, "07's summary cell prints no readability line for the fine-tuned arm"
    tuned = rows[TUNED_ARM]
    n = int(re.search(r"留出集问题：(\d+) 道", text).group(1))  # each arm answers every held-out question
    assert int(tuned["empty"]) == 0 and int(tuned["one"]) == 0
    assert int(tuned["fffd"]) <= n / 20
    assert int(tuned["cjk"]) >= 60


def ruled_out_synonyms(glossary: str) -> dict[str, str]:
    """{synonym: the glossary's term} for every "不用“X”" note in the glossary's table."""
    found: dict[str, str] = {}
    for line in glossary.splitlines():
        if line.startswith("| ") and not line.startswith("| 中文") and not line.startswith("|---"):
            term = line.split("|")[1].strip()
            for note in RULED_OUT.finditer(line):
                for synonym in re.findall(r"“([^”]+)”", note.group(1)):
                    found[synonym] = term
    return found


def test_the_glossary_rules_out_synonyms() -> None:
    """The checker itself: the glossary's job entry rules out 任务, and the parser reads lists of synonyms."""
    assert ruled_out_synonyms(GLOSSARY.read_text(encoding="utf-8"))["任务"] == "作业"
    assert ruled_out_synonyms("| 作业 | job | x（不用“任务”、“工作”） |") == {"任务": "作业", "工作": "作业"}


@pytest.mark.parametrize("path", ALL, ids=_key)
def test_notebooks_use_the_glossary_terms(path: Path) -> None:
    nb = _load(path)
    texts = [_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"] + _output_texts(nb)
    for synonym, term in ruled_out_synonyms(GLOSSARY.read_text(encoding="utf-8")).items():
        hits = [t for t in texts if synonym in t]
        assert not hits, f"{path.name}: says {synonym!r} where the glossary's term is {term!r}: " \
                         f"{hits[0][max(0, hits[0].index(synonym) - 30):hits[0].index(synonym) + 30]!r}"


# Outputs that look like English words but are names: a font, and the API's field names as a table's header.
NOT_SENTENCES = ["Noto Sans CJK SC", "id                  filename  bytes     status"]


def _learner_texts(nb: dict) -> list[str]:
    """The plain-text outputs a learner reads (streams and text/plain; HTML and images are the same tables)."""
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "image/png" in data or "text/html" in data:
                continue  # text/plain is then only a repr, e.g. "<Figure size 640x480 with 1 Axes>"
            value = out.get("text", data.get("text/plain", ""))
            texts.append("".join(value) if isinstance(value, list) else value)
    return texts


def test_the_english_checker_finds_sentences_not_names() -> None:
    from tests.language import english_phrases

    assert english_phrases("2026-12-07 [info] Fine-tuning job started") == ["Fine-tuning job started"]
    assert english_phrases("模型 ft:qwen2.5-coder-0.5b-instruct:local:huatuo:EhEEGqAm:ckpt-step-25 已创建") == []
    assert english_phrases("data/work/train.jsonl：100 条样本，o200k_base，temperature=0") == []


@pytest.mark.parametrize("path", ALL, ids=_key)
def test_outputs_a_learner_reads_are_chinese(path: Path) -> None:
    """Issue 18: no English sentence in what a notebook prints (code, ids, field names and model ids excepted)."""
    from tests.language import english_phrases

    found = []
    for text in _learner_texts(_load(path)):
        for name in NOT_SENTENCES:
            text = text.replace(name, " ")
        found += english_phrases(text)
    assert not found, f"{path.name} prints English: {found[:5]}"
