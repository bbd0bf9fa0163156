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


# Issue 18's mismatches between prose and output, each as the rule that would have caught it.
def _notebook(key: str) -> dict:
    return _load(next(p for p in ALL if _key(p) == key))


def _markdown(nb: dict) -> list[str]:
    return [_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]


def _outputs(nb: dict) -> str:
    return "\n".join(_output_texts(nb))


def test_a_quoted_misspelling_is_in_the_output() -> None:
    """01 pointed to a misspelling ("栢金逊") in a question its output cut off before that word."""
    nb = _notebook("01")
    quoted = [w for text in _markdown(nb) for w in re.findall(r"写成了“([^”]+)”", text)]
    assert quoted and all(w in _outputs(nb) for w in quoted), quoted


def test_a_promise_of_the_longest_rows_sorts_them() -> None:
    """02 announced "最长的几条" and printed the first three rows."""
    cells = _notebook("02")["cells"]
    promised = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "最长的几条" in _source(c)]
    assert promised
    for i in promised:
        code = next(_source(c) for c in cells[i + 1:] if c["cell_type"] == "code")
        assert re.search(r"sorted\(.*reverse=True|longest\(", code, re.S), code


def test_a_claimed_overlap_is_the_printed_one() -> None:
    """02 said two unseeded samples "只重合几行" where its output printed 0."""
    nb = _notebook("02")
    printed = [int(n) for n in re.findall(r"两次都抽到的行数：\s*(\d+)", _outputs(nb))]
    assert len(printed) == 2 and printed[1] == 100  # the seeded pair
    if any("只重合几行" in text for text in _markdown(nb)):
        assert printed[0] >= 2, "the prose says a few rows overlap; the output printed " + str(printed[0])


def test_the_log_lines_06_explains_are_in_its_log() -> None:
    """06 explained log lines ("0 skipped", "[warn] … cut to N tokens") that its log did not contain. Each quoted
    fragment of the log (“…”, or `…` that is not a file or a name) is in the output, or its bullet says the line
    is absent ("没有这一行"); the API's English original (labelled 事件原文) is not in a Chinese log by design."""
    nb = _notebook("06")
    log = _outputs(nb)
    cell = next(t for t in _markdown(nb) if t.startswith("怎样读这份日志")).split("\n## ")[0]  # up to the next section
    checked = 0
    for bullet in cell.split("\n* "):
        quotes = re.findall(r"“([^”]+)”", bullet) + [q for before, q in re.findall(r"(事件原文 )?`([^`]+)`", bullet)
                                                     if not before and not re.search(r"[/_]|\.py\b", q)]  # not a path or a name
        for quote in quotes:
            parts = [p.strip() for p in re.split(r"…|\bN\b", quote.replace("[warn]", "").replace("[info]", "")) if p.strip()]
            if "没有这一行" not in bullet:
                checked += 1
                assert all(p in log for p in parts), f"06 explains {quote!r}, which its log does not show"
    assert checked >= 2


COUNT_WORDS = {"两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


def test_a_counted_list_has_that_many_items() -> None:
    """07 announced "选了三个……的量：" and listed four: "N 个…量/指标：" followed by a list has N items."""
    for path in ALL:
        for text in _markdown(_load(path)):
            for m in re.finditer(r"([两三四五六七八九])\s*个[^。：\n]{0,20}(?:量|指标)[：:]\s*\n((?:\s*(?:[*-]|\d+\.) .*\n?)+)", text):
                items = re.findall(r"^\s*(?:[*-]|\d+\.) ", m.group(2), re.M)
                assert len(items) == COUNT_WORDS[m.group(1)], f"{path.name}: {m.group(0)[:80]!r}"


def test_a_minority_of_cut_answers_is_one() -> None:
    """07 said cut answers "应当是少数" above a table showing 64 % / 30 % / 42 %."""
    nb = _notebook("07")
    shares = [int(n) for n in re.findall(r"被截断 [^：\n]+：(\d+)%", _outputs(nb))]
    assert len(shares) == 3
    claims = [s for text in _markdown(nb) for s in re.split(r"[。；]", text) if "截断" in s and "少数" in s]
    if claims:
        assert max(shares) < 50, (claims[0], shares)
