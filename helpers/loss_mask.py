"""What the trainer sees of one training example (notebook 05): the chat template's tokens and which of them carry loss.

The tokens and the mask come from `helpers.localapi.trainer.encode_example`, the function the local trainer
itself calls for every row of a training file, so the view cannot drift from what is trained. Only the
display is here: tokens grouped into readable pieces (a Chinese character may span several byte-level
tokens) and marked as learned (the loss is taken on them) or not.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Piece:
    """A run of tokens that decodes to readable text, and whether the loss is taken on it."""

    text: str
    n_tokens: int
    learned: bool


@dataclass(frozen=True)
class MaskView:
    """One training example as the trainer tokenises it: its pieces in order, and the counts."""

    model: str
    pieces: list[Piece]

    @property
    def n_tokens(self) -> int:
        """All tokens of the example after the chat template."""
        return sum(p.n_tokens for p in self.pieces)

    @property
    def n_learned(self) -> int:
        """Tokens the loss is computed on (the assistant's answer and its end-of-turn token)."""
        return sum(p.n_tokens for p in self.pieces if p.learned)

    def summary(self) -> str:
        """One Chinese line with the counts."""
        return (f"{self.model} 的聊天模板把这条样本变成 {self.n_tokens} 个词元，其中 {self.n_learned} 个"
                f"（{100 * self.n_learned / self.n_tokens:.0f}%）计入损失：只有医生的回答和它的结束标记。")

    def text(self) -> str:
        """Plain-text rendering: each run of learned tokens between 【 and 】, token boundaries as '|'."""
        out, inside = [], False
        for piece in self.pieces:
            if piece.learned != inside:
                out.append("【" if piece.learned else "】")
                inside = piece.learned
            out.append(piece.text + "|")
        if inside:
            out.append("】")
        return "".join(out)

    def __repr__(self) -> str:
        """What a plain console (or a notebook viewer without HTML) shows: the summary and the marked text."""
        return f"{self.summary()}\n{self.text()}"

    def _repr_html_(self) -> str:
        """Jupyter's rendering: every piece a box, learned ones highlighted, line breaks kept."""
        spans = []
        for piece in self.pieces:
            style = ("background:#ffe08a;" if piece.learned else "background:#eef1f5;color:#556;") + \
                "border:1px solid #ccd;border-radius:3px;margin:1px;padding:0 2px;white-space:pre-wrap;"
            label = f"{piece.n_tokens} 个词元，{'计入损失' if piece.learned else '不计损失'}"
            spans.append(f'<span style="{style}" title="{label}">{html.escape(piece.text)}</span>')
        legend = ('<p><span style="background:#ffe08a;padding:0 4px">黄色</span>：计入损失的词元；'
                  '<span style="background:#eef1f5;padding:0 4px">灰色</span>：不计损失（只作为输入）。'
                  f'{html.escape(self.summary())}</p>')
        return legend + '<div style="line-height:1.9;font-family:monospace">' + "".join(spans) + "</div>"


def pieces_of(tokenizer: Any, input_ids: list[int], learned: list[bool]) -> list[Piece]:
    """Group tokens into pieces that decode without broken characters; a piece never mixes learned and not learned."""
    pieces: list[Piece] = []
    buffer: list[int] = []
    for i, token in enumerate(input_ids):
        buffer.append(token)
        text = tokenizer.decode(buffer)
        last = i + 1 == len(input_ids)
        if "\ufffd" in text and not last and learned[i + 1] == learned[i]:
            continue  # part of a multi-byte character: wait for the rest
        pieces.append(Piece(text, len(buffer), learned[i]))
        buffer = []
    return pieces


def loss_mask_view(messages: list[dict[str, Any]], model: str, cache_dir: Path) -> MaskView:
    """One chat example (`messages` of a training-file row) through `model`'s template, with the trainer's loss mask."""
    from helpers.localapi import models
    from helpers.localapi.trainer import IGNORE, encode_example

    tokenizer = models.load_tokenizer(model, cache_dir)
    spec = models.get_spec(model)
    example = encode_example(tokenizer, messages, spec.max_seq_len, models.stop_token_ids(tokenizer))
    learned = [label != IGNORE and t > 0 for t, label in enumerate(example.labels)]
    return MaskView(model, pieces_of(tokenizer, example.input_ids, learned))
