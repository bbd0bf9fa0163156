"""Plots of the workbook, with Chinese labels (the CJK font comes from helpers.fonts)."""

from __future__ import annotations

from collections.abc import Sequence

from helpers.fonts import MissingCJKGlyphsError, check_cjk_glyphs


def cjk_label(zh: str, en: str) -> str:
    """The Chinese label if matplotlib can draw it, else the English one (with a one-line note why)."""
    try:
        check_cjk_glyphs(zh)
        return zh
    except MissingCJKGlyphsError as exc:
        print(f"注意：{exc}. Using the English label {en!r}.")
        return en


def length_histograms(questions: Sequence[str], answers: Sequence[str], q_tokens: Sequence[int],
                      a_tokens: Sequence[int], encoding: str, bins: int = 40):
    """A 2×2 figure: characters and tokens of questions and answers (log-scaled counts and answer lengths, so long tails show)."""
    import matplotlib.pyplot as plt

    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    panels = [  # answers span 0 to thousands of characters: their x axis is logarithmic (empty ones drawn at 1)
        (axes[0][0], [len(q) for q in questions], cjk_label("问题长度（字）", "question length (characters)"), False),
        (axes[0][1], [len(a) for a in answers], cjk_label("答案长度（字，对数刻度）", "answer length (characters, log scale)"), True),
        (axes[1][0], list(q_tokens), cjk_label(f"问题词元数（{encoding}）", f"question tokens ({encoding})"), False),
        (axes[1][1], list(a_tokens), cjk_label(f"答案词元数（{encoding}，对数刻度）", f"answer tokens ({encoding}, log scale)"), True),
    ]
    count_label = cjk_label("行数", "rows")
    for ax, values, label, log_x in panels:
        if log_x:
            values = [max(1, v) for v in values]
            ax.hist(values, bins=np.logspace(0, np.log10(max(values) + 1), bins), color="#4C72B0")
            ax.set_xscale("log")
        else:
            ax.hist(values, bins=bins, color="#4C72B0")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(count_label)
    fig.suptitle(cjk_label(f"长度分布（{len(questions)} 行）", f"length distributions ({len(questions)} rows)"))
    fig.tight_layout()
    return fig


def token_histogram(token_counts: Sequence[int], limit: int | None, encoding: str, title: str, bins: int = 30):
    """Chat tokens per training example, with the model's per-example limit as a dashed line."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.hist(list(token_counts), bins=bins, color="#55A868")
    if limit and limit <= 1.5 * max(token_counts, default=0):
        ax.axvline(limit, color="#C44E52", linestyle="--", label=cjk_label(f"上限 {limit:,}", f"limit {limit:,}"))
        ax.legend()
    elif limit:  # far to the right of every example: say so instead of squeezing the histogram
        ax.text(0.98, 0.92, cjk_label(f"上限 {limit:,}（远在图外）", f"limit {limit:,} (off the chart)"),
                transform=ax.transAxes, ha="right", color="#C44E52")
    ax.set_xlabel(cjk_label(f"每条样本的词元数（{encoding}，含系统提示）", f"tokens per example ({encoding}, with system prompt)"))
    ax.set_ylabel(cjk_label("样本数", "examples"))
    ax.set_title(cjk_label(title, "tokens per example"))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- training curves (notebook 06, course report)

# Each result column: its Chinese and English label and how it is drawn. Full validation (the whole
# validation set, once per epoch) and batch validation (a few examples, more often) are separate series.
CURVES = {
    "train_loss": ("训练损失（每步一个批次）", "training loss (one batch per step)", "-", "#4C72B0"),
    "valid_loss": ("批次验证损失（一个批次）", "validation loss (one batch)", "o", "#DD8452"),
    "full_valid_loss": ("完整验证集损失（训练前和每轮末）", "full validation loss (before training, end of each epoch)", "s-", "#C44E52"),
    "train_accuracy": ("训练词元准确率", "training token accuracy", "-", "#4C72B0"),
    "train_mean_token_accuracy": ("训练词元准确率", "training token accuracy", "-", "#4C72B0"),
    "valid_mean_token_accuracy": ("批次验证词元准确率（一个批次）", "validation token accuracy (one batch)", "o", "#DD8452"),
    "full_valid_mean_token_accuracy": ("完整验证集词元准确率（训练前和每轮末）", "full validation token accuracy (before training, end of each epoch)", "s-", "#C44E52"),
}


def _step_axes(ax, ylabel: str) -> None:
    """A training chart's panel: steps on x, `ylabel` on y, a light grid, a legend when something is labelled."""
    ax.set_xlabel(cjk_label("训练步", "step"))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_training_curves(results: "pd.DataFrame", title: str = "微调作业：损失与词元准确率"):
    """Notebook 06: loss and token accuracy per step from a job's results (full_valid_* as their own series); returns the figure."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    panels = [(ax_loss, cjk_label("损失", "loss"), ["train_loss", "valid_loss", "full_valid_loss"]),
              (ax_acc, cjk_label("词元准确率", "token accuracy"),
               ["train_accuracy", "train_mean_token_accuracy", "valid_mean_token_accuracy", "full_valid_mean_token_accuracy"])]
    drawn: set[str] = set()
    for ax, label, columns in panels:
        for column in columns:
            if column not in results.columns:
                continue
            series = results[["step", column]].dropna()
            zh, en, style, color = CURVES[column]
            if series.empty or zh in drawn:  # train_accuracy and train_mean_token_accuracy: one series
                continue
            drawn.add(zh)
            ax.plot(series["step"], series[column], style, label=cjk_label(zh, en), color=color,
                    markersize=6 if column.startswith("full") else 4, alpha=0.6 if style == "o" else 1.0)
        _step_axes(ax, label)
    fig.suptitle(cjk_label(title, "fine-tuning job: loss and token accuracy"))
    fig.tight_layout()
    return fig


DPO_PANELS = [
    (("损失", "DPO loss"), [("train_loss", "训练批次", "train batch"), ("valid_loss", "验证批次", "validation batch")]),
    (("奖励差", "reward margin"), [("train_reward_margin", "训练批次", "train batch"),
                                  ("valid_reward_margin", "验证批次", "validation batch")]),
    (("排对的比例", "pairs ranked right"), [("train_accuracy", "训练批次", "train batch"),
                                          ("valid_accuracy", "验证批次", "validation batch")]),
]


def plot_dpo_curves(results: "pd.DataFrame", title: str = "DPO 作业：损失、奖励差和排对的比例"):
    """Notebook 09: a DPO job's loss (with ln 2, where it starts), reward margin and accuracy per step; returns the figure."""
    import math

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, ((zh, en), columns) in zip(axes, DPO_PANELS):
        for (column, series_zh, series_en), color in zip(columns, ("#4C72B0", "#DD8452")):
            if column in results.columns and not results[column].dropna().empty:
                series = results[["step", column]].dropna()
                ax.plot(series["step"], series[column], "-o" if column.startswith("valid") else "-", color=color,
                        markersize=4, label=cjk_label(series_zh, series_en))
        if zh == "损失":
            ax.axhline(math.log(2), color="grey", linestyle="--", label=cjk_label("ln 2（起点）", "ln 2 (start)"))
        _step_axes(ax, cjk_label(zh, en))
    fig.suptitle(cjk_label(title, "DPO job: loss, reward margin, accuracy"))
    fig.tight_layout()
    return fig
