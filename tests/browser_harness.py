"""Drive JupyterLab in Debian's Chromium with Playwright, the way a reader uses the course.

Used by tests/test_browser.py. Everything here looks at what a person sees: the
rendered DOM of JupyterLab, not the notebook files. Chromium comes from the system
(`apt-get install chromium`); Playwright's own browser download is never used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
WIDGETS_EXTENSION = "@jupyter-widgets/jupyterlab-manager"
RUN_ALL_MENU_ITEM = "Restart Kernel and Run All Cells…"
# Text a person sees when a widget did not render: its repr, or JupyterLab's error placeholder.
WIDGET_REPR = re.compile(
    r"^\s*(IntProgress|FloatProgress|HBox|VBox|Box|Button|HTML|Label|Output|Tab|Accordion|Dropdown|IntSlider)\(\s*"
    r"|Error displaying widget|Loading widget\.\.\.|model not found",
    re.MULTILINE,
)
ERROR_TEXT = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b\s*[:\n]|^\w+(Error|Exception): ", re.MULTILINE)


class BrowserHarnessError(RuntimeError):
    """JupyterLab or the browser did not reach the state the test waits for."""


def find_chromium() -> str | None:
    """Path of the system Chromium (CHROMIUM_PATH overrides), or None when it is not installed."""
    override = os.environ.get("CHROMIUM_PATH", "").strip()
    if override:
        return override if Path(override).is_file() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def cjk_font_dir() -> Path | None:
    """The folder of the Noto Sans CJK font shipped by the PyPI package `noto-cjk-sans-otc`, if installed."""
    spec = importlib.util.find_spec("noto_cjk_sans_otc")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if any(folder.glob("*.tt[cf]")) or any(folder.glob("*.otf")) else None


def write_fontconfig(folder: Path) -> Path:
    """A fontconfig file that adds the packaged CJK font to the system fonts, so Chinese text renders in Chromium."""
    folder.mkdir(parents=True, exist_ok=True)
    font_dir = cjk_font_dir()
    extra = f"  <dir>{font_dir}</dir>\n" if font_dir else ""
    conf = folder / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"{extra}  <cachedir>{folder / 'cache'}</cachedir>\n</fontconfig>\n",
        encoding="utf-8",
    )
    return conf


def write_lab_settings(folder: Path) -> Path:
    """Private JupyterLab user settings: no news prompt (the test machine is offline), everything else default."""
    target = folder / "@jupyterlab" / "apputils-extension"
    target.mkdir(parents=True, exist_ok=True)
    (target / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8"
    )
    return folder


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Wait until url answers 200; fail early (with the log's tail) when the process behind it exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrowserHarnessError(f"process exited with {proc.returncode} before {url} answered\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise BrowserHarnessError(f"{url} did not answer within {timeout:.0f}s ({last})\n{tail(log)}")


def tail(log: Path | None, n: int = 40) -> str:
    """The last lines of a log file, for failure messages."""
    if log is None or not log.is_file():
        return ""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:])


def wait_for_line(log: Path, pattern: str, timeout: float, proc: subprocess.Popen) -> re.Match:
    """Wait until a line of the log matches pattern; fail when the process exits first."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
        match = rx.search(text)
        if match:
            return match
        if proc.poll() is not None:
            raise BrowserHarnessError(f"process exited with {proc.returncode} before printing {pattern!r}\n{tail(log)}")
        time.sleep(0.5)
    raise BrowserHarnessError(f"no line matching {pattern!r} within {timeout:.0f}s\n{tail(log)}")


def die_with_parent() -> None:
    """preexec_fn: on Linux, have the child get SIGTERM when the test process dies (killed pytest leaves nothing behind)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a process we started (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def page_config(page) -> dict:
    """JupyterLab's page configuration (the JSON it embeds in the page)."""
    raw = page.eval_on_selector("#jupyter-config-data", "el => el.textContent")
    return json.loads(raw)


def active_extensions(page) -> tuple[set[str], set[str]]:
    """(names of federated extensions the page loads, names disabled by configuration)."""
    cfg = page_config(page)
    names = {ext.get("name", "") for ext in cfg.get("federated_extensions", [])}
    disabled = set(cfg.get("disabledExtensions", []))
    return names, disabled


CURRENT_TAB_JS = """(name) => {
    const tab = document.querySelector('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel');
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    return !!(tab && tab.innerText.trim() === name && panel && panel.querySelector('.jp-Notebook .jp-Cell'));
}"""


def open_notebook(page, rel_path: str, timeout_ms: int = 120_000) -> None:
    """Open a notebook as a reader does (double-click in the file browser); wait for its tab and an idle kernel."""
    folder, name = str(Path(rel_path).parent), Path(rel_path).name
    show_file_browser(page, True)
    crumbs = page.locator(".jp-FileBrowser .jp-BreadCrumbs").first.inner_text()
    if folder not in {"", "."} and folder.split("/")[-1] not in crumbs:
        raise BrowserHarnessError(f"the file browser shows {crumbs!r}, not {folder}/")
    page.locator(f'.jp-FileBrowser .jp-DirListing-item[title^="Name: {name}"]').first.dblclick()
    page.wait_for_function(CURRENT_TAB_JS, arg=name, timeout=timeout_ms)
    accept_kernel_dialog(page)
    wait_kernel_idle(page, timeout_ms)


def close_and_shut_down(page, name: str) -> None:
    """File menu → "Close and Shut Down Notebook", confirmed: frees the kernel before the next notebook."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Close and Shut Down Notebook")).click()
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.wait_for(timeout=10_000)
        dialog.locator("button.jp-mod-accept").click()
        dialog.wait_for(state="detached", timeout=30_000)
    except PlaywrightTimeout:
        pass  # no confirmation asked
    page.wait_for_function(
        "(name) => ![...document.querySelectorAll('#jp-main-dock-panel .lm-TabBar-tabLabel')].some(t => t.innerText.trim() === name)",
        arg=name,
        timeout=30_000,
    )


def accept_kernel_dialog(page) -> None:
    """A notebook without kernel metadata asks which kernel to use: accept the default, as a reader would."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and "kernel" in dialog.first.inner_text().lower():
        dialog.first.locator("button.jp-mod-accept").click()


def current_panel(page):
    """The notebook panel that is visible now."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first


KERNEL_READY_JS = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    const ind = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
    const name = panel && panel.querySelector('.jp-Toolbar-kernelName');
    const label = name ? name.innerText.trim() : '';
    return !!(ind && ind.getAttribute('data-status') === 'idle' && label && label !== 'No Kernel');
}"""


def wait_kernel_idle(page, timeout_ms: int) -> None:
    """Wait until the notebook has a kernel (toolbar shows its name) and its status reads idle."""
    page.wait_for_function(KERNEL_READY_JS, timeout=timeout_ms)


WATCH_RUN_JS = """() => {
    // Remember whether the run has started: some cell queued or running ([*]) or the kernel busy.
    // Needed because a notebook saved with outputs shows the same [1], [2], ... before and after the run.
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    if (window.__workbookRun) window.__workbookRun.observer.disconnect();
    const state = {started: false};
    const check = () => {
        const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
        if (ind && ind.getAttribute('data-status') === 'busy') state.started = true;
        if ([...panel.querySelectorAll('.jp-InputArea-prompt')].some(p => p.textContent.includes('*'))) state.started = true;
    };
    state.observer = new MutationObserver(check);
    state.observer.observe(panel, {subtree: true, childList: true, characterData: true, attributes: true});
    window.__workbookRun = state;
}"""


def run_all_via_menu(page) -> None:
    """Run menu → "Restart Kernel and Run All Cells…" → confirm, exactly as a reader clicks it."""
    page.evaluate(WATCH_RUN_JS)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=RUN_ALL_MENU_ITEM).click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=30_000)
    dialog.locator("button.jp-mod-accept").click()
    dialog.wait_for(state="detached", timeout=30_000)


CELL_STATE_JS = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    if (!panel) return null;
    const cells = [...panel.querySelectorAll('.jp-Notebook .jp-CodeCell')];
    const prompts = cells.map(c => (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '');
    const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
    return {prompts, status: ind ? ind.getAttribute('data-status') : null};
}"""


@dataclass
class RunResult:
    """How a Run-All ended: the prompts of all code cells and how long it took."""

    prompts: list[str]
    seconds: float
    not_run: list[int] = field(default_factory=list)


def wait_all_executed(page, timeout_s: float) -> RunResult:
    """After run_all_via_menu: wait until the run started and ended (no [*], kernel idle); report cells that never ran."""
    start = time.monotonic()
    stable_since = None
    state = None
    while time.monotonic() - start < timeout_s:
        state = page.evaluate(CELL_STATE_JS)
        prompts = state["prompts"] if state else []
        busy = any("*" in p for p in prompts)
        numbered = [p for p in prompts if re.search(r"\[\d+\]", p)]
        started = page.evaluate("() => !!(window.__workbookRun && window.__workbookRun.started)")
        done = state and started and not busy and state["status"] == "idle" and numbered
        if done:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 1.5:  # idle and unchanged for a moment: the run has ended
                not_run = [i for i, p in enumerate(prompts) if not re.search(r"\[\d+\]", p)]
                return RunResult(prompts, time.monotonic() - start, not_run)
        else:
            stable_since = None
        time.sleep(0.5)
    raise BrowserHarnessError(f"cells still running after {timeout_s:.0f}s: {state}")


ERRORS_JS = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    const out = [];
    const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell')];
    cells.forEach((cell, i) => {
        cell.querySelectorAll('.jp-OutputArea-output').forEach(o => {
            const mime = o.getAttribute('data-mime-type') || '';
            const text = o.innerText || '';
            out.push({cell: i, mime, text});
        });
    });
    return out;
}"""


@dataclass
class OutputText:
    """One rendered output of a cell, as text."""

    cell: int
    mime: str
    text: str


def rendered_outputs(page) -> list[OutputText]:
    """Every rendered output of the visible notebook, with its MIME type and visible text."""
    return [OutputText(**o) for o in page.evaluate(ERRORS_JS)]


def error_outputs(outputs: list[OutputText]) -> list[OutputText]:
    """Outputs a person reads as an error: a traceback or an exception line, in stderr or anywhere else."""
    bad = []
    for out in outputs:
        if ERROR_TEXT.search(out.text):
            bad.append(out)
    return bad


def stderr_outputs(outputs: list[OutputText]) -> list[OutputText]:
    """Outputs shown on JupyterLab's red stderr background (warnings included)."""
    return [o for o in outputs if o.mime == "application/vnd.jupyter.stderr"]


def widget_reprs(outputs: list[OutputText]) -> list[OutputText]:
    """Outputs where a widget shows up as text (its repr, or 'Error displaying widget') instead of rendering."""
    return [o for o in outputs if o.mime != "application/vnd.jupyter.stderr" and WIDGET_REPR.search(o.text)]


IMAGES_JS = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    return [...panel.querySelectorAll('.jp-OutputArea-output img')].map(img => ({
        cell: [...panel.querySelectorAll('.jp-Notebook .jp-Cell')].findIndex(c => c.contains(img)),
        width: img.naturalWidth, height: img.naturalHeight, complete: img.complete,
    }));
}"""


def rendered_images(page) -> list[dict]:
    """Images in the outputs that the browser has decoded (natural size > 0)."""
    page.wait_for_timeout(300)
    return [i for i in page.evaluate(IMAGES_JS) if i["complete"] and i["width"] > 0 and i["height"] > 0]


PROGRESS_JS = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
    return [...panel.querySelectorAll('.jp-OutputArea-output :is(.widget-hprogress, .widget-vprogress, .widget-progress)')].map(w => {
        const bar = w.querySelector('.progress-bar');
        const outer = bar && bar.parentElement;
        const frac = bar && outer && outer.getBoundingClientRect().width > 0
            ? bar.getBoundingClientRect().width / outer.getBoundingClientRect().width : null;
        return {style: bar ? bar.style.width || bar.style.height : null, fraction: frac,
                label: (w.closest('.jp-OutputArea-output') || w).innerText};
    });
}"""


def progress_bars(page) -> list[dict]:
    """Rendered ipywidgets progress bars: their width style ('100%') and drawn fraction."""
    return page.evaluate(PROGRESS_JS)


def scroll_into_view(page, selector: str, index: int = 0, block: str = "start") -> bool:
    """Scroll the notebook so the selector's index-th match (negative: from the end) is at the top (block); False if none."""
    loc = current_panel(page).locator(selector)
    n = loc.count()
    if not n:
        return False
    loc.nth(index if index >= 0 else n + index).evaluate("(el, block) => el.scrollIntoView({block})", block)
    page.wait_for_timeout(500)
    return True


def show_file_browser(page, visible: bool) -> None:
    """Open or collapse the left sidebar's file browser (collapsed, the notebook gets the whole width)."""
    tab = page.locator('.jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id="filebrowser"]')
    is_open = "lm-mod-current" in (tab.get_attribute("class") or "")
    if is_open != visible:
        tab.click()
        page.wait_for_timeout(300)


def screenshot(page, path: Path) -> Path:
    """Save what the browser window shows now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    return path
