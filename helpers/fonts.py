"""A CJK font for matplotlib, so that Chinese titles and labels render instead of empty boxes.

First choice: Noto Sans CJK from the PyPI package `noto-cjk-sans-otc` (installed with --no-deps, offline).
Otherwise a CJK font already on the system. `check_cjk_glyphs` says, before drawing, whether matplotlib
would fall back to a font without the glyphs for a given string (and raises MissingCJKGlyphsError if so).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE_FONT_FAMILY = "Noto Sans CJK SC"
# Families tried, in order, when the package font is missing (common on Linux, macOS and Windows).
SYSTEM_CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei", "Droid Sans Fallback", "PingFang SC", "Hiragino Sans GB", "Heiti SC", "STHeiti",
    "Microsoft YaHei", "SimHei", "Arial Unicode MS", "AR PL UMing CN",
)
SAMPLE_TEXT = "问题长度（字）"


class MissingCJKGlyphsError(RuntimeError):
    """matplotlib would draw some characters of a label with a font that lacks them (empty boxes)."""

    def __init__(self, text: str, missing: str, fonts: list[str]) -> None:
        self.text, self.missing, self.fonts = text, missing, fonts
        super().__init__(
            f"matplotlib has no glyph for {missing!r} (in {text!r}) in the fonts it would use ({', '.join(fonts) or 'none'}): "
            "run `make setup` to install noto-cjk-sans-otc, or install a CJK font (e.g. apt install fonts-noto-cjk), "
            "then call helpers.fonts.setup_cjk_font()"
        )


@dataclass(frozen=True)
class FontChoice:
    """The CJK font registered with matplotlib, and where it came from."""

    family: str | None  # None when no CJK font was found
    path: Path | None
    source: str  # "noto-cjk-sans-otc", "system" or "none"

    def describe(self) -> str:
        """One line for the setup cell."""
        if self.family is None:
            return "没有找到：图里的中文会显示成方框（运行 `make setup` 安装 noto-cjk-sans-otc）"
        return f"{self.family} ({self.source})"


def package_font_path() -> Path | None:
    """The .ttc shipped by noto-cjk-sans-otc, located without importing anything else."""
    spec = importlib.util.find_spec("noto_cjk_sans_otc")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "NotoSansCJK-Regular.ttc"
    return path if path.is_file() else None


def find_cjk_font() -> FontChoice:
    """The package font if installed, else the first CJK family matplotlib already knows, else none."""
    from matplotlib import font_manager

    path = package_font_path()
    if path is not None:
        return FontChoice(PACKAGE_FONT_FAMILY, path, "noto-cjk-sans-otc")
    known = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    for family in SYSTEM_CJK_FAMILIES:
        if family in known and SAMPLE_TEXT[0] in _charset(known[family]):
            return FontChoice(family, Path(known[family]), "system")
    return FontChoice(None, None, "none")


def setup_cjk_font() -> FontChoice:
    """Register the CJK font with matplotlib and put it first in the sans-serif list (idempotent)."""
    import matplotlib
    from matplotlib import font_manager

    choice = find_cjk_font()
    if choice.family is None:
        return choice
    if choice.source == "noto-cjk-sans-otc" and not any(f.name == choice.family for f in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(str(choice.path))
    sans = [f for f in matplotlib.rcParams["font.sans-serif"] if f != choice.family]
    matplotlib.rcParams["font.sans-serif"] = [choice.family, *sans]
    matplotlib.rcParams["font.family"] = ["sans-serif"]
    matplotlib.rcParams["axes.unicode_minus"] = False  # many CJK fonts lack U+2212 (minus): draw tick labels with "-"
    return choice


@lru_cache(maxsize=32)
def _charset(path: str) -> frozenset[str]:
    """The characters a font file has glyphs for (first face of a collection)."""
    from matplotlib.ft2font import FT2Font

    return frozenset(chr(code) for code in FT2Font(path).get_charmap())


def fonts_in_use() -> list[str]:
    """Font files matplotlib would try for text with the current rcParams, in fallback order."""
    import matplotlib
    from matplotlib import font_manager

    families: list[str] = []
    for family in matplotlib.rcParams["font.family"]:
        generic = f"font.{family}"
        families += list(matplotlib.rcParams[generic]) if generic in matplotlib.rcParams else [family]
    paths: list[str] = []
    for family in families:
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            continue
        if path not in paths:
            paths.append(path)
    default = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))
    return paths if paths else [default]


def check_cjk_glyphs(text: str = SAMPLE_TEXT) -> None:
    """Raise MissingCJKGlyphsError if some character of `text` has no glyph in the fonts matplotlib would use."""
    paths = fonts_in_use()
    covered: set[str] = set()
    for path in paths:
        covered |= _charset(path)
    missing = "".join(dict.fromkeys(ch for ch in text if not ch.isspace() and ch not in covered))
    if missing:
        raise MissingCJKGlyphsError(text, missing, [Path(p).name for p in paths])
