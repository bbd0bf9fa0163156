"""Root pytest configuration: the local API server for nbval's notebook kernels.

When the session collected notebook cells (nbval), the first of them starts, before its kernel
does, a local server with the tiny test model on a free port, in a private work folder (so a test
run never touches the reader's `data/work/`). The variables the notebooks read (`OPENAI_BASE_URL`,
`OPENAI_API_KEY`, `WORKBOOK_WORK_DIR`, `FINETUNE_BASE_MODEL`, ...) are put into `os.environ`,
which nbval's kernels inherit. Unit tests that run before it see the environment unchanged; after
the session the server is stopped, the variables restored and the folder removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_STATE: dict = {}

# No test may write into the reader's data/work (their uploads, jobs, key and converted models): whatever falls back
# to the configured work folder gets a private one for the session (tests that need their own set it themselves).
_SESSION_WORK = Path(tempfile.mkdtemp(prefix="tests-work-"))
os.environ["WORKBOOK_WORK_DIR"] = str(_SESSION_WORK / "work")
os.environ["WORKBOOK_BUILD_DIR"] = str(_SESSION_WORK / "build")

# Every server, training worker and kernel a test starts shares 2 cores with pytest itself: one torch
# thread each avoids OpenMP threads spinning for a core (see helpers/localapi/threads.py).
os.environ.setdefault("LOCALAPI_TORCH_THREADS", "1")


def notebook_settings(work_dir: Path, port: int) -> dict[str, str]:
    """The reader's settings for a course run on the tiny model and the fixture against a local server at `port`."""
    return {
        "FINETUNE_BACKEND": "local",
        "FINETUNE_BASE_MODEL": "tiny-test",
        "HUATUO_SOURCE": "fixture",
        "WORKBOOK_WORK_DIR": str(work_dir),
        "WORKBOOK_BUILD_DIR": str(work_dir.parent / "build"),
        "LOCALAPI_PORT": str(port),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
    }


def _start_for_notebooks() -> None:
    """Start the tiny-model server and export the notebooks' environment (once per session)."""
    from helpers.config import load_config, read_or_create_local_key
    from helpers.kernelenv import kernel_environment
    from helpers.local_backend import ensure_server
    from helpers.net import free_port

    root = Path(tempfile.mkdtemp(prefix="nbval-course-"))
    env = notebook_settings(root / "work", free_port())
    cleared = ("HUATUO_PATH", "FINETUNE_NEW_JOB", "FINETUNE_CONFIRM", "LOCALAPI_KEY", "OPENAI_API_KEY", "LOCALAPI_FAULTS",
               "WORKBOOK_HEADLESS")
    _STATE["saved"] = {name: os.environ.get(name) for name in [*env, *cleared]}
    _STATE["root"] = root
    for name in cleared:
        os.environ.pop(name, None)
    os.environ.update(env)
    os.environ["OPENAI_API_KEY"], _ = read_or_create_local_key(root / "work")
    cfg = load_config()
    os.environ.update(kernel_environment(cfg, headless=True))  # what `make course` gives its kernels
    _STATE["cfg"] = cfg
    ensure_server(cfg)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the first notebook cell (and so before its kernel starts), bring up the server."""
    if type(item).__module__.startswith("nbval") and "cfg" not in _STATE:
        _start_for_notebooks()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the server we started, restore the environment, remove the private folders."""
    shutil.rmtree(_SESSION_WORK, ignore_errors=True)
    if "cfg" not in _STATE:
        return
    from helpers.local_backend import stop_server

    try:
        stop_server(_STATE["cfg"])
    finally:
        for name, value in _STATE["saved"].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(_STATE["root"], ignore_errors=True)
        _STATE.clear()


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used by the tests; apply the thread limit to engine tests that run torch in pytest."""
    from helpers.localapi.threads import limit_torch_threads

    config.addinivalue_line("markers", "slow: the whole course, a browser, nbconvert or a real model (a minute or more); `make test-fast` skips these")
    limit_torch_threads()
