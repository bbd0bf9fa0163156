"""helpers/tables.py: tables that read left to right with their line breaks, even where `<style>` is dropped."""

from __future__ import annotations

import pandas as pd

from helpers.tables import CELL_STYLE, show_table


def test_every_cell_carries_its_own_style_and_the_text_stays_as_written() -> None:
    frame = pd.DataFrame({"回答": ["你好，\n1. 多休息", "<b>不是标签</b>"], "分数": [1.23456, float("nan")]})
    frame.index.name = "组"
    table = show_table(frame, precision=2, max_width_em=20)
    page = table._repr_html_()
    assert "<style" not in page  # JupyterLab (untrusted) and GitHub drop style blocks
    assert page.count(f'<td style="{CELL_STYLE}; max-width: 20em">') == 4
    assert "你好，\n1. 多休息" in page and "&lt;b&gt;不是标签&lt;/b&gt;" in page
    assert ">1.23</td>" in page and ">组</th>" in page
    assert repr(table) == frame.to_string()  # plain consoles get pandas' own text
