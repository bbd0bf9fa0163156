"""Small ipywidgets for the notebooks, each with a plain-text twin for headless runs.

In a live notebook a widget is displayed; headless (nbval, `make course`: WORKBOOK_HEADLESS=1, or no
Jupyter kernel) the same content is printed as plain text and the function returns None, so no widget
repr ("VBox(children=...)") ends up in the saved output.
"""

from __future__ import annotations

import html
import os
import random
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def is_headless() -> bool:
    """True when nobody watches a live notebook: WORKBOOK_HEADLESS=1, or not inside a Jupyter kernel."""
    return os.environ.get("WORKBOOK_HEADLESS", "") == "1" or "ipykernel" not in sys.modules


@dataclass
class Pager:
    """Previous/next over items; `render(item) -> str` makes the plain text shown for one item."""

    items: Sequence[Any]
    render: Callable[[Any], str]
    title: str = ""
    index: int = 0

    def page_text(self, index: int | None = None) -> str:
        """The plain text of one page, with a '标题 · 第 i / n 条' header."""
        i = self.index if index is None else index
        head = f"{self.title} · " if self.title else ""
        return f"{head}第 {i + 1} / {len(self.items)} 条\n{self.render(self.items[i])}"

    def move(self, step: int) -> int:
        """Go `step` pages forward (negative: back), staying in range; return the new index."""
        self.index = max(0, min(len(self.items) - 1, self.index + step))
        return self.index

    def widget(self) -> Any:
        """The ipywidgets view: ◀ 上一条 / 下一条 ▶ buttons, a position label, the page as preformatted text."""
        import ipywidgets as w

        prev_b = w.Button(description="◀ 上一条", layout=w.Layout(width="110px"))
        next_b = w.Button(description="下一条 ▶", layout=w.Layout(width="110px"))
        where = w.Label()
        page = w.HTML()

        def refresh() -> None:
            where.value = f"{self.index + 1} / {len(self.items)}"
            text = html.escape(self.render(self.items[self.index]))
            page.value = f"<pre style='white-space: pre-wrap; font-family: inherit'>{text}</pre>"
            prev_b.disabled = self.index == 0
            next_b.disabled = self.index == len(self.items) - 1

        prev_b.on_click(lambda _: (self.move(-1), refresh()))
        next_b.on_click(lambda _: (self.move(1), refresh()))
        refresh()
        box = w.VBox([w.HBox([prev_b, next_b, where]), page])
        box.add_class("workbook-pager")
        return box


def show_pager(items: Sequence[Any], render: Callable[[Any], str], title: str = "", headless: bool | None = None) -> Pager | None:
    """Page through items: a widget in a live notebook, the first page as plain text headless. Returns None (nothing to echo)."""
    if not items:
        print(f"{title}：没有可显示的条目" if title else "没有可显示的条目")
        return None
    pager = Pager(items, render, title)
    if is_headless() if headless is None else headless:
        print(pager.page_text())
        return None
    from IPython.display import display

    display(pager.widget())
    return None


def row_text(row: dict[str, str], max_chars: int = 400) -> str:
    """A Huatuo row as '问：…\\n答：…', long answers shortened with their full length noted."""
    answer = row["answers"]
    if len(answer) > max_chars:
        answer = f"{answer[:max_chars]}…（共 {len(answer)} 字）"
    return f"问：{row['questions']}\n答：{answer}"


# ---------------------------------------------------------------- job progress and comparison flipper (notebooks 06/07)


class JobProgress:
    """An ipywidgets progress bar for `helpers.workflow.poll_job` (the same update/close interface as PlainProgress)."""

    def __init__(self) -> None:
        import ipywidgets as w
        from IPython.display import display

        self.bar = w.IntProgress(value=0, min=0, max=1, description="训练", bar_style="info")
        self.label = w.Label("等待第一步…")
        box = w.HBox([self.bar, self.label])
        box.add_class("workbook-job-progress")
        display(box)

    def update(self, status: str, step: int | None, total: int | None) -> None:
        """Move the bar to `step` of `total` and show the job status."""
        if total:
            self.bar.max = total
            self.bar.value = min(step or 0, total)
            self.label.value = f"step {step}/{total} · {status}"
        else:
            self.label.value = status

    def close(self, status: str) -> None:
        """Colour the bar by the final status."""
        self.bar.bar_style = {"succeeded": "success", "failed": "danger", "cancelled": "warning"}.get(status, "info")
        self.label.value = status


def job_progress() -> Any:
    """A progress bar widget in a live notebook, plain text lines headless."""
    from helpers.workflow import PlainProgress

    return PlainProgress() if is_headless() else JobProgress()


def comparison_flipper(table: Any, max_chars: int = 300, headless: bool | None = None) -> None:
    """Flip through notebook 07's side-by-side answers (first column: the question), one question per page (plain first page headless)."""
    def render(i: int) -> str:
        row = table.iloc[i]
        parts = [f"问：{row.iloc[0]}"]
        for column in table.columns[1:]:
            text = re.sub(r"\s*\n\s*", "\n", str(row[column])).strip() or "（空回答）"  # blank-line runs hid the other arms
            parts.append(f"【{column}】{text[:max_chars]}{'…' if len(text) > max_chars else ''}")
        return "\n\n".join(parts)

    show_pager(list(range(len(table))), render, title="三组回答对比", headless=headless)


# ---------------------------------------------------------------- blind review (notebook 07)

TIE = "tie"
CHOICES = ("A", "B", TIE)


@dataclass(frozen=True)
class BlindPair:
    """One held-out question with two arms' answers shown as A and B; `arms` says which arm is A and which is B."""

    index: int
    question: str
    answers: tuple[str, str]
    arms: tuple[str, str]


def blind_pairs(table: Any, arm_x: str, arm_y: str, seed: int = 42, n: int | None = None) -> list[BlindPair]:
    """The first n rows of notebook 07's side-by-side table (first column: the question) as A/B pairs in seeded random order."""
    for arm in (arm_x, arm_y):
        if arm not in table.columns:
            raise KeyError(f"no column {arm!r} in the answers table (columns: {', '.join(map(str, table.columns))})")
    rng = random.Random(seed)
    pairs = []
    for i in range(len(table) if n is None else min(n, len(table))):
        row = table.iloc[i]
        first, second = (arm_x, arm_y) if rng.random() < 0.5 else (arm_y, arm_x)
        pairs.append(BlindPair(i, str(row.iloc[0]), (str(row[first]), str(row[second])), (first, second)))
    return pairs


@dataclass
class BlindReview:
    """The reader's votes on blind pairs: 'A', 'B' or 'tie' per pair, then a tally by arm and the reveal."""

    pairs: Sequence[BlindPair]
    votes: dict[int, str] = field(default_factory=dict)

    def vote(self, position: int, choice: str) -> None:
        """Record the choice for the pair at `position` (a later vote replaces an earlier one)."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)} (got {choice!r})")
        if not 0 <= position < len(self.pairs):
            raise IndexError(f"pair {position} does not exist: there are {len(self.pairs)}")
        self.votes[position] = choice

    def done(self) -> bool:
        """True once every pair has a vote."""
        return len(self.votes) == len(self.pairs)

    def tally(self) -> dict[str, int]:
        """Votes per arm (a vote for A counts for whichever arm was A there) and ties, over the pairs voted on."""
        arms = list(dict.fromkeys(arm for pair in self.pairs for arm in pair.arms))
        counts = {arm: 0 for arm in arms} | {"平局": 0}
        for position, choice in self.votes.items():
            pair = self.pairs[position]
            counts["平局" if choice == TIE else pair.arms[0 if choice == "A" else 1]] += 1
        return counts

    def reveal(self) -> str:
        """The tally and, per pair, which arm was A and which was B, with the reader's vote."""
        lines = ["你的投票：" + "，".join(f"{k} {v}" for k, v in self.tally().items())]
        for position, pair in enumerate(self.pairs):
            vote = {"A": "选 A", "B": "选 B", TIE: "平局"}.get(self.votes.get(position, ""), "未投票")
            lines.append(f"第 {position + 1} 题（留出集第 {pair.index + 1} 条）：A = {pair.arms[0]}，B = {pair.arms[1]}；你{vote}")
        return "\n".join(lines)


def pair_text(pair: BlindPair, max_chars: int = 400) -> str:
    """One blind pair as plain text: the question, then answer A and answer B (no arm names)."""
    def clip(text: str) -> str:
        text = re.sub(r"\s*\n\s*", "\n", text).strip() or "（空回答）"
        return text[:max_chars] + ("…" if len(text) > max_chars else "")

    return f"问：{pair.question}\n\n【回答 A】{clip(pair.answers[0])}\n\n【回答 B】{clip(pair.answers[1])}"


def blind_review_widget(review: BlindReview) -> Any:
    """The ipywidgets view of a blind review: one pair at a time, three buttons, the tally and reveal at the end."""
    import ipywidgets as w

    where, page, result = w.Label(), w.HTML(), w.HTML()
    buttons = [w.Button(description=label, layout=w.Layout(width="120px")) for label in ("A 更好", "B 更好", "差不多")]
    state = {"position": 0}

    def refresh() -> None:
        position = state["position"]
        if review.done():
            where.value = f"{len(review.pairs)} / {len(review.pairs)} 题已投票"
            page.value = ""
            result.value = f"<pre style='white-space: pre-wrap; font-family: inherit'>{html.escape(review.reveal())}</pre>"
            for b in buttons:
                b.disabled = True
            return
        where.value = f"第 {position + 1} / {len(review.pairs)} 题"
        text = html.escape(pair_text(review.pairs[position]))
        page.value = f"<pre style='white-space: pre-wrap; font-family: inherit'>{text}</pre>"

    def choose(choice: str) -> None:
        review.vote(state["position"], choice)
        state["position"] = min(state["position"] + 1, len(review.pairs) - 1)
        refresh()

    for button, choice in zip(buttons, CHOICES):
        button.on_click(lambda _, c=choice: choose(c))
    refresh()
    box = w.VBox([w.HBox([*buttons, where]), page, result])
    box.add_class("workbook-blind-review")
    return box


def blind_review(table: Any, arm_x: str, arm_y: str, seed: int = 42, n: int = 10, headless: bool | None = None) -> BlindReview | None:
    """Notebook 07's blind review of two arms on n held-out questions: a widget live; headless it is skipped, saying so."""
    pairs = blind_pairs(table, arm_x, arm_y, seed, n)
    if is_headless() if headless is None else headless:
        print(f"盲评：无人值守运行，跳过（在 JupyterLab 里运行这一格，就能对 {len(pairs)} 道题投票）")
        return None
    from IPython.display import display

    review = BlindReview(pairs)
    display(blind_review_widget(review))
    return review
