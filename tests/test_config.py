"""Tests for helpers.config: backend choice, data source, key handling, readable errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import config
from helpers.config import ConfigError, load_config

ENV_NAMES = [
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "FINETUNE_BACKEND",
    "FINETUNE_BASE_MODEL",
    "HUATUO_PATH",
    "HUATUO_SOURCE",
    "LOCALAPI_KEY",
    "LOCALAPI_PORT",
    "WORKBOOK_N_TRAIN",
    "FINETUNE_NEW_JOB",
    "FINETUNE_CONFIRM",
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment with a private work folder and no .env file."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    return monkeypatch


def no_env_file(tmp_path: Path) -> Path:
    """A .env path that does not exist, so the repository's own .env never leaks into a test."""
    return tmp_path / "missing.env"


def test_defaults_to_local_backend_with_generated_key(env, tmp_path):
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.backend == "local" and cfg.is_local
    assert cfg.base_url == "http://127.0.0.1:8765/v1"
    assert cfg.base_model == config.DEFAULT_LOCAL_MODEL
    assert cfg.data_source == "vendored" and cfg.data_path == config.VENDORED_PATH
    assert "data source : vendored (real Huatuo-26M test set): data/huatuo26M_test_datasets.jsonl" in cfg.describe()
    key_file = tmp_path / "work" / "localapi" / "api_key"
    assert key_file.read_text(encoding="utf-8").strip() == cfg.api_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The same key is read back on the next load, not regenerated.
    assert load_config(no_env_file(tmp_path)).api_key == cfg.api_key


def test_key_never_in_repr_or_description(env, tmp_path):
    env.setenv("LOCALAPI_KEY", "secret-local-key-123")
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.api_key == "secret-local-key-123"
    assert "secret-local-key-123" not in repr(cfg)
    assert "secret-local-key-123" not in cfg.describe()
    assert cfg.api_key_source == "LOCALAPI_KEY"


def test_remote_backend_from_environment(env, tmp_path):
    env.setenv("OPENAI_API_KEY", "sk-test-remote")
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.backend == "remote"
    assert cfg.base_url == config.OPENAI_BASE_URL
    assert cfg.base_model == config.DEFAULT_REMOTE_MODEL
    assert cfg.data_source == "hub" and cfg.data_path is None


def test_loopback_base_url_counts_as_local(env, tmp_path):
    env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    env.setenv("OPENAI_API_KEY", "the-test-key")
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.backend == "local"
    assert cfg.base_url == "http://127.0.0.1:9999/v1"
    assert cfg.api_key == "the-test-key"


def test_remote_base_url_without_key_is_a_clear_error(env, tmp_path):
    env.setenv("OPENAI_BASE_URL", "https://api.example.com/v1")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        load_config(no_env_file(tmp_path))


def test_huatuo_path_must_exist(env, tmp_path):
    env.setenv("HUATUO_PATH", str(tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigError, match="HUATUO_PATH"):
        load_config(no_env_file(tmp_path))
    real = tmp_path / "rows.jsonl"
    real.write_text('{"questions": "q", "answers": "a"}\n', encoding="utf-8")
    env.setenv("HUATUO_PATH", str(real))
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.data_source == "path" and cfg.data_path == real.resolve()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WORKBOOK_N_TRAIN", "many", "not a whole number"),
        ("WORKBOOK_N_TRAIN", "5", "at least 10"),
        ("HUATUO_SOURCE", "web", "'vendored', 'fixture' or 'hub'"),
        ("FINETUNE_BACKEND", "cloud", "local"),
    ],
)
def test_bad_settings_name_the_variable(env, tmp_path, name, value, message):
    env.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(no_env_file(tmp_path))
    assert name in str(info.value)


def test_dotenv_does_not_override_environment(env, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("FINETUNE_BASE_MODEL=from-dotenv\nWORKBOOK_SEED=7\n", encoding="utf-8")
    env.setenv("FINETUNE_BASE_MODEL", "from-env")
    env.delenv("WORKBOOK_SEED", raising=False)
    try:
        cfg = load_config(dotenv)
        assert cfg.base_model == "from-env"
        assert cfg.seed == 7
    finally:
        os.environ.pop("WORKBOOK_SEED", None)


def test_flags(env, tmp_path):
    env.setenv("FINETUNE_NEW_JOB", "yes")
    env.setenv("FINETUNE_CONFIRM", "0")
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.allow_new_job is True and cfg.confirm_cost is False


def test_huatuo_path_may_name_a_downloaded_folder(env, tmp_path):
    folder = tmp_path / "huatuo26M-testdatasets"
    folder.mkdir()
    (folder / "README.md").write_text("card", encoding="utf-8")
    env.setenv("HUATUO_PATH", str(folder))
    with pytest.raises(ConfigError, match="is a folder with no .jsonl file"):
        load_config(no_env_file(tmp_path))
    (folder / "a.jsonl").write_text("", encoding="utf-8")
    assert load_config(no_env_file(tmp_path)).data_path == (folder / "a.jsonl").resolve()
    (folder / "b.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="a.jsonl, b.jsonl"):
        load_config(no_env_file(tmp_path))
    (folder / "test_datasets.jsonl").write_text('{"questions": "q", "answers": "a"}\n', encoding="utf-8")
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.data_source == "path" and cfg.data_path == (folder / "test_datasets.jsonl").resolve()


@pytest.mark.parametrize(("source", "name"), [("fixture", "huatuo_fixture.jsonl"), ("vendored", "huatuo26M_test_datasets.jsonl"),
                                              ("hub", None)])
def test_huatuo_source_names_the_data(env, tmp_path, source, name):
    env.setenv("HUATUO_SOURCE", source)
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.data_source == source and (cfg.data_path.name if cfg.data_path else None) == name
    env.setenv("OPENAI_API_KEY", "sk-test-remote")
    env.setenv("FINETUNE_BACKEND", "remote")
    assert load_config(no_env_file(tmp_path)).data_source == source  # an explicit choice holds on either backend
