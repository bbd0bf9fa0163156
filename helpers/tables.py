"""Tables as the notebooks show them: text read left to right, line breaks in answers rendered (issue 18).

pandas right-aligns every cell of its HTML tables and writes a line break as a literal `\\n`; a Chinese
answer then reads badly. `show_table` returns a Styler that aligns text left, keeps line breaks and
has a fixed id (the committed HTML does not change between runs for no reason).
"""

from __future__ import annotations

import pandas as pd
from pandas.io.formats.style import Styler

CELL_STYLE = {"text-align": "left", "white-space": "pre-wrap", "vertical-align": "top"}


def show_table(frame: pd.DataFrame, *, table_id: str = "table", precision: int = 3, max_width_em: int | None = None) -> Styler:
    """`frame` styled for a notebook: left-aligned text, rendered line breaks, numbers formatted as pandas does."""
    styles = dict(CELL_STYLE, **({"max-width": f"{max_width_em}em"} if max_width_em else {}))
    header = [{"selector": "th", "props": [("text-align", "left"), ("vertical-align", "top")]}]
    return frame.style.set_uuid(table_id).format(precision=precision).set_properties(**styles).set_table_styles(header)
