"""CJK font set-up and glyph check, plots, the pager, comparison flipper and blind review widgets, and the notebook set-up cell."""

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


def _answers_table():
    import pandas as pd

    return pd.DataFrame({"问题": [f"问题{i}" for i in range(8)], "参考回答": ["医生"] * 8,
                         "基础模型": [f"基础{i}" for i in range(8)], "微调模型": [f"微调{i}" for i in range(8)]})


def test_comparison_flipper_headless_prints_every_arm_of_the_first_question(capsys):
    assert widgets.comparison_flipper(_answers_table(), headless=True) is None
    out = capsys.readouterr().out
    assert out.startswith("三组回答对比 · 第 1 / 8 条\n问：问题0")
    assert "【基础模型】基础0" in out and "【微调模型】微调0" in out and "问题1" not in out


def test_blind_pairs_order_is_seeded_and_mixed():
    pairs = widgets.blind_pairs(_answers_table(), "基础模型", "微调模型", seed=3)
    assert [p.arms for p in pairs] == [p.arms for p in widgets.blind_pairs(_answers_table(), "基础模型", "微调模型", seed=3)]
    assert {p.arms for p in pairs} == {("基础模型", "微调模型"), ("微调模型", "基础模型")}  # both orders occur in 8 coin flips
    for p in pairs:  # each answer stays with its own arm and question
        assert p.answers == tuple(f"{'基础' if arm == '基础模型' else '微调'}{p.index}" for arm in p.arms)
    assert len(widgets.blind_pairs(_answers_table(), "基础模型", "微调模型", n=3)) == 3
    with pytest.raises(KeyError, match="no column 'x'"):
        widgets.blind_pairs(_answers_table(), "x", "微调模型")


def test_blind_review_tally_and_reveal():
    pairs = widgets.blind_pairs(_answers_table(), "基础模型", "微调模型", seed=3, n=3)
    review = widgets.BlindReview(pairs)
    review.vote(0, "A")
    review.vote(1, "B")
    assert not review.done()
    review.vote(2, "tie")
    assert review.done()
    expected = {"基础模型": 0, "微调模型": 0, "平局": 1}
    expected[pairs[0].arms[0]] += 1
    expected[pairs[1].arms[1]] += 1
    assert review.tally() == expected
    text = review.reveal()
    assert f"A = {pairs[0].arms[0]}，B = {pairs[0].arms[1]}；你选 A" in text and "你平局" in text
    with pytest.raises(ValueError, match="choice must be one of"):
        review.vote(0, "C")
    with pytest.raises(IndexError):
        review.vote(3, "A")
    assert "回答 A" in widgets.pair_text(pairs[0]) and "基础模型" not in widgets.pair_text(pairs[0])


def test_blind_review_headless_is_skipped_and_says_so(capsys):
    assert widgets.blind_review(_answers_table(), "基础模型", "微调模型", n=5, headless=True) is None
    assert "跳过" in capsys.readouterr().out


def test_blind_review_widget_buttons_vote_and_reveal():
    review = widgets.BlindReview(widgets.blind_pairs(_answers_table(), "基础模型", "微调模型", seed=1, n=2))
    box = widgets.blind_review_widget(review)
    a_button, b_button, tie_button, where = box.children[0].children
    assert where.value == "第 1 / 2 题" and "问题0" in box.children[1].value
    a_button.click()
    tie_button.click()
    assert review.done() and a_button.disabled
    assert "你选 A" in box.children[2].value and "你平局" in box.children[2].value


def test_setup_notebook_prints_config_and_versions(tmp_path, monkeypatch, capsys):
    from helpers.notebook import setup_notebook

    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("LOCALAPI_KEY", "secret-key-not-to-print")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND", "HUATUO_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUATUO_SOURCE", "fixture")
    asked = []  # which configurations asked for the local server (starting one is tested in test_localapi_backend)
    monkeypatch.setattr("helpers.notebook.ensure_server", lambda c, timeout: asked.append(c) or True)
    cfg = setup_notebook("01")
    out = capsys.readouterr().out
    assert cfg.backend == "local" and "笔记本        ：01" in out and "数据来源      ：合成的测试数据" in out
    assert "tiktoken 0." in out and "matplotlib" in out and "torch" not in out
    assert "secret-key-not-to-print" not in out
    assert asked == []  # 01-03 need no server
    setup_notebook("05")
    out = capsys.readouterr().out
    assert "torch " in out
    assert asked == [cfg] and f"本地服务器（local server）已在 {cfg.base_url} 启动" in out  # 04-07 start it when none answers
