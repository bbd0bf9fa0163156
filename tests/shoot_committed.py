"""Screenshots of the committed notebooks as a reader sees them in JupyterLab (the README's pictures).

    .venv/bin/python -m tests.shoot_committed [--out docs]

Starts a private JupyterLab on the repository (nothing is executed: the pictures show the committed outputs of the
course run), opens 01, 06 and 07 in headless Chromium with the packaged CJK font, scrolls to the output that matters
(01's length histograms, 06's loss curves, 07's side-by-side answers) and saves one PNG each.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests import browser_harness as bh

REPO = Path(__file__).resolve().parent.parent
SHOTS = [  # notebook, what to scroll to (selector, index: negative counts from the end), file name
    ("01_explore.ipynb", (".jp-OutputArea-output img", 0), "screenshot-01-explore.png"),
    ("06_poll.ipynb", (".jp-OutputArea-output img", -1), "screenshot-06-poll.png"),
    ("07_compare.ipynb", (".jp-OutputArea-output table:has-text('参考回答（医生）')", 0), "screenshot-07-compare.png"),
]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    """Take the screenshots into --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    chromium = bh.find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium found (install Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port, token = _port(), secrets.token_urlsafe(16)
        env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(bh.write_lab_settings(tmp / "settings")),
               "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "ws"), "JUPYTER_CONFIG_DIR": str(tmp / "cfg"),
               "JUPYTER_RUNTIME_DIR": str(tmp / "rt"), "IPYTHONDIR": str(tmp / "ipy"),
               "WORKBOOK_WORK_DIR": str(tmp / "work")}
        log = tmp / "lab.log"
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={REPO}", "--ServerApp.ip=127.0.0.1", "--allow-root"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            bh.wait_for_http(f"{base}/api/status?token={token}", 180, proc, log)
            browser_env = {**os.environ, "FONTCONFIG_FILE": str(bh.write_fontconfig(tmp / "fontconfig"))}
            with sync_playwright() as pw:
                context = pw.chromium.launch_persistent_context(
                    str(tmp / "profile"), executable_path=chromium, headless=True, args=bh.CHROMIUM_ARGS,
                    env=browser_env, viewport={"width": 1400, "height": 1000}, locale="zh-CN")
                context.set_default_timeout(60_000)
                page = context.pages[0] if context.pages else context.new_page()
                page.goto(f"{base}/lab/tree/notebooks?token={token}", wait_until="domcontentloaded")
                page.wait_for_selector(".jp-FileBrowser .jp-DirListing-item", timeout=120_000)
                for name, (selector, index), file_name in SHOTS:
                    bh.open_notebook(page, f"notebooks/{name}")
                    bh.show_file_browser(page, False)
                    if not bh.scroll_into_view(page, selector, index, block="center"):
                        raise SystemExit(f"{name}: nothing matches {selector}")
                    page.wait_for_timeout(1500)
                    print(bh.screenshot(page, args.out / file_name))
                    bh.close_and_shut_down(page, name)
                context.close()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
