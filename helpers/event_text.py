"""Notebooks 06 and 09: a fine-tuning job's event messages in Chinese, for what the notebook prints.

The API's events are English, on OpenAI and on the local server alike (the server follows OpenAI's wording, so
that the same code reads both). The notebooks show a learner Chinese: `zh` rewrites the messages both backends
write (lifecycle, steps, checkpoints, the local trainer's own lines) and returns any other message unchanged,
so nothing the API said is hidden. The events themselves, as `client.fine_tuning.jobs.list_events` returns
them, are untouched.
"""

from __future__ import annotations

import re
from collections.abc import Callable

FILE_KINDS = {"training file": "训练文件", "validation file": "验证文件"}
ITEMS = {"examples": "条样本", "preference pairs": "个偏好对"}


def _files(text: str) -> str:
    """`training file: file-a and validation file: file-b` -> `训练文件 file-a 和验证文件 file-b`."""
    parts = [p.strip() for p in text.split(" and ")]
    out = []
    for part in parts:
        kind, _, file_id = part.partition(":")
        out.append(f"{FILE_KINDS.get(kind.strip(), kind.strip())} {file_id.strip()}".strip())
    return " 和".join(out)


def _validated(m: re.Match[str]) -> str:
    counts = m.group("counts")
    if not counts:
        return "文件校验通过，作业进入排队状态（queued）"
    pieces = []
    for n, kind, what in re.findall(r"(\d+) (training|validation) (examples|preference pairs)", counts):
        pieces.append(f"{'训练' if kind == 'training' else '验证'} {n} {ITEMS[what]}")
    return f"文件校验通过（{'，'.join(pieces)}），作业进入排队状态（queued）"


def _step(m: re.Match[str]) -> str:
    text = f"第 {m.group('step')}/{m.group('total')} 步：训练损失 {m.group('train')}"
    for name, label in (("valid", "批次验证损失"), ("full", "完整验证损失")):
        if m.group(name):
            text += f"，{label} {m.group(name)}"
    return text + (m.group("rest") or "")


def _checkpoint(m: re.Match[str]) -> str:
    epoch = f"（第 {m.group('epoch')} 轮末）" if m.group("epoch") else ""
    return f"第 {m.group('step')} 步{epoch}保存了检查点：{m.group('model')}"


def _cut(m: re.Match[str]) -> str:
    unit, noun = ("条", "样本") if m.group("what") == "examples" else ("个", "偏好对")
    return (f"{'训练' if m.group('kind') == 'training' else '验证'}文件：{m.group('n')} {unit}{noun}中有 {m.group('cut')} "
            f"{unit}被截到 {m.group('max')} 个词元；{m.group('skipped')} {unit}因为没有剩下可学的助手词元而跳过")


def _training(m: re.Match[str]) -> str:
    items = ITEMS["preference pairs"] if "preference" in m.group("items") else ITEMS["examples"]
    method = "（DPO，beta " + m.group("beta") + "）" if m.group("beta") else ""
    return (f"用 LoRA r={m.group('rank')} 训练 {m.group('model')}：{m.group('n')} {items}{method}"
            f"（{m.group('tokens')} 个词元），验证 {m.group('valid')} {items}；共 {m.group('steps')} 步，"
            f"批次大小 {m.group('batch')}，学习率 {m.group('lr')}，{m.group('precision')}，设备 {m.group('device')}")


RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"Created fine-tuning job: (?P<id>\S+)"), "已创建微调作业：\\g<id>"),
    (re.compile(r"Validating (?P<files>.+)"), lambda m: f"正在校验{_files(m.group('files'))}"),
    (re.compile(r"Files validated(?: \((?P<counts>[^)]*)\))?,? moving job to queued state"), _validated),
    (re.compile(r"Fine-tuning job started"), "微调作业开始运行"),
    (re.compile(r"training (?P<model>\S+) with LoRA r=(?P<rank>\d+) on (?P<n>\d+) (?P<items>examples|preference pairs)"
                r"(?: \(DPO, beta (?P<beta>[\d.]+)\))? \((?P<tokens>\d+) tokens\), (?P<valid>\d+) validation \S+(?: pairs)?; "
                r"(?P<steps>\d+) steps, batch (?P<batch>\d+), lr (?P<lr>\S+), (?P<precision>\S+) on (?P<device>\S+)"),
     _training),
    (re.compile(r"LoRA r=(?P<r>\d+), alpha=(?P<a>[\d.]+): (?P<t>[\d,]+) trainable parameters of (?P<all>[\d,]+) "
                r"\((?P<pct>[\d.]+%)\); the base model's (?P<frozen>[\d,]+) are frozen"),
     "LoRA r=\\g<r>，alpha=\\g<a>：可训练参数 \\g<t> 个，占全部 \\g<all> 个参数的 \\g<pct>；基础模型的 \\g<frozen> 个参数冻结不动"),
    (re.compile(r"continuing from the fine-tuned model's LoRA adapter .*"),
     "从微调后的模型的 LoRA 适配器接着训练（以它的权重为起点，而不是新建一个适配器）"),
    (re.compile(r"reference: the model this job starts from, frozen; log-probabilities of the (?P<t>\d+) training "
                r"and (?P<v>\d+) validation pairs computed once"),
     "参考模型：本作业起点的模型，冻结不动；\\g<t> 个训练偏好对和 \\g<v> 个验证偏好对的对数概率只算一次"),
    (re.compile(r"validation loss before training: (?P<loss>[\d.]+) \(token accuracy (?P<acc>[\d.]+)\)"),
     "训练前的完整验证损失：\\g<loss>（词元准确率 \\g<acc>）"),
    (re.compile(r"validation loss before training: (?P<loss>[\d.]+) \(the policy is the reference: ln 2\)"),
     "训练前的完整验证损失：\\g<loss>（策略模型此时就是参考模型：ln 2）"),
    (re.compile(r"Step (?P<step>\d+)/(?P<total>\d+): training loss=(?P<train>[\d.]+)(?:, validation loss=(?P<valid>[\d.]+))?"
                r"(?:, full validation loss=(?P<full>[\d.]+))?(?P<rest>.*)"), _step),
    (re.compile(r"Checkpoint created at step (?P<step>\d+)(?: \(end of epoch (?P<epoch>\d+)\))? with Snapshot ID: "
                r"(?P<model>\S+)"), _checkpoint),
    (re.compile(r"New fine-tuned model created(?:: (?P<model>\S+))?"),
     lambda m: "新的微调后的模型已创建" + (f"：{m.group('model')}" if m.group("model") else "")),
    (re.compile(r"(?P<kind>training|validation) file: (?P<cut>\d+) of (?P<n>\d+) (?P<what>examples|pairs) cut to "
                r"(?P<max>\d+) tokens; (?P<skipped>\d+) skipped \(no assistant token left to learn from\)"), _cut),
    (re.compile(r"the base model's weights are kept in bf16 and widened to float32 one layer at a time\b.*"),
     "基础模型的权重以 bf16 保存，每算到一层才临时转成 float32：只占 float32 的一半内存"
     "（LOCALAPI_TRAIN_BASE_WEIGHTS=fp32 则以 float32 保存）"),
    (re.compile(r"trained (?P<n>\d+) tokens in (?P<s>\d+) s \((?P<rate>\d+) tokens/s\)"),
     "训练了 \\g<n> 个词元，用时 \\g<s> 秒（每秒 \\g<rate> 个词元）"),
    (re.compile(r"The job has successfully completed|Fine-tuning job successfully completed"), "作业成功完成"),
    (re.compile(r"Fine-tuning job cancelled"), "微调作业已取消"),
    (re.compile(r"Fine-tuning job paused(?: at step (?P<step>\d+))?"),
     lambda m: "微调作业已暂停" + (f"（在第 {m.group('step')} 步）" if m.group("step") else "")),
    (re.compile(r"Fine-tuning job queued to resume"), "微调作业排队等待恢复"),
    (re.compile(r"Fine-tuning job resumed from step (?P<step>\d+)"), "微调作业从第 \\g<step> 步恢复"),
]


def zh(message: str) -> str:
    """An event message in Chinese where it is one the notebooks know (see RULES), else the message unchanged."""
    for pattern, replacement in RULES:
        m = pattern.fullmatch(message)
        if m is not None:
            return replacement(m) if callable(replacement) else m.expand(replacement)
    return message
