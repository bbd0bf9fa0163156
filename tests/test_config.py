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
    assert "数据来源      ：仓库自带的华佗-26M 真实测试集：data/huatuo26M_test_datasets.jsonl" in cfg.describe()
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
    assert cfg.api_key_source == "来自环境变量 LOCALAPI_KEY"


def test_an_exported_openai_key_alone_keeps_the_local_backend_and_key(env, tmp_path):
    env.setenv("OPENAI_API_KEY", "sk-test-not-real")
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.backend == "local" and cfg.base_url == "http://127.0.0.1:8765/v1"
    assert cfg.api_key != "sk-test-not-real" and cfg.api_key.startswith("local-")
    assert "只导出 OPENAI_API_KEY 不会切换后端" in cfg.describe()
    assert "sk-test-not-real" not in cfg.describe()


@pytest.mark.parametrize("choice", ["openai", "remote", "OpenAI"])
def test_remote_backend_needs_an_explicit_choice(env, tmp_path, choice):
    env.setenv("OPENAI_API_KEY", "sk-test-remote")
    env.setenv("FINETUNE_BACKEND", choice)
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.backend == "remote" and not cfg.is_local
    assert cfg.base_url == config.OPENAI_BASE_URL and cfg.api_key == "sk-test-remote"
    assert cfg.base_model == config.DEFAULT_REMOTE_MODEL
    assert cfg.data_source == "hub" and cfg.data_path is None
    assert f"为什么        ：设置了 FINETUNE_BACKEND={choice.lower()}" in cfg.describe()


def test_remote_base_url_chooses_remote_also_from_dotenv(env, tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("OPENAI_BASE_URL=https://api.example.com/v1\nOPENAI_API_KEY=sk-from-dotenv\n", encoding="utf-8")
    try:
        cfg = load_config(dotenv)
        assert (cfg.backend, cfg.base_url, cfg.api_key) == ("remote", "https://api.example.com/v1", "sk-from-dotenv")
        assert "OPENAI_BASE_URL 指向另一台机器" in cfg.describe()
    finally:
        os.environ.pop("OPENAI_BASE_URL", None)
        os.environ.pop("OPENAI_API_KEY", None)


def test_forced_local_ignores_a_remote_url_and_its_key(env, tmp_path):
    env.setenv("OPENAI_BASE_URL", "https://api.example.com/v1")
    env.setenv("OPENAI_API_KEY", "sk-remote")
    env.setenv("FINETUNE_BACKEND", "local")
    cfg = load_config(no_env_file(tmp_path))
    assert (cfg.backend, cfg.base_url) == ("local", "http://127.0.0.1:8765/v1") and cfg.api_key != "sk-remote"


def test_loopback_base_url_counts_as_local(env, tmp_path):
    env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    env.setenv("OPENAI_API_KEY", "not-our-servers-key")
    env.setenv("LOCALAPI_KEY", "the-local-key")
    cfg = load_config(no_env_file(tmp_path))
    assert cfg.backend == "local"
    assert cfg.base_url == "http://127.0.0.1:9999/v1"
    assert cfg.api_key == "the-local-key" and cfg.api_key_source == "来自环境变量 LOCALAPI_KEY"
    assert "OPENAI_BASE_URL 指向本机" in cfg.describe()


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


def test_setup_notebook_overrides_replace_fields(env, tmp_path, monkeypatch, capsys):
    from helpers import notebook

    monkeypatch.setattr(notebook, "load_config", lambda: load_config(no_env_file(tmp_path)))
    cfg = notebook.setup_notebook("02", seed=7, n_train=200, base_model="tiny-test", request_timeout=30)
    assert (cfg.seed, cfg.n_train, cfg.base_model, cfg.request_timeout) == (7, 200, "tiny-test", 30.0)
    out = capsys.readouterr().out
    assert "改动的设置    ：seed=7, n_train=200" in out and "随机种子（seed）7" in out.split("数据量")[1]
    assert notebook.setup_notebook("02").seed == 42  # nothing sticks between calls


@pytest.mark.parametrize(("overrides", "message"), [
    ({"sede": 7}, "sede=7, which is no setting"),
    ({"n_train": 5}, "n_train=5: must be at least 10"),
    ({"seed": "7"}, "seed='7': must be a whole number"),
    ({"n_epochs": True}, "n_epochs=True: must be a whole number"),
    ({"api_key": "x"}, "api_key cannot be changed in setup_notebook"),
    ({"base_model": " "}, "base_model=' ': must not be empty"),
])
def test_setup_notebook_bad_override_names_the_field(env, tmp_path, overrides, message):
    from helpers.notebook import apply_overrides

    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_config(no_env_file(tmp_path)), **overrides)
