"""The course as a reader sees it: JupyterLab in a real browser (Debian's Chromium driven by Playwright).

`make lab` (python -m helpers.lab) starts the local API server with the tiny test model in a
private work folder and JupyterLab on a free port; the test opens every notebook in order, runs
it through the JupyterLab UI (Run → Restart Kernel and Run All Cells…) and checks what is on the
screen: no error output, plots that are drawn, widgets that render as widgets (not as their text
repr), the progress bar at 100 %, the comparison widget's "next" control. One screenshot per
notebook goes to `<build>/screenshots/`.

Without Chromium the test skips and says how to install it; with CI=true it fails instead.
The notebooks run from a copy, so the committed notebooks are never touched.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests import browser_harness as bh
from tests.localapi_support import free_port

pytestmark = pytest.mark.slow  # the whole course in a real browser: minutes

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.name for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
INSTALL_HINT = (
    "the browser test needs Chromium: install it with `sudo apt-get install chromium` "
    "(Debian/Ubuntu; or set CHROMIUM_PATH to a Chromium/Chrome binary), then run `make test` again"
)
# Variables of the reader's shell that would point the test's kernels somewhere else.
CLEARED_ENV = (
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "LOCALAPI_KEY", "LOCALAPI_PORT", "LOCALAPI_FAULTS", "FINETUNE_BACKEND",
    "FINETUNE_NEW_JOB", "FINETUNE_CONFIRM", "HUATUO_PATH", "HUATUO_SOURCE", "MPLBACKEND", "WORKBOOK_HEADLESS",
    "JUPYTER_TOKEN", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR",
)
NEXT_BUTTON = re.compile(r"next|下一|后一|›|»|▶|→|⟩", re.IGNORECASE)
RUN_TIMEOUT_S = 600  # one notebook, on the tiny model; the slowest (06, training) takes a minute or two


def screenshot_dir() -> Path:
    """`<build>/screenshots`, where build is the configured build folder (WORKBOOK_BUILD_DIR, default build/)."""
    build = Path(os.environ.get("WORKBOOK_BUILD_DIR") or REPO_ROOT / "build").resolve()
    return build / "screenshots"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium; skip (or, in CI, fail) with install instructions when it is missing."""
    path = bh.find_chromium()
    if path is None:
        if IN_CI:
            pytest.fail(f"CI=true but Chromium is missing: {INSTALL_HINT}")
        pytest.skip(INSTALL_HINT)
    return path


def make_course_copy(root: Path) -> Path:
    """A folder that looks like the repository, with its own copy of notebooks/ (JupyterLab saves into it)."""
    root.mkdir(parents=True)
    for entry in REPO_ROOT.iterdir():
        if entry.name in {".git", "notebooks", "build", ".venv"} or entry.name.startswith(".pytest"):
            continue
        (root / entry.name).symlink_to(entry)
    shutil.copytree(REPO_ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    write_canary(root / "notebooks" / CANARY)
    return root


CANARY = "99_browser_canary.ipynb"
CANARY_CELLS = [
    "import ipywidgets as w\nbar = w.IntProgress(value=0, max=4, description='进度')\ndisplay(bar)\nbar.value = 4",
    "import matplotlib.pyplot as plt\nfrom helpers.fonts import setup_cjk_font\nsetup_cjk_font()\n"
    "fig, ax = plt.subplots(figsize=(3, 2))\nax.plot([1, 2, 3])\nax.set_title('中文标题')\nplt.show()",
    "import sys\nprint('canary warning', file=sys.stderr)",
    "raise ValueError('canary failure')",
    "print('never runs')",
]


def write_canary(path: Path) -> None:
    """A notebook with one of each thing the checks look for: a widget, a Chinese plot, stderr, an error."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CANARY_CELLS]
    nbformat.write(nb, path)


def course_env(tmp: Path, api_port: int) -> dict[str, str]:
    """The environment `make lab` gets: local backend, tiny model, fixture data, private folders."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    work = tmp / "work"
    key = "local-browser-test-" + secrets.token_urlsafe(16)
    env.update(
        {
            "FINETUNE_BACKEND": "local",
            "FINETUNE_BASE_MODEL": "tiny-test",
            "HUATUO_SOURCE": "fixture",
            "WORKBOOK_WORK_DIR": str(work),
            "WORKBOOK_BUILD_DIR": str(tmp / "build"),
            "LOCALAPI_PORT": str(api_port),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{api_port}/v1",
            "OPENAI_API_KEY": key,  # the environment wins over a reader's .env (load_config never overrides it)
            "LOCALAPI_KEY": key,
            "JUPYTERLAB_SETTINGS_DIR": str(bh.write_lab_settings(tmp / "lab-settings")),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
            "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
            "IPYTHONDIR": str(tmp / "ipython"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="module")
def lab(chromium: str, tmp_path_factory: pytest.TempPathFactory):
    """`python -m helpers.lab` (what `make lab` runs) on free ports; yields (base_url, token); stops it all after."""
    tmp = tmp_path_factory.mktemp("browser")
    root = make_course_copy(tmp / "course")
    api_port, lab_port = free_port(), free_port()
    env = course_env(tmp, api_port)
    log = tmp / "lab.log"
    cmd = [sys.executable, "-m", "helpers.lab", "--no-browser", "--port", str(lab_port), "--root-dir", str(root)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=bh.die_with_parent)
    try:
        match = bh.wait_for_line(log, rf"http://127\.0\.0\.1:{lab_port}/lab/tree/notebooks\?token=(\S+)", 300, proc)
        token = match.group(1)
        base = f"http://127.0.0.1:{lab_port}"
        bh.wait_for_http(f"{base}/api/status?token={token}", 120, proc, log)
        yield base, token
    finally:
        proc.send_signal(signal.SIGTERM)  # helpers.lab stops JupyterLab and the server it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        try:  # should already be gone; make sure no server outlives the test
            httpx.post(f"http://127.0.0.1:{api_port}/local/shutdown",
                       headers={"Authorization": f"Bearer {env['OPENAI_API_KEY']}"}, timeout=5)
        except httpx.HTTPError:
            pass
        print(f"\nJupyterLab/server log: {log}\n{bh.tail(log, 15)}")


@pytest.fixture(scope="module")
def page(lab, chromium: str, tmp_path_factory: pytest.TempPathFactory):
    """A logged-in JupyterLab page in headless Chromium with a fresh profile and the packaged CJK font."""
    from playwright.sync_api import sync_playwright

    base, token = lab
    tmp = tmp_path_factory.mktemp("chromium")
    browser_env = {**os.environ, "FONTCONFIG_FILE": str(bh.write_fontconfig(tmp / "fontconfig"))}
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp / "profile"), executable_path=chromium, headless=True, args=bh.CHROMIUM_ARGS,
            env=browser_env, viewport={"width": 1400, "height": 1000}, locale="zh-CN",
        )
        context.set_default_timeout(60_000)
        pg = context.pages[0] if context.pages else context.new_page()
        pg.goto(f"{base}/lab/tree/notebooks?token={token}", wait_until="domcontentloaded")  # the URL `make lab` prints
        pg.wait_for_selector(".jp-FileBrowser .jp-DirListing-item", timeout=120_000)
        yield pg
        context.close()


def test_widgets_extension_is_active(page) -> None:
    """The ipywidgets front end (jupyterlab_widgets) is loaded by JupyterLab and not disabled."""
    names, disabled = bh.active_extensions(page)
    assert bh.WIDGETS_EXTENSION in names, f"JupyterLab loads {sorted(names)}: ipywidgets' extension is missing"
    assert bh.WIDGETS_EXTENSION not in disabled, f"{bh.WIDGETS_EXTENSION} is disabled in the JupyterLab config"


def test_there_are_notebooks() -> None:
    """The course has its notebooks (otherwise the parametrised test below would silently test nothing)."""
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


def test_checks_see_what_a_person_sees(page) -> None:
    """The checks themselves: on a canary notebook they find the error, the stderr, the skipped cell, the widget and plot."""
    bh.open_notebook(page, f"notebooks/{CANARY}")
    try:
        bh.run_all_via_menu(page)
        result = bh.wait_all_executed(page, 300)
        outputs = bh.rendered_outputs(page)
        errors = bh.error_outputs(outputs)
        assert result.not_run == [4], result
        assert [o.cell for o in errors] == [3] and "ValueError: canary failure" in errors[0].text
        assert [o.cell for o in bh.stderr_outputs(outputs) if o not in errors] == [2]
        assert not bh.widget_reprs(outputs)
        assert [b["style"] for b in bh.progress_bars(page)] == ["100%"]
        assert [i["cell"] for i in bh.rendered_images(page)] == [1]
        assert not [o for o in outputs if "missing from font" in o.text]  # matplotlib found the CJK font
    finally:
        bh.close_and_shut_down(page, CANARY)


def check_01(page, problems: list[str]) -> None:
    """01: the histograms are drawn (decoded images in the outputs)."""
    images = bh.rendered_images(page)
    if not images:
        problems.append("01: no histogram image was rendered")
    else:
        bh.scroll_into_view(page, ".jp-Cell:has(.jp-OutputArea-output img)", 0)


def check_06(page, problems: list[str]) -> None:
    """06: the job progress renders as a widget and reaches 100 %; the loss plot is shown."""
    try:
        page.wait_for_function(
            "() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .progress-bar')]"
            ".some(b => b.style.width === '100%' || b.style.height === '100%')",
            timeout=30_000,
        )
    except bh.PlaywrightTimeout:
        pass
    bars = bh.progress_bars(page)
    if not bars:
        problems.append("06: no progress bar widget is rendered (is the widget shown as text?)")
    elif not any(b["style"] == "100%" or (b["fraction"] or 0) >= 0.999 for b in bars):
        problems.append(f"06: the progress bar did not reach 100%: {bars}")
    if not bh.rendered_images(page):
        problems.append("06: the loss plot is not shown")
    elif bh.scroll_into_view(page, ".jp-Cell:has(.jp-OutputArea-output img)", -1):
        bh.screenshot(page, screenshot_dir() / "06_poll-loss.png")
    if bars:
        bh.scroll_into_view(page, ".jp-Cell:has(:is(.widget-hprogress, .widget-progress))", 0)


def check_07(page, problems: list[str]) -> None:
    """07: the comparison widget renders and its "next" control changes the question shown."""
    panel = bh.current_panel(page)
    buttons = panel.locator(".jp-OutputArea-output .jupyter-widgets button, .jp-OutputArea-output button.widget-button")
    labels = [(buttons.nth(i).inner_text() + " " + (buttons.nth(i).get_attribute("title") or "")).strip()
              for i in range(buttons.count())]
    nexts = [i for i, label in enumerate(labels) if NEXT_BUTTON.search(label)]
    if not nexts:
        problems.append(f"07: no 'next' button in a rendered widget (buttons: {labels})")
        return
    button = buttons.nth(nexts[0])
    widget = button.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")
    button.evaluate("el => el.closest('.jp-Cell').scrollIntoView({block: 'start'})")
    before = widget.inner_text()
    button.click()
    try:
        page.wait_for_function("([el, text]) => el.innerText !== text", arg=[widget.element_handle(), before],
                               timeout=15_000)
    except bh.PlaywrightTimeout:
        problems.append(f"07: clicking {labels[nexts[0]]!r} did not change what the widget shows")
        return
    after = widget.inner_text()
    if not after.strip():
        problems.append(f"07: after 'next' the widget is empty: {after!r}")


CHECKS = {"01": check_01, "06": check_06, "07": check_07}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab(page, lab, name: str) -> None:
    """Open the notebook, Run → Restart Kernel and Run All Cells…, and check what is on the screen."""
    shots = screenshot_dir()
    bh.open_notebook(page, f"notebooks/{name}")
    try:
        bh.run_all_via_menu(page)
        result = bh.wait_all_executed(page, RUN_TIMEOUT_S)
        outputs = bh.rendered_outputs(page)
        problems = []
        if result.not_run:
            problems.append(f"code cells {result.not_run} did not run (an earlier cell failed?)")
        for out in bh.error_outputs(outputs):
            problems.append(f"cell {out.cell} shows an error:\n{out.text[-1500:]}")
        for out in bh.stderr_outputs(outputs):
            if out not in bh.error_outputs(outputs):
                hint = " (matplotlib fell back to a font without CJK glyphs)" if "missing from font" in out.text else ""
                problems.append(f"cell {out.cell} shows stderr output{hint}:\n{out.text[-800:]}")
        for out in bh.widget_reprs(outputs):
            problems.append(f"cell {out.cell} shows a widget as text instead of rendering it: {out.text[:200]!r}")
        bh.show_file_browser(page, False)  # the screenshot shows the notebook at full width
        check = CHECKS.get(name[:2])
        if check:
            check(page, problems)
        elif outputs:
            bh.scroll_into_view(page, ".jp-CodeCell:has(.jp-OutputArea-output)", -1, block="end")
        shot = bh.screenshot(page, shots / f"{Path(name).stem}.png")
        print(f"{name}: ran in {result.seconds:.0f}s, screenshot {shot}")
        assert not problems, f"{name} in JupyterLab ({shot}):\n" + "\n\n".join(problems)
    finally:
        bh.close_and_shut_down(page, name)
