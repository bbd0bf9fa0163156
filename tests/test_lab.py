"""`make lab` (helpers.lab): the JupyterLab command, its environment and URL, without starting anything."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from helpers import lab
from helpers.config import REPO_ROOT, load_config


@pytest.fixture
def local_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A local-backend configuration in a private work folder, on port 18765."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "FINETUNE_BACKEND", "LOCALAPI_KEY", "HUATUO_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKBOOK_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("LOCALAPI_PORT", "18765")
    return load_config(env_file=tmp_path / "no.env")


def test_env_points_kernels_at_the_local_server(local_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels get the server's port and work folder and the token (PYTHONPATH as it was); headless settings are dropped."""
    env = lab.lab_env(local_cfg, "tok", base_env={"PYTHONPATH": "/elsewhere", "MPLBACKEND": "Agg", "WORKBOOK_HEADLESS": "1"})
    assert env["PYTHONPATH"] == "/elsewhere"  # helpers is installed: nothing is added to the reader's path
    assert "PYTHONPATH" not in lab.lab_env(local_cfg, "tok", base_env={})
    assert env["LOCALAPI_PORT"] == "18765"
    assert env["WORKBOOK_WORK_DIR"] == str(local_cfg.work_dir)
    assert env["JUPYTER_TOKEN"] == "tok"
    assert "MPLBACKEND" not in env and "WORKBOOK_HEADLESS" not in env
    assert local_cfg.api_key not in env.values()  # kernels read the key from the work folder, not the environment
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    kernel_cfg = load_config(env_file=local_cfg.work_dir / "no.env")  # what a kernel's first cell resolves
    assert (kernel_cfg.base_url, kernel_cfg.work_dir, kernel_cfg.api_key) == (
        "http://127.0.0.1:18765/v1", local_cfg.work_dir, local_cfg.api_key)


def test_remote_env_leaves_the_api_settings_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a remote backend nothing local is pinned: the SDK reads OPENAI_* as the reader set them."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("FINETUNE_BACKEND", "openai")  # an exported key alone keeps the local backend
    cfg = load_config(env_file=tmp_path / "no.env")
    env = lab.lab_env(cfg, "tok", base_env={"OPENAI_API_KEY": "sk-test"})
    assert cfg.backend == "remote"
    assert "OPENAI_BASE_URL" not in env and "LOCALAPI_PORT" not in env
    assert env["OPENAI_API_KEY"] == "sk-test"


def test_command_binds_loopback_and_keeps_the_token_off_the_command_line(local_cfg) -> None:
    """127.0.0.1 only, no port hopping (the printed URL must stay right), token only in the environment."""
    plan = lab.plan_lab(local_cfg, port=lab.pick_port(None), open_browser=False, token="secret-token")
    cmd = " ".join(plan.command)
    assert "--ServerApp.ip=127.0.0.1" in cmd
    assert f"--ServerApp.port={plan.port}" in cmd and "--ServerApp.port_retries=0" in cmd
    assert "--no-browser" in cmd
    assert f"--ServerApp.root_dir={REPO_ROOT}" in cmd
    assert "secret-token" not in cmd
    assert plan.env["JUPYTER_TOKEN"] == "secret-token"
    assert plan.url == f"http://127.0.0.1:{plan.port}/lab/tree/notebooks?token=secret-token"
    assert ("--allow-root" in plan.command) == (os.geteuid() == 0)


def test_busy_port_is_a_clear_error(local_cfg) -> None:
    """A port someone else holds is refused before anything starts, with the option to pick another."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(lab.LabError, match=r"--port"):
            lab.plan_lab(local_cfg, port=port)


def test_default_port_falls_back_to_a_free_one() -> None:
    """pick_port keeps the preferred port when free and hands out another one when it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        assert lab.pick_port(taken) != taken
    assert lab.port_is_free(lab.pick_port(None))


def test_root_without_notebooks_is_refused(local_cfg, tmp_path: Path) -> None:
    """Pointing JupyterLab at a folder without notebooks/ is a mistake worth stopping at."""
    with pytest.raises(lab.LabError, match="notebooks/"):
        lab.plan_lab(local_cfg, port=lab.pick_port(None), root_dir=tmp_path)


def test_main_reports_config_errors_without_a_traceback(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    """A broken setting ends `make lab` with one readable line and exit code 2."""
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.example.com/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("FINETUNE_BACKEND", raising=False)
    monkeypatch.setattr("helpers.config.REPO_ROOT", tmp_path)  # no reader's .env
    assert lab.main(["--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "OPENAI_API_KEY" in err
