"""The headless course run against the real local server (tiny model): twice, with 20% faults.

The first run starts from an empty work folder against a server whose fault mode answers 20% of
API requests with a 429 (with retry-after), a 500 or a slow response; the second run repeats the
course. Both must complete, and the server's own lists must then hold exactly one training upload,
one validation upload and one job of each method (supervised in 05, DPO in 09, with its own two uploads).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import course
from helpers.client import make_client
from helpers.config import load_config
from tests.localapi_support import free_port


@pytest.fixture()
def course_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private work/build folder, a free port, the tiny model, and a local server with 20% faults."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "HUATUO_PATH", "FINETUNE_NEW_JOB", "FINETUNE_CONFIRM", "LOCALAPI_KEY"):
        monkeypatch.delenv(name, raising=False)
    env = {"WORKBOOK_WORK_DIR": str(tmp_path / "work"), "WORKBOOK_BUILD_DIR": str(tmp_path / "build"),
           "LOCALAPI_PORT": str(free_port()), "FINETUNE_BACKEND": "local", "FINETUNE_BASE_MODEL": "tiny-test",
           "HUATUO_SOURCE": "fixture", "LOCALAPI_FAULTS": "0.2", "LOCALAPI_FAULT_SEED": "7", "WORKBOOK_N_HELDOUT": "10"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load_config()
    from helpers.local_backend import ensure_server, stop_server

    ensure_server(cfg)
    yield cfg
    stop_server(cfg)


@pytest.mark.slow
def test_course_twice_with_faults_leaves_one_of_each(course_env, capsys) -> None:
    cfg = course_env
    first = course.run_course(cfg)
    assert [r.name[:2] for r in first] == ["01", "02", "03", "04", "05", "06", "07", "08", "09"]
    second = course.run_course(cfg)
    assert all(r.error is None for r in first + second)

    client = make_client(cfg)
    files = [f for f in client.files.list(purpose="fine-tune") if f.status != "error"]
    assert sorted(f.filename.split("-")[0] for f in files) == ["dpo_train", "dpo_valid", "train", "valid"], \
        [f.filename for f in files]
    jobs = list(client.fine_tuning.jobs.list(limit=100))
    assert sorted(j.method.type for j in jobs) == ["dpo", "supervised"] and {j.status for j in jobs} == {"succeeded"}

    report = (cfg.build_dir / "report.html").read_text(encoding="utf-8")
    assert "ROUGE-L" in report and "data:image/png;base64" in report
    assert (cfg.build_dir / "notebooks" / "07_compare.ipynb").is_file()
    assert "report:" in capsys.readouterr().out


def test_the_runner_imports_neither_pandas_nor_torch_until_the_report() -> None:
    """The runner sits beside the kernels, the server and the training worker for the whole course: it stays small
    (pandas alone is 0.08 GB of the 4 GB the course may use; issue 17)."""
    import subprocess
    import sys

    code = "import sys, helpers.course; print(sorted({'pandas', 'torch', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_notebooks_are_found_in_order_and_filtered(tmp_path: Path) -> None:
    for name in ["02_b.ipynb", "01_a.ipynb", "10_x.ipynb", "README.ipynb"]:
        (tmp_path / name).write_text("{}", encoding="utf-8")
    assert [p.name for p in course.course_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb", "10_x.ipynb"]
    assert [p.name for p in course.course_notebooks(tmp_path, ["02"])] == ["02_b.ipynb"]
    with pytest.raises(course.CourseError, match="with numbers 09"):
        course.course_notebooks(tmp_path, ["09"])


def test_failing_notebook_is_saved_and_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("print('hello')"), new_code_cell("raise ValueError('data/work/train.jsonl:3: bad line')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "01_fail.ipynb"
    nbformat.write(nb, path)
    run = course.execute_notebook(path, tmp_path / "out", timeout=600, env={"WORKBOOK_HEADLESS": "1"})
    assert run.error is not None and "train.jsonl:3: bad line" in run.error
    saved = nbformat.read(run.output, as_version=4)
    assert saved.cells[0].outputs[0]["text"] == "hello\n"


def test_report_without_results_still_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = load_config(env_file=tmp_path / "none.env")
    runs = [course.NotebookRun("01_a.ipynb", 1.5, tmp_path / "01_a.ipynb")]
    page = course.write_report(cfg, runs, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "01_a.ipynb" in page and "(no result file yet)" in page and cfg.api_key not in page


def _downloaded_copy(folder: Path, n: int = 1_500) -> Path:
    """A folder laid out like a download of the dataset repository, with rows shaped unlike the fixture's."""
    import json
    import random

    rng = random.Random(3)
    folder.mkdir()
    (folder / "README.md").write_text("dataset card\n", encoding="utf-8")
    (folder / "my_dataset.py").write_text("# the repository's own loading script, unused\n", encoding="utf-8")
    rows = []
    for i in range(n):
        q = f"患者性别:{'男女'[i % 2]}\n患者年龄:{i % 90}\n问题描述:第{i}例，{rng.choice(['咳嗽', '腹痛', '头晕'])}{i % 30}天了怎么办?"
        a = "你好，" + "，".join(rng.choice(["建议复查", "多喝水", "注意休息", "必要时就医"]) for _ in range(rng.randint(2, 400))) + "。"
        rows.append({"questions": "\u3000" + q if i % 50 == 0 else q, "answers": a if i % 97 else ""})
    rows += rows[:25]  # exact duplicates
    with open(folder / "test_datasets.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return folder


@pytest.mark.slow
def test_notebooks_01_to_03_on_a_downloaded_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HUATUO_PATH naming a downloaded folder: 01-03 run unchanged and give 100 valid, disjoint, deduplicated examples."""
    import json

    from helpers.validate import check_overlap, validate_file

    folder = _downloaded_copy(tmp_path / "huatuo26M-testdatasets")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "HUATUO_SOURCE", "FINETUNE_NEW_JOB", "FINETUNE_CONFIRM", "LOCALAPI_KEY"):
        monkeypatch.delenv(name, raising=False)
    env = {"WORKBOOK_WORK_DIR": str(tmp_path / "work"), "WORKBOOK_BUILD_DIR": str(tmp_path / "build"), "HUATUO_PATH": str(folder),
           "LOCALAPI_PORT": str(free_port()), "FINETUNE_BACKEND": "local", "FINETUNE_BASE_MODEL": "tiny-test"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load_config()
    assert cfg.data_path == folder / "test_datasets.jsonl"
    runs = course.run_course(cfg, only=["01", "02", "03"])
    assert [r.name[:2] for r in runs] == ["01", "02", "03"] and all(r.error is None for r in runs)

    work = cfg.work_dir
    train, valid = validate_file(work / "train.jsonl"), validate_file(work / "valid.jsonl")
    assert (train.ok, train.n_examples, valid.ok, valid.n_examples) == (True, 100, True, 20)
    assert check_overlap(work / "train.jsonl", work / "valid.jsonl") == []
    heldout = {json.loads(line)["questions"] for line in (work / "heldout.jsonl").read_text(encoding="utf-8").splitlines()}
    train_questions = {json.loads(line)["messages"][1]["content"] for line in (work / "train.jsonl").read_text(encoding="utf-8").splitlines()}
    assert len(heldout) == 50 and len(train_questions) == 100 and not heldout & train_questions
    assert all(q == q.strip() for q in train_questions)
