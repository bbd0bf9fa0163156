"""Notebook 09's helpers: preference pairs from training rows, the DPO job's plan and its place in run_state.json."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from helpers import preference, validate, workflow
from helpers.data import write_jsonl
from helpers.evaluation import Answer
from tests.test_workflow import _jsonl, api, cfg, client  # noqa: F401  (fixtures: the scripted API and a config)

SYSTEM = "你是一名医生。"


def _rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"questions": f"问题{i}：头疼怎么办？", "answers": f"医生的回答{i}：多休息，必要时就医。"} for i in range(start, start + n)]


def _answers(texts: list[str]) -> list[Answer]:
    return [Answer("arm", i, text, 10, len(text), "stop", False) for i, text in enumerate(texts)]


def test_pairs_prefer_the_doctor_and_count_what_cannot_pair() -> None:
    rows = _rows(3)
    answers = _answers(["模型自己的回答：头疼头疼头疼", "   ", rows[2]["answers"]])
    pairs = preference.build_pairs(rows, list(reversed(answers)), SYSTEM)  # matched by index, not by order
    assert len(pairs.examples) == 1
    first = pairs.examples[0]
    assert first["input"]["messages"] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": rows[0]["questions"]}]
    assert first["preferred_output"] == [{"role": "assistant", "content": rows[0]["answers"]}]
    assert first["non_preferred_output"] == [{"role": "assistant", "content": "模型自己的回答：头疼头疼头疼"}]
    assert [row for row, _ in pairs.skipped] == [2, 3]
    assert "跳过 2 行" in pairs.summary() and "第 2 行：模型的回答是空的" in pairs.summary()


def test_pairs_never_use_a_heldout_question() -> None:
    rows = _rows(3)
    with pytest.raises(preference.PreferenceError, match="held-out"):
        preference.build_pairs(rows, _answers(["a", "b", "c"]), SYSTEM, heldout=[{"questions": rows[1]["questions"] + " ", "answers": ""}])
    with pytest.raises(preference.PreferenceError, match="2 model answers for 3 rows"):
        preference.build_pairs(rows, _answers(["a", "b"]), SYSTEM)


def test_pairs_written_are_what_the_dpo_validator_accepts(tmp_path: Path) -> None:
    rows = _rows(12)
    pairs = preference.build_pairs(rows, _answers([f"模型的回答{i}" for i in range(12)]), SYSTEM)
    path = tmp_path / "dpo_train.jsonl"
    assert write_jsonl(path, pairs.examples) == 12  # notebook 09 writes the pairs with the project's one JSONL writer
    data = path.read_bytes()
    assert "医生".encode() in data  # UTF-8, not \\u escapes
    assert validate.detect_method(data) == "dpo"
    report = validate.validate_file(path, method="dpo", check_token_limit=False)
    assert report.ok, report.lines()
    table = preference.pair_table(pairs, n=2, max_chars=4)
    assert list(table.columns) == ["问题", "偏好的回答（医生）", "不偏好的回答（监督微调模型自己写的）"]
    assert table.iloc[0, 1] == "医生的回……"


def test_habit_counts_loops_and_cuts() -> None:
    answers = _answers(["胃复康颗粒，" * 8, "多喝水。"])
    answers[0].finish_reason = "length"
    assert preference.habit_counts(answers) == {"回答数": 2, "陷入重复": 1, "被截断": 1}


def _uploads(cfg, client, tmp_path):  # noqa: F811
    train = workflow.upload_file(client, cfg, _jsonl(tmp_path, "dpo_train.jsonl", "t\n"))
    valid = workflow.upload_file(client, cfg, _jsonl(tmp_path, "dpo_valid.jsonl", "v\n"))
    return train, valid


def test_dpo_plan_asks_for_dpo_with_beta_and_has_its_own_identity(api, client, cfg, tmp_path) -> None:  # noqa: F811
    train, valid = _uploads(cfg, client, tmp_path)
    dpo = preference.plan_dpo_job(cfg, "ft:base:local:huatuo:abc", train, valid, beta=0.1, n_epochs=1)
    kwargs = dpo.create_kwargs()
    assert kwargs["model"] == "ft:base:local:huatuo:abc" and kwargs["suffix"] == preference.DPO_SUFFIX
    assert kwargs["method"] == {"type": "dpo", "dpo": {"hyperparameters": {
        "beta": 0.1, "n_epochs": 1, "batch_size": "auto", "learning_rate_multiplier": "auto"}}}
    assert dpo.state_key == "dpo_job"
    assert preference.plan_dpo_job(cfg, "ft:base:local:huatuo:abc", train, valid, beta=0.2).run_id != dpo.run_id
    table = workflow.plan_table(dpo, preference.PLAN_LABELS)
    assert table.set_index("参数").loc["beta", "值"] == "0.1"
    assert table.set_index("参数").loc["method.type", "含义"].startswith("方法：dpo")


def test_supervised_identity_is_unchanged_by_the_method_field(api, client, cfg, tmp_path) -> None:  # noqa: F811
    """A course re-run after this change must find notebook 05's job again: the supervised run_id is the old formula."""
    train, valid = _uploads(cfg, client, tmp_path)
    plan = workflow.plan_job(cfg, train, valid, suffix="huatuo")
    params = {"model": plan.model, "n_epochs": plan.n_epochs, "batch_size": "auto", "lr_mult": "auto", "seed": plan.seed,
              "suffix": "huatuo"}
    identity = json.dumps({"train": train.sha256, "valid": valid.sha256, **params}, sort_keys=True)
    assert plan.run_id == hashlib.sha256(identity.encode()).hexdigest()[:16]
    assert plan.state_key == "job" and "beta" not in plan.create_kwargs()["method"]["supervised"]["hyperparameters"]


def test_dpo_job_is_recorded_beside_the_supervised_job(api, client, cfg, tmp_path) -> None:  # noqa: F811
    train, valid = _uploads(cfg, client, tmp_path)
    supervised = workflow.find_or_create_job(client, cfg, workflow.plan_job(cfg, train, valid))
    dpo_plan = preference.plan_dpo_job(cfg, "ft:base:local:huatuo:abc", train, valid)
    dpo = workflow.find_or_create_job(client, cfg, dpo_plan)
    again = workflow.find_or_create_job(client, cfg, dpo_plan)
    assert again.reused and again.job.id == dpo.job.id and len(api.jobs) == 2
    assert workflow.recorded_job_id(cfg) == supervised.job.id
    assert workflow.recorded_job_id(cfg, "dpo_job") == dpo.job.id
    assert json.loads(api.jobs[1]["metadata"]["params"])["method"] == "dpo"
    with pytest.raises(workflow.WorkflowError, match="run notebook 09's launch cell first"):
        workflow.recorded_job_id(dataclasses.replace(cfg, work_dir=tmp_path / "empty"), "dpo_job")


def _dpo_results() -> pd.DataFrame:
    return pd.DataFrame({"step": [2, 1, 3], "train_loss": [0.62, math.log(2), 0.5], "train_accuracy": [0.5, 0.0, 1.0],
                         "valid_loss": [None, 0.69, 0.6], "valid_accuracy": [None, 0.0, 0.5],
                         "train_reward_margin": [0.1, 0.0, 0.3], "valid_reward_margin": [None, 0.0, 0.2]})


def test_first_step_reads_the_earliest_row() -> None:
    first = preference.first_step(_dpo_results())
    assert first["step"] == 1 and first["train_loss"] == pytest.approx(first["ln2"]) and first["train_reward_margin"] == 0


def test_dpo_curves_draw_three_panels_with_ln2() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from helpers.plots import plot_dpo_curves

    fig = plot_dpo_curves(_dpo_results())
    loss, margin, accuracy = fig.axes
    assert any(line.get_ydata()[0] == pytest.approx(math.log(2)) for line in loss.get_lines())
    assert len(margin.get_lines()) == 2 and len(accuracy.get_lines()) == 2
