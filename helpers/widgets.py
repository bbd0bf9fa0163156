"""Small ipywidgets for the notebooks, each with a plain-text twin for headless runs.

In a live notebook a widget is displayed; headless (nbval, `make course`: WORKBOOK_HEADLESS=1, or no
Jupyter kernel) the same content is printed as plain text and the function returns None, so no widget
repr ("VBox(children=...)") ends up in the saved output.
"""

from __future__ import annotations

import html
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    """Flip through notebook 07's side-by-side answers, one question per page (plain first page headless)."""
    def render(i: int) -> str:
        row = table.iloc[i]
        parts = [f"问：{row['question']}"]
        for column in table.columns[1:]:
            text = re.sub(r"\s*\n\s*", "\n", str(row[column])).strip() or "（空回答）"  # blank-line runs hid the other arms
            parts.append(f"【{column}】{text[:max_chars]}{'…' if len(text) > max_chars else ''}")
        return "\n\n".join(parts)

    show_pager(list(range(len(table))), render, title="三组回答对比", headless=headless)
