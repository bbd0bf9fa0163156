"""helpers.local_backend: start the server detached, reuse one that listens, refuse a foreign one, stop it."""

from __future__ import annotations

import dataclasses
import os

import pytest

from helpers.config import load_config
from helpers.local_backend import LocalServerError, ensure_server, probe, release_models, stop_server
from tests.localapi_support import MODEL_CACHE, free_port


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "LOCALAPI_KEY", "LOCALAPI_FAULTS", "LOCALAPI_LATENCY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FINETUNE_BACKEND", "local")
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("LOCALAPI_PORT", str(free_port()))
    monkeypatch.setenv("LOCALAPI_MODEL_CACHE", str(MODEL_CACHE))
    config = load_config(env_file=tmp_path / "no.env")
    yield config
    stop_server(config)


def test_ensure_server_starts_detached_reuses_and_stops(cfg):
    assert probe(cfg) is None
    ensure_server(cfg, timeout=180)
    info = probe(cfg)
    assert info is not None and info["work_dir"] == str(cfg.work_dir)
    pid = info["pid"]
    assert os.getsid(pid) != os.getsid(0)  # its own session: it outlives the kernel that started it
    assert (cfg.localapi_dir / "server.log").is_file()
    assert (cfg.localapi_dir / "api_key").read_text(encoding="utf-8").strip() == cfg.api_key

    ensure_server(cfg)  # a second call reuses the running server
    assert probe(cfg)["pid"] == pid

    with pytest.raises(LocalServerError, match="rejects our API key"):
        ensure_server(dataclasses.replace(cfg, api_key="wrong"))
    with pytest.raises(LocalServerError, match="keeps its state in"):
        ensure_server(dataclasses.replace(cfg, work_dir=cfg.work_dir.parent / "elsewhere"))

    assert stop_server(cfg) is True
    assert probe(cfg) is None
    assert stop_server(cfg) is False


def test_release_models_unloads_what_the_server_holds_and_it_loads_again(cfg):
    """`release_models` (notebook 08, before llama.cpp loads the same model: issue 17) unloads the server's models;
    the next chat request loads them again; without a server there is nothing to release."""
    from openai import OpenAI

    assert release_models(cfg) == 0  # nothing listens yet
    ensure_server(cfg, timeout=180)
    client = OpenAI(base_url=cfg.base_url, api_key=cfg.api_key, timeout=120)
    chat = dict(model="tiny-test", messages=[{"role": "user", "content": "你好"}], max_tokens=3, temperature=0)
    first = client.chat.completions.create(**chat).choices[0].message.content
    assert release_models(cfg) == 1
    assert release_models(cfg) == 0  # already unloaded
    assert client.chat.completions.create(**chat).choices[0].message.content == first  # loaded again, same answer
    assert release_models(cfg) == 1


def test_ensure_server_reports_a_failed_start(cfg, tmp_path):
    with pytest.raises(LocalServerError, match="exited with code"):
        ensure_server(cfg, extra_args=["--faults", "7"])  # refused by the server's argument check


def test_two_callers_at_once_get_one_server(cfg):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(ensure_server, cfg, 60) for _ in range(2)]:
            future.result()
    pid = probe(cfg)["pid"]
    log = (cfg.localapi_dir / "server.log").read_text(encoding="utf-8")
    assert log.count("Started server process") == 1 and f"[{pid}]" in log
