"""CJK font set-up and glyph check, plots, the pager widget, and the notebook set-up cell."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from helpers import fonts, plots, widgets  # noqa: E402


def test_package_font_is_found_and_registered():
    choice = fonts.setup_cjk_font()
    assert choice.source == "noto-cjk-sans-otc" and choice.path.suffix == ".ttc"
    assert matplotlib.rcParams["font.sans-serif"][0] == fonts.PACKAGE_FONT_FAMILY
    fonts.check_cjk_glyphs("问题长度（字）血压 130/80")  # does not raise


def test_glyph_check_raises_when_matplotlib_would_fall_back():
    with matplotlib.rc_context({"font.family": ["sans-serif"], "font.sans-serif": ["DejaVu Sans"]}):
        with pytest.raises(fonts.MissingCJKGlyphsError) as info:
            fonts.check_cjk_glyphs("血压 abc")
    assert info.value.missing == "血压" and "DejaVuSans.ttf" in str(info.value) and "make setup" in str(info.value)


def test_cjk_label_falls_back_to_english_with_a_message(capsys):
    with matplotlib.rc_context({"font.family": ["sans-serif"], "font.sans-serif": ["DejaVu Sans"]}):
        assert plots.cjk_label("行数", "rows") == "rows"
    assert "Using the English label" in capsys.readouterr().out
    fonts.setup_cjk_font()
    assert plots.cjk_label("行数", "rows") == "行数"


def test_length_histograms_draw_chinese_labels():
    fonts.setup_cjk_font()
    fig = plots.length_histograms(["问一", "问二问二"], ["答", "答答答"], [2, 3], [1, 2], "o200k_base")
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert labels[0] == "问题长度（字）" and "o200k_base" in labels[3]
    fig.canvas.draw()
    plt.close(fig)


def test_token_histogram_marks_the_limit():
    fig = plots.token_histogram([10, 20, 5000], 4096, "o200k_base", "训练样本")
    assert any(line.get_xdata()[0] == 4096 for line in fig.axes[0].lines)
    plt.close(fig)
    fig = plots.token_histogram([10, 20, 30], 4096, "o200k_base", "训练样本")
    assert not fig.axes[0].lines and "4,096" in fig.axes[0].texts[0].get_text()
    plt.close(fig)


def test_pager_headless_prints_first_page_and_returns_nothing(capsys):
    result = widgets.show_pager([{"questions": "问", "answers": "答"}], widgets.row_text, title="样例", headless=True)
    assert result is None
    assert capsys.readouterr().out == "样例 · 第 1 / 1 条\n问：问\n答：答\n"


def test_pager_moves_within_bounds_and_widget_buttons_work():
    pager = widgets.Pager(["a", "b", "c"], str.upper, title="t")
    assert pager.move(-1) == 0 and pager.move(5) == 2 and pager.page_text() == "t · 第 3 / 3 条\nC"
    pager.index = 0
    box = pager.widget()
    buttons, page = box.children[0].children, box.children[1]
    prev_b, next_b, where = buttons
    assert prev_b.disabled and where.value == "1 / 3" and "A" in page.value
    next_b.click()
    next_b.click()
    assert where.value == "3 / 3" and next_b.disabled and "C" in page.value
    prev_b.click()
    assert pager.index == 1


def test_pager_empty_and_row_text_shortens_long_answers(capsys):
    assert widgets.show_pager([], str, title="空", headless=True) is None
    assert "没有可显示的条目" in capsys.readouterr().out
    text = widgets.row_text({"questions": "q", "answers": "长" * 1000}, max_chars=10)
    assert text.endswith("…（共 1000 字）") and text.count("长") == 10


def test_setup_notebook_prints_config_and_versions(tmp_path, monkeypatch, capsys):
    from helpers.notebook import setup_notebook

    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("LOCALAPI_KEY", "secret-key-not-to-print")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND", "HUATUO_PATH"):
        monkeypatch.delenv(name, raising=False)
    asked = []  # which configurations asked for the local server (starting one is tested in test_localapi_backend)
    monkeypatch.setattr("helpers.notebook.ensure_server", lambda c, timeout: asked.append(c) or True)
    cfg = setup_notebook("01")
    out = capsys.readouterr().out
    assert cfg.backend == "local" and "notebook    : 01" in out and "data source : fixture" in out
    assert "tiktoken 0." in out and "matplotlib" in out and "torch" not in out
    assert "secret-key-not-to-print" not in out
    assert asked == []  # 01-03 need no server
    setup_notebook("05")
    out = capsys.readouterr().out
    assert "torch " in out
    assert asked == [cfg] and f"local server: started on {cfg.base_url}" in out  # 04-07 start it when none answers
