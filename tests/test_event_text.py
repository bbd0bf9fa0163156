"""helpers/event_text.py: the job events notebooks 06 and 09 print, in Chinese; unknown messages unchanged."""

from __future__ import annotations

import pytest

from helpers.event_text import zh
from tests.language import english_phrases

# Messages as the local server wrote them in the committed run of 06 and 09, and as OpenAI writes its own.
CASES = {
    "Created fine-tuning job: ftjob-BDAmi3CK5ZQbpAYTEhEEGqAm": "已创建微调作业：ftjob-BDAmi3CK5ZQbpAYTEhEEGqAm",
    "Validating training file: file-kXo and validation file: file-Pq": "正在校验训练文件 file-kXo 和验证文件 file-Pq",
    "Validating training file: file-abc": "正在校验训练文件 file-abc",
    "Files validated (100 training examples, 20 validation examples), moving job to queued state":
        "文件校验通过（训练 100 条样本，验证 20 条样本），作业进入排队状态（queued）",
    "Files validated (20 training preference pairs, 10 validation preference pairs), moving job to queued state":
        "文件校验通过（训练 20 个偏好对，验证 10 个偏好对），作业进入排队状态（queued）",
    "Files validated, moving job to queued state": "文件校验通过，作业进入排队状态（queued）",
    "Fine-tuning job started": "微调作业开始运行",
    "LoRA r=16, alpha=32: 8,798,208 trainable parameters of 638,965,632 (1.38%); the base model's 630,167,424 are frozen":
        "LoRA r=16，alpha=32：可训练参数 8,798,208 个，占全部 638,965,632 个参数的 1.38%；基础模型的 630,167,424 个参数冻结不动",
    "validation loss before training: 4.3138 (token accuracy 0.282)": "训练前的完整验证损失：4.3138（词元准确率 0.282）",
    "validation loss before training: 0.6931 (the policy is the reference: ln 2)":
        "训练前的完整验证损失：0.6931（策略模型此时就是参考模型：ln 2）",
    "Step 25/50: training loss=4.6492, validation loss=3.5410, full validation loss=3.7964":
        "第 25/50 步：训练损失 4.6492，批次验证损失 3.5410，完整验证损失 3.7964",
    "Step 1/100: training loss=1.23": "第 1/100 步：训练损失 1.23",
    "Checkpoint created at step 25 (end of epoch 1) with Snapshot ID: ft:m:local:x:ckpt-step-25":
        "第 25 步（第 1 轮末）保存了检查点：ft:m:local:x:ckpt-step-25",
    "Checkpoint created at step 10 with Snapshot ID: ft:gpt-4o-mini:org::abc:ckpt-step-10":
        "第 10 步保存了检查点：ft:gpt-4o-mini:org::abc:ckpt-step-10",
    "New fine-tuned model created: ft:m:local:x": "新的微调后的模型已创建：ft:m:local:x",
    "New fine-tuned model created": "新的微调后的模型已创建",
    "The job has successfully completed": "作业成功完成",
    "Fine-tuning job paused at step 7": "微调作业已暂停（在第 7 步）",
    "Fine-tuning job cancelled": "微调作业已取消",
    "training file: 3 of 100 examples cut to 1024 tokens; 0 skipped (no assistant token left to learn from)":
        "训练文件：100 条样本中有 3 条被截到 1024 个词元；0 条因为没有剩下可学的助手词元而跳过",
}


@pytest.mark.parametrize("message", sorted(CASES))
def test_known_messages_read_in_chinese(message: str) -> None:
    assert zh(message) == CASES[message]


def test_the_trainers_own_lines_read_in_chinese() -> None:
    lines = [
        "training qwen2.5-coder-0.5b-instruct with LoRA r=16 on 20 preference pairs (DPO, beta 0.1) (7047 tokens), "
        "10 validation preference pairs; 10 steps, batch 2, lr 2e-05, float32 on cpu",
        "training tiny-test with LoRA r=8 on 12 examples (900 tokens), 4 validation examples; 6 steps, batch 4, "
        "lr 0.0002, bfloat16 on cpu",
        "continuing from the fine-tuned model's LoRA adapter (its weights are the starting point, not a new adapter)",
        "reference: the model this job starts from, frozen; log-probabilities of the 20 training and 10 validation "
        "pairs computed once",
        "trained 7047 tokens in 286 s (25 tokens/s)",
        "the base model's weights are kept in bf16 and widened to float32 one layer at a time: half the memory of "
        "float32 weights (LOCALAPI_TRAIN_BASE_WEIGHTS=fp32 keeps them in float32)",
    ]
    for line in lines:
        assert zh(line) != line and not english_phrases(zh(line)), zh(line)
    assert "20 个偏好对（DPO，beta 0.1）" in zh(lines[0]) and "12 条样本" in zh(lines[1])


def test_an_unknown_message_is_shown_as_the_api_wrote_it() -> None:
    message = "Usage policy evaluations completed, model is now enabled for sampling"
    assert zh(message) == message
