"""Tables as the notebooks show them: text read left to right, line breaks in answers rendered (issue 18).

pandas right-aligns every cell of its HTML tables and writes a line break as a space; a Chinese answer then reads
badly. JupyterLab (for a notebook that is not trusted, such as a freshly opened one) and GitHub drop a table's
`<style>` block, so the alignment is written into each cell's own `style` attribute, which both keep.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import pandas as pd

CELL_STYLE = "text-align: left; vertical-align: top; white-space: pre-wrap"


@dataclass(frozen=True)
class Table:
    """A DataFrame for display: HTML with left-aligned cells that keep line breaks; plain text as pandas prints it."""

    frame: pd.DataFrame
    precision: int = 3
    max_width_em: int | None = None

    def _cell(self, value: object) -> str:
        """One value as the table shows it: floats rounded, everything escaped."""
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.{self.precision}f}"
        return html.escape(str(value))

    def _repr_html_(self) -> str:
        """The table with each cell's style inline."""
        width = f"; max-width: {self.max_width_em}em" if self.max_width_em else ""
        td, th = f'<td style="{CELL_STYLE}{width}">', f'<th style="{CELL_STYLE}">'
        index_name = self.frame.index.name or ""
        head = th + html.escape(str(index_name)) + "</th>" + "".join(th + html.escape(str(c)) + "</th>" for c in self.frame.columns)
        rows = []
        for label, row in self.frame.iterrows():
            cells = "".join(td + self._cell(v) + "</td>" for v in row)
            rows.append(f"<tr>{th}{html.escape(str(label))}</th>{cells}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def __repr__(self) -> str:
        """A plain console's view (and a notebook viewer's without HTML)."""
        return self.frame.to_string()


def show_table(frame: pd.DataFrame, *, precision: int = 3, max_width_em: int | None = None) -> Table:
    """`frame` for a notebook: left-aligned text, rendered line breaks, floats with `precision` decimals."""
    return Table(frame, precision, max_width_em)
