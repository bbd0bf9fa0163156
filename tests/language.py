"""What counts as an English sentence in text a learner reads (issue 18): the notebooks' outputs, job events shown
in Chinese. Ids, model names, file names and code-like words are not sentences and are removed first."""

from __future__ import annotations

import re

NOT_WORDS = re.compile(r"https?://\S*|\S*(?:[\d/_=@\\]|[:.](?=[\w-]))\S*")  # ids, paths, model names, key=value
# Words one or two spaces apart (a removed id leaves two); three or more spaces are a table's columns.
WORD = r"[A-Za-z][a-z'’]*(?:-[A-Za-z][a-z]*)*"
ENGLISH_PHRASE = re.compile(rf"\b{WORD}(?:(?:[,;:]? {{1,2}}|[,;:]){WORD}){{2,}}")


VERSIONS = re.compile(r"(?:[a-z][\w-]* \d[\w.+]*(?:, )?){3,}")  # "python 3.11.7, openai 3.51.0, ...": package names


def english_phrases(text: str) -> list[str]:
    """Runs of three or more English words in `text`, after removing ids, paths, file names and code-like words."""
    return ENGLISH_PHRASE.findall(NOT_WORDS.sub("", VERSIONS.sub("", text)))
