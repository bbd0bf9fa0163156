"""Data loading, JSONL I/O, the vendored test set, the synthetic fixture, cleaning and the split."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from helpers import clean, data, split
from helpers.config import FIXTURE_PATH, REPO_ROOT, VENDORED_PATH, VENDORED_SHA256, load_config

FIXTURE = FIXTURE_PATH


def test_fixture_schema_and_size():
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    assert 250 <= len(lines) <= 350
    for line in lines:
        row = json.loads(line)
        assert set(row) == {"questions", "answers"} and all(isinstance(v, str) for v in row.values())
    assert "\\u" not in FIXTURE.read_text(encoding="utf-8")  # real characters, not escapes


def test_fixture_is_what_the_generator_writes(tmp_path):
    from data.make_fixture import write

    write(tmp_path / "f.jsonl")
    assert (tmp_path / "f.jsonl").read_bytes() == FIXTURE.read_bytes()


def test_fixture_has_the_real_sets_quirks():
    rows = data.read_jsonl(FIXTURE)
    questions = [r["questions"] for r in rows]
    assert len({json.dumps(r, ensure_ascii=False) for r in rows}) < len(rows)  # exact duplicates
    assert any(q != q.strip() for q in questions) and any(r["answers"] != r["answers"].strip() for r in rows)
    assert questions.count("患者性别:患者年龄:问题描述:") >= 3
    assert sum(len(r["answers"]) > 2000 for r in rows) >= 3
    assert any("?" in q for q in questions) and any("？" in q for q in questions)


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{broken\n', encoding="utf-8")
    with pytest.raises(data.DataError, match=r"x.jsonl:3: not valid JSON"):
        data.read_jsonl(path)
    with pytest.raises(data.DataError, match="no such file"):
        data.read_jsonl(tmp_path / "missing.jsonl")


def test_write_jsonl_is_utf8_unescaped_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    assert data.write_jsonl(path, [{"q": "血压"}, {"q": "头疼"}]) == 2
    assert path.read_text(encoding="utf-8") == '{"q": "血压"}\n{"q": "头疼"}\n'
    assert [p.name for p in path.parent.iterdir()] == ["out.jsonl"]


def test_check_rows_errors():
    with pytest.raises(data.DataError, match="src: row 2: no 'answers'"):
        data.check_rows([{"questions": "a", "answers": "b"}, {"questions": "a"}], "src")
    with pytest.raises(data.DataError, match="src: row 1: answers must be a string, got a number"):
        data.check_rows([{"questions": "a", "answers": 3}], "src")
    assert data.check_rows([{"questions": "a", "answers": None}], "src") == [{"questions": "a", "answers": ""}]
    assert data.check_rows([{"questions": "a", "answers": "b", "extra": 1}], "src") == [{"questions": "a", "answers": "b"}]


def test_load_huatuo_fixture_and_path(tmp_path, monkeypatch):
    monkeypatch.delenv("HUATUO_PATH", raising=False)
    monkeypatch.setenv("HUATUO_SOURCE", "fixture")
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    ds = data.load_huatuo(load_config())
    assert ds.source == "fixture" and len(ds.rows) == len(FIXTURE.read_text(encoding="utf-8").splitlines())
    own = tmp_path / "mine.jsonl"
    data.write_jsonl(own, [{"questions": "q", "answers": "a"}])
    monkeypatch.setenv("HUATUO_PATH", str(own))
    ds = data.load_huatuo(load_config())
    assert (ds.source, ds.rows) == ("path", [{"questions": "q", "answers": "a"}]) and str(own) in ds.describe()


def test_unknown_source_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    with pytest.raises(data.DataError, match="unknown data source"):
        data.load_huatuo(replace(load_config(), data_source="ftp"))


def rows_with_quirks() -> list[dict[str, str]]:
    return [
        {"questions": " 头疼怎么办？\n", "answers": "多休息。"},
        {"questions": "头疼怎么办？", "answers": "多休息。"},  # exact duplicate after stripping
        {"questions": "头疼怎么办？", "answers": "去医院。"},  # same question, other answer
        {"questions": "", "answers": "x"},
        {"questions": "患者性别:患者年龄:问题描述:", "answers": "x"},
        {"questions": "患者性别：患者年龄：问题描述：", "answers": "x"},
        {"questions": "患者性别:男患者年龄:30问题描述:咳嗽", "answers": "多喝水。"},
        {"questions": "发烧", "answers": "  "},
        {"questions": "很长", "answers": "血压" * 6000},
    ]


def test_clean_counts_every_reason():
    result = clean.clean_rows(rows_with_quirks(), model="smollm2-135m-instruct")
    assert result.counts() == {clean.EMPTY_QUESTION: 1, clean.TEMPLATE_ONLY: 2, clean.EMPTY_ANSWER: 1, clean.EXACT_DUPLICATE: 1,
                               clean.DUPLICATE_QUESTION: 1, clean.OVER_LIMIT: 1}
    assert result.rows == [{"questions": "头疼怎么办？", "answers": "多休息。"},
                           {"questions": "患者性别:男患者年龄:30问题描述:咳嗽", "answers": "多喝水。"}]
    assert result.n_stripped == 1 and len(result.token_counts) == 2
    assert len(result.dropped) + len(result.rows) == result.n_in
    assert "保留 2 条" in result.summary()


def test_clean_limit_depends_on_model():
    rows = [{"questions": "问", "answers": "血压" * 2000}]
    assert clean.clean_rows(rows, model="gpt-3.5-turbo-0613").counts()[clean.OVER_LIMIT] == 1
    assert clean.clean_rows(rows, model="gpt-4o-mini").counts()[clean.OVER_LIMIT] == 0


def make_rows(n: int) -> list[dict[str, str]]:
    return [{"questions": f"问题{i}", "answers": f"答案{i}"} for i in range(n)]


def test_split_is_seeded_disjoint_and_order_independent():
    rows = make_rows(200)
    a = split.split_rows(rows, 100, 20, 50, seed=42)
    assert a.sizes() == {"train": 100, "valid": 20, "heldout": 50}
    assert a == split.split_rows(list(reversed(rows)), 100, 20, 50, seed=42)
    assert a.train != split.split_rows(rows, 100, 20, 50, seed=7).train
    qs = [r["questions"] for part in (a.train, a.valid, a.heldout) for r in part]
    assert len(set(qs)) == 170


def test_split_errors():
    with pytest.raises(split.SplitError, match="60 rows after cleaning.*= 170"):
        split.split_rows(make_rows(60), 100, 20, 50, seed=1)
    with pytest.raises(split.SplitError, match="share questions"):
        split.split_rows(make_rows(5) + make_rows(5), 2, 1, 1, seed=1)
    bad = split.Split(make_rows(2), make_rows(1), [], seed=0)
    with pytest.raises(split.SplitError, match="train and valid share 1"):
        split.check_disjoint(bad)


def test_write_split(tmp_path):
    s = split.split_rows(make_rows(30), 10, 5, 5, seed=3)
    paths = split.write_split(s, tmp_path)
    assert {p.name for p in paths.values()} == {"train_rows.jsonl", "valid_rows.jsonl", "heldout.jsonl"}
    assert data.read_jsonl(paths["train"]) == s.train


def test_explore_census_lengths_and_longest():
    from helpers import explore

    rows = rows_with_quirks()
    census = explore.quirk_census(rows)
    assert census["行数"] == 9 and census["完全重复的多余行"] == 1 and census["问题相同、答案不同的多余行"] == 1
    assert census["首尾有空白"] == 2 and census["空的问诊表单"] == 2 and census["问题为空"] == 1 and census["答案为空"] == 1
    assert census["问诊表单格式的问题"] == 3 and census["答案超过 1,000 字"] == 1 and census["答案不到 10 字"] == 7
    table = explore.length_table(rows)
    assert list(table.columns) == ["q_chars", "a_chars", "q_tokens", "a_tokens"] and table["a_chars"].max() == 12000
    assert explore.longest(rows, 1)[0] == (8, 12000, "很长")
    assert explore.repeated_questions(rows)["头疼怎么办？"] == [0, 1, 2]
    assert explore.count_containing(rows, ["血压", "头疼", "无"]) == {"血压": 1, "头疼": 3, "无": 0}
    labelled = [{"questions": "q" * 255, "answers": "病情分析：多休息。"}, {"questions": "q", "answers": "分析：无"}]
    census = explore.quirk_census(labelled)
    assert census["问题正好 255 字（被来源截断）"] == 1 and census["答案以“病情分析：”之类的标签开头"] == 1
    assert explore.seeded_examples(rows, 3, seed=1) == explore.seeded_examples(rows, 3, seed=1)


def test_hub_failure_is_a_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(data.DataError, match="without internet unset HUATUO_SOURCE"):
        data.load_hub()


def test_hub_rows_are_checked(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id: {"test": [{"questions": "q", "answers": "a", "id": 1}]})
    assert data.load_hub() == [{"questions": "q", "answers": "a"}]


def test_read_split_back_and_missing(tmp_path):
    s = split.split_rows(make_rows(30), 10, 5, 5, seed=3)
    split.write_split(s, tmp_path)
    assert split.read_split(tmp_path, "valid") == s.valid
    with pytest.raises(split.SplitError, match="run notebook 02"):
        split.read_split(tmp_path / "empty", "train")


@pytest.mark.parametrize("question, expected", [
    ("患者性别:患者年龄:问题描述:", True),
    ("患者性别： 患者年龄： 问题描述： ", True),
    ("患者性别:女患者年龄:23问题描述:", True),
    ("患者性别:女患者年龄:23问题描述:头疼三天", False),
    ("头疼三天，问题描述得不清楚吗", False),
    ("患者性别:患者年龄:主要症状:发病时间:化验检查结果:", True),  # another form of the real set, all labels
    ("主要症状:血精发病时间:2007年2月化验检查结果:精囊炎", False),
    ("病情描述（主要症状、发病时间）:曾经治疗情况和效果:想得到怎样的帮助:", True),
    ("   ", False),  # empty, not a template: counted as an empty question
])
def test_is_template_only(question, expected):
    assert clean.is_template_only(question) is expected


def test_huatuo_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"questions": "q", "answers": "a"}\n\n{"questions": "q2"}\n', encoding="utf-8")
    with pytest.raises(data.DataError, match=r"rows.jsonl:3: no 'answers' \(expected keys: questions, answers; found: 'questions'\)"):
        data.read_rows_file(path)
    path.write_text('{"questions": "q", "answers": "a"}\n["q", "a"]\n', encoding="utf-8")
    with pytest.raises(data.DataError, match="rows.jsonl:2: expected a JSON object with keys questions, answers, got an array"):
        data.read_rows_file(path)
    path.write_bytes('{"questions": "q", "answers": "a"}\n'.encode() + b'{"questions": "\xff", "answers": "a"}\n')
    with pytest.raises(data.DataError, match="rows.jsonl:2: not valid UTF-8"):
        data.read_rows_file(path)
    parquet = tmp_path / "test.parquet"
    parquet.write_bytes(b"PAR1\x00\x01binary")
    with pytest.raises(data.DataError, match="Parquet"):
        data.read_rows_file(parquet)


def test_huatuo_file_counts_blank_lines_and_reads_json_arrays(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('\ufeff{"questions": "q", "answers": "a"}\n\n  \n{"questions": "q2", "answers": null}\n', encoding="utf-8")
    assert data.read_rows_file(path) == ([{"questions": "q", "answers": "a"}, {"questions": "q2", "answers": ""}], 2)
    ds = data.Dataset(*data.read_rows_file(path)[:1], "path", str(path), 2)
    assert ds.describe().endswith("（跳过 2 个空行）")
    array = tmp_path / "rows.json"
    array.write_text(json.dumps([{"questions": "问", "answers": "答"}], ensure_ascii=False), encoding="utf-8")
    assert data.read_rows_file(array) == ([{"questions": "问", "answers": "答"}], 0)
    array.write_text('[{"questions": "问", "answers": 1}]', encoding="utf-8")
    with pytest.raises(data.DataError, match=r"rows.json: row 1: answers must be a string, got a number"):
        data.read_rows_file(array)


def test_vendored_file_is_the_published_test_set():
    """The copy in data/ is byte-identical to the published file: 6,000 rows in the Huatuo schema, Apache-2.0 beside it."""
    assert data.sha256_file(VENDORED_PATH) == VENDORED_SHA256
    rows, blank = data.read_rows_file(VENDORED_PATH)
    assert (len(rows), blank) == (6000, 0)
    assert "Apache License" in (VENDORED_PATH.parent / "LICENSE").read_text(encoding="utf-8")
    readme = (VENDORED_PATH.parent / "README.md").read_text(encoding="utf-8")
    assert VENDORED_SHA256 in readme and "Apache-2.0" in readme


def test_load_huatuo_vendored_is_the_default_and_checked(tmp_path, monkeypatch):
    for name in ("HUATUO_PATH", "HUATUO_SOURCE", "OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    cfg = load_config(tmp_path / "no.env")
    ds = data.load_huatuo(cfg)
    assert (ds.source, len(ds.rows), ds.origin) == ("vendored", 6000, "data/huatuo26M_test_datasets.jsonl")
    edited = tmp_path / "huatuo26M_test_datasets.jsonl"
    edited.write_bytes(VENDORED_PATH.read_bytes().replace("头痛".encode(), "头疼".encode(), 1))
    with pytest.raises(data.DataError, match=r"huatuo26M_test_datasets.jsonl: sha256 .* \(the file was edited\): restore it"):
        data.load_huatuo(replace(cfg, data_path=edited))
    with pytest.raises(data.DataError, match="missing"):
        data.load_huatuo(replace(cfg, data_path=tmp_path / "gone.jsonl"))


def test_real_rows_clean_as_notebook_02_says():
    """On the real file: the three empty forms and three repeated questions go, and at 4,096 tokens the one over-long row."""
    rows, _ = data.read_rows_file(VENDORED_PATH)
    result = clean.clean_rows(rows, model="smollm2-135m-instruct", max_tokens=4096)
    counts = result.counts()
    assert counts[clean.TEMPLATE_ONLY] == 3 and counts[clean.DUPLICATE_QUESTION] == 3 and counts[clean.EXACT_DUPLICATE] == 0
    assert counts[clean.EMPTY_QUESTION] == counts[clean.EMPTY_ANSWER] == 0 and counts[clean.OVER_LIMIT] == 1
    assert len(result.rows) == 5993 and len({r["questions"] for r in result.rows}) == 5993
