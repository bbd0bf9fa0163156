"""The dashboard served by the local server at `/`: its static files carry no key and no data, the API behind it
needs the key, and in a real browser (Debian's Chromium driven by Playwright) a person can follow a tiny-model job:
the loss chart gains points and events appear while it trains, pause and resume work, and the playground answers
with two models side by side. The job page's screenshot goes to `<build>/screenshots/dashboard-job.png`.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest

from helpers.localapi.dashboard import router as dashboard
from tests import browser_harness as bh
from tests.localapi_support import KEY, Server, free_port, write_chat_jsonl
from tests.test_browser import chromium, screenshot_dir  # noqa: F401  (the shared Chromium fixture: skip or fail in CI)
from tests.test_localapi_jobs import upload

DATA_ROUTES = ["/v1/models", "/v1/files", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/ftjob-x/events",
               "/v1/fine_tuning/jobs/ftjob-x/checkpoints", "/local/info"]
N_TRAIN, EPOCHS = 40, 3  # batch size 1: 120 steps, a checkpoint every 40; the test cancels the job after its first
SYSTEM_PROMPT = "你是一名医生。"  # the system message of write_chat_jsonl's examples


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("dashboard") / "work", free_port()).start()
    yield srv
    srv.stop()


def root_url(srv: Server) -> str:
    return f"http://127.0.0.1:{srv.port}"


# ---- plain HTTP ---------------------------------------------------------------------------------
def test_page_and_assets_need_no_key_and_carry_none(server):
    """GET / and every asset answer without a key, with a strict CSP, and contain neither the key nor any data."""
    page = httpx.get(root_url(server) + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert page.headers["referrer-policy"] == "no-referrer"
    texts = [page.text]
    for name in dashboard.ASSETS:
        r = httpx.get(f"{root_url(server)}/dashboard/{name}", timeout=10)
        assert r.status_code == 200, name
        assert r.headers["content-type"] == dashboard.ASSETS[name]
        texts.append(r.text)
    for text in texts:
        assert KEY not in text
        assert "ftjob-" not in text and "file-" not in text  # no ids: the page holds no data
        assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(\s*["']?(https?:)?//|from\s+["']https?:""", text), \
            "the dashboard must load nothing from another origin (it works offline)"


def test_the_data_api_without_the_key_is_401(server):
    """What the page shows comes from /v1, which answers 401 without the bearer key (and with a wrong one)."""
    for route in DATA_ROUTES:
        assert httpx.get(root_url(server) + route, timeout=10).status_code == 401, route
        wrong = httpx.get(root_url(server) + route, headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert wrong.status_code == 401, route
    assert httpx.get(root_url(server) + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).status_code == 200


def test_only_the_named_assets_are_served(server):
    """Unknown names and paths out of the static folder are 404s; every static file is named (and so packaged)."""
    for name in ["nope.js", "..%2Frouter.py", "../router.py", "%2E%2E%2F__init__.py"]:
        r = httpx.get(f"{root_url(server)}/dashboard/{name}", timeout=10)
        assert r.status_code in (401, 404), (name, r.status_code)
        assert "import" not in r.text
    on_disk = {p.name for p in dashboard.STATIC_DIR.iterdir()}
    assert on_disk == set(dashboard.ASSETS) | {"index.html"}


def test_start_and_lab_print_the_dashboard_without_the_key(monkeypatch, tmp_path):
    """`python -m helpers.local_backend start` and `make lab` print this line: the address, where the key is, not the key."""
    from helpers.config import load_config
    from helpers.local_backend import dashboard_line

    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCALAPI_KEY", KEY)
    monkeypatch.setenv("LOCALAPI_PORT", "8123")
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path))
    line = dashboard_line(load_config(env_file=tmp_path / "no.env"))
    assert "http://127.0.0.1:8123/" in line and "LOCALAPI_KEY" in line and KEY not in line


# ---- in a real browser ----------------------------------------------------------------------------
def series_count(page, chart: str, name: str) -> int:
    """How many points the chart draws for a series (the chart writes it on the series' <g>)."""
    value = page.get_attribute(f"#{chart} g.series[data-name='{name}']", "data-count")
    return int(value or 0)


def wait_count_above(page, chart: str, name: str, floor: int, timeout_ms: int) -> int:
    """Wait until the chart draws more than `floor` points of the series; the count."""
    page.wait_for_function(
        "([chart, name, floor]) => { const g = document.querySelector(`#${chart} g.series[data-name='${name}']`);"
        " return !!g && Number(g.dataset.count) > floor; }", arg=[chart, name, floor], timeout=timeout_ms)
    return series_count(page, chart, name)


def wait_status(page, statuses: set[str], timeout_ms: int) -> str:
    """Wait until the job page's status badge shows one of the statuses."""
    page.wait_for_function("(want) => { const b = document.querySelector('#job-status .badge');"
                           " return !!b && want.includes(b.dataset.status); }", arg=sorted(statuses), timeout=timeout_ms)
    return page.get_attribute("#job-status .badge", "data-status")


def event_texts(page) -> list[str]:
    return page.locator("#events li").all_inner_texts()


@pytest.mark.slow
def test_follow_a_job_pause_resume_and_compare_in_the_browser(server, chromium, tmp_path):  # noqa: F811
    """Log in with the key, watch a tiny-test job train, pause and resume it, compare base and checkpoint, cancel."""
    from playwright.sync_api import sync_playwright

    client = server.client(timeout=120.0)
    train = upload(client, write_chat_jsonl(tmp_path / "train.jsonl", N_TRAIN))
    valid = upload(client, write_chat_jsonl(tmp_path / "valid.jsonl", 10, offset=100))
    env = {**os.environ, "FONTCONFIG_FILE": str(bh.write_fontconfig(tmp_path / "fontconfig"))}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=bh.CHROMIUM_ARGS, env=env)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
        context.set_default_timeout(60_000)
        page = context.new_page()
        urls, page_errors, chats = [], [], []
        page.on("request", lambda r: urls.append(r.url))
        page.on("request", lambda r: chats.append(r) if r.url.endswith("/v1/chat/completions") else None)
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        try:
            job = client.fine_tuning.jobs.create(
                model="tiny-test", training_file=train, validation_file=valid, suffix="dashboard", seed=11,
                method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": EPOCHS, "batch_size": 1}}})
            page.goto(root_url(server) + "/", wait_until="domcontentloaded")
            page.wait_for_selector("#login:not([hidden])")
            assert page.locator("#view").inner_html() == ""  # without the key: nothing but the key form
            assert job.id not in page.content() and not page.is_visible("#nav") and not page.is_visible("#forget")
            page.fill("#key", "wrong-key")
            page.click("#login-form button[type=submit]")
            page.wait_for_function("() => document.getElementById('login-error').textContent.includes('401')")
            assert page.locator("#view").inner_html() == ""

            page.fill("#key", KEY)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#jobs")
            page.wait_for_selector(f"#jobs tr[data-job='{job.id}']")
            page.select_option("#status-filter", "succeeded")  # the filter by status hides it, "all" shows it again
            page.wait_for_selector(f"#jobs tr[data-job='{job.id}']", state="detached")
            page.select_option("#status-filter", "")
            page.click(f"#jobs tr[data-job='{job.id}']")
            page.wait_for_selector("#loss-chart g.series")
            assert KEY not in page.content() and KEY not in page.url

            # the chart gains points and events appear while the job trains
            first = wait_count_above(page, "loss-chart", "train_loss", 0, 180_000)
            events_before = len(event_texts(page))
            grown = wait_count_above(page, "loss-chart", "train_loss", first, 60_000)
            assert grown > first
            page.wait_for_function("(n) => document.querySelectorAll('#events li').length > n", arg=events_before)

            # pause, then resume, with the page's buttons
            page.click("#pause")
            assert wait_status(page, {"paused"}, 30_000) == "paused"
            assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
            assert page.is_disabled("#pause") and page.is_enabled("#resume")
            page.wait_for_function("() => [...document.querySelectorAll('#events li')].some(li => li.innerText.includes('paused'))")
            page.click("#resume")
            wait_status(page, {"queued", "running"}, 30_000)
            assert client.fine_tuning.jobs.retrieve(job.id).status in {"queued", "running"}
            page.wait_for_selector("#checkpoints tr[data-step]", timeout=300_000)  # end of the first epoch
            assert wait_count_above(page, "loss-chart", "full_valid_loss", 0, 30_000) >= 1
            assert series_count(page, "loss-chart", "valid_loss") >= 1
            texts = "\n".join(event_texts(page))
            assert "queued to resume" in texts and "Checkpoint created at step" in texts
            screenshot_dir().mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot_dir() / "dashboard-job.png"), full_page=True)

            # the playground: base model and checkpoint, the same prompt, 07's decoding parameters
            page.click("a[href^='#/playground/']")
            # the playground renders after the click: until then the field does not exist (no TypeError, wait)
            page.wait_for_function("() => document.getElementById('pg-checkpoint')?.value?.includes(':ckpt-step-')")
            checkpoint = page.input_value("#pg-checkpoint")
            assert page.input_value("#pg-base") == "tiny-test"
            assert page.input_value("#pg-system") == SYSTEM_PROMPT  # read from the training file over /v1/files
            page.select_option("#pg-tuned", "")  # the job has no final model yet
            page.fill("#pg-max_tokens", "12")
            page.click("#pg-send")
            page.wait_for_function("() => document.querySelectorAll('#pg-cards .card[data-finish]').length === 2",
                                   timeout=300_000)
            cards = {c.get_attribute("data-slot"): c for c in page.locator("#pg-cards .card").all()}
            assert set(cards) == {"base", "checkpoint"}
            assert cards["checkpoint"].locator(".model").inner_text() == checkpoint
            sent = sorted((json.loads(r.post_data) for r in chats), key=lambda b: b["model"])
            assert [b["model"] for b in sent] == sorted(["tiny-test", checkpoint])
            for body in sent:
                assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
                assert (body["temperature"], body["max_tokens"], body["seed"], body["frequency_penalty"]) == (0, 12, 42, 0)
            usage = client.chat.completions.create(model="tiny-test", messages=sent[0]["messages"], max_tokens=1)
            for card in cards.values():  # each card shows its own answer's usage, as the API reported it
                meta = card.locator(".meta").inner_text()
                assert f"提示 {usage.usage.prompt_tokens} 个词元" in meta and re.search(r"回答 \d+ 个词元", meta)
            assert all(r.headers.get("authorization") == f"Bearer {KEY}" for r in chats)

            # cancel from the job page (it asks first), then forget the key: the data leaves the page
            page.click("a[href='#/jobs']")
            page.click(f"#jobs tr[data-job='{job.id}']")
            page.wait_for_selector("#job-status .badge")
            page.once("dialog", lambda d: d.accept())
            page.click("#cancel")
            assert wait_status(page, {"cancelled"}, 60_000) == "cancelled"
            assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
            page.click("#forget")
            page.wait_for_selector("#login:not([hidden])")
            assert job.id not in page.locator("body").inner_text()
            assert not page.evaluate("(key) => Object.values(sessionStorage).some(v => v.includes(key))", KEY)

            # a fresh tab on the job's address shows nothing of it until the key is entered
            other = context.new_page()
            other.goto(f"{root_url(server)}/#/jobs/{job.id}", wait_until="domcontentloaded")
            other.wait_for_selector("#login:not([hidden])")
            assert job.id not in other.locator("body").inner_text() and other.locator("#view").inner_html() == ""
        finally:
            context.close()
            browser.close()
    assert not [u for u in urls if KEY in u], "the key appeared in a URL"
    assert not [u for u in urls if not u.startswith(root_url(server)) and not u.startswith("data:")], urls
    assert not page_errors, page_errors
