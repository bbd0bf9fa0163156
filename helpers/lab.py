"""`make lab`: open the course in JupyterLab, with the local backend running when it is the configured one.

Usage: `python -m helpers.lab [--port N] [--no-browser]`

It loads the configuration, starts (or reuses) the local API server when the backend is
local, then runs JupyterLab on 127.0.0.1 with a fresh token, rooted at the repository,
with an environment in which every kernel talks to the same backend.
It prints the URL to open. Ctrl+C (twice, as JupyterLab asks) stops JupyterLab; a local
server that this command started is stopped with it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from helpers.config import REPO_ROOT, Config, ConfigError, load_config
from helpers.kernelenv import HEADLESS_ONLY, kernel_environment
from helpers.local_backend import LocalServerError, dashboard_line
from helpers.net import free_port, port_is_free

DEFAULT_LAB_PORT = 8888
NOTEBOOKS_PATH = "lab/tree/notebooks"


class LabError(RuntimeError):
    """JupyterLab or the local backend could not be started."""


@dataclass(frozen=True)
class LabPlan:
    """What `make lab` is about to run: the command, its environment and the URL to open."""

    command: list[str]
    env: dict[str, str]
    port: int
    url: str
    root_dir: Path


def pick_port(preferred: int | None = DEFAULT_LAB_PORT) -> int:
    """The preferred port if free, else one the operating system hands out."""
    return preferred if preferred and port_is_free(preferred) else free_port()


def lab_env(cfg: Config, token: str, base_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for JupyterLab and its kernels: the token and the same backend (helpers is installed)."""
    env = dict(os.environ if base_env is None else base_env)
    for name in HEADLESS_ONLY:
        env.pop(name, None)  # Agg or the headless flag would hide plots and widgets in the browser
    env["JUPYTER_TOKEN"] = token  # in the environment, not on the command line where `ps` shows it
    return {**env, **kernel_environment(cfg, headless=False)}


def lab_command(port: int, open_browser: bool, root_dir: Path = REPO_ROOT) -> list[str]:
    """The JupyterLab command line: loopback only, token auth (from JUPYTER_TOKEN), rooted at the repository."""
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root_dir}",
    ]
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root; JupyterLab refuses without this
    return cmd


def lab_url(port: int, token: str, path: str = NOTEBOOKS_PATH) -> str:
    """The URL a reader opens: the notebooks folder, logged in with the token."""
    return f"http://127.0.0.1:{port}/{path}?token={token}"


def plan_lab(
    cfg: Config,
    port: int | None = None,
    open_browser: bool = True,
    token: str | None = None,
    root_dir: Path = REPO_ROOT,
) -> LabPlan:
    """Everything `make lab` will run, without starting anything."""
    port = pick_port(DEFAULT_LAB_PORT) if port is None else port
    if not port_is_free(port):
        raise LabError(f"port {port} on 127.0.0.1 is in use: choose another with `python -m helpers.lab --port N`")
    token = token or secrets.token_urlsafe(24)
    root_dir = Path(root_dir).resolve()
    if not (root_dir / "notebooks").is_dir():
        raise LabError(f"{root_dir} has no notebooks/ folder: run this from the repository (or pass --root-dir)")
    return LabPlan(lab_command(port, open_browser, root_dir), lab_env(cfg, token), port, lab_url(port, token), root_dir)


def start_local_backend(cfg: Config, timeout: float = 300.0) -> bool:
    """Start (or reuse) the local API server; True when this call started it."""
    from helpers import local_backend

    return local_backend.ensure_server(cfg, timeout=timeout)


def stop_local_backend(cfg: Config) -> None:
    """Stop the local server (called only for a server this command started)."""
    from helpers import local_backend

    local_backend.stop_server(cfg)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit so the cleanup (JupyterLab, the local server) still runs."""
    raise SystemExit(128 + signum)


def wait_until_answering(plan: LabPlan, proc: subprocess.Popen, timeout: float = 180.0) -> bool:
    """Wait until JupyterLab answers on its port (False when it exited first or took longer than timeout)."""
    url = f"http://127.0.0.1:{plan.port}/api/status"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        request = urllib.request.Request(url, headers={"Authorization": f"token {plan.env['JUPYTER_TOKEN']}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def run_lab(plan: LabPlan) -> int:
    """Run JupyterLab in the foreground; print the URL once it answers; Ctrl+C goes to JupyterLab, which asks to confirm."""
    proc = subprocess.Popen(plan.command, env=plan.env, cwd=plan.root_dir)
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child gets the terminal's Ctrl+C itself
    previous_term = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if wait_until_answering(plan, proc):
            print("\nJupyterLab is ready. Open the course in your browser (Ctrl+C twice here to stop):", flush=True)
            print(f"    {plan.url}\n", flush=True)
        elif proc.poll() is None:
            print(f"\nJupyterLab is slow to answer; try this URL in a moment:\n    {plan.url}\n", flush=True)
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the backend if local, print the URL, run JupyterLab."""
    parser = argparse.ArgumentParser(prog="python -m helpers.lab", description="Open the course in JupyterLab.")
    parser.add_argument("--port", type=int, default=None, help=f"JupyterLab port (default {DEFAULT_LAB_PORT}, or a free one)")
    parser.add_argument("--no-browser", action="store_true", help="do not try to open a web browser")
    parser.add_argument("--root-dir", type=Path, default=REPO_ROOT, help="folder JupyterLab shows (default: the repository)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
        plan = plan_lab(cfg, args.port, open_browser=not args.no_browser, root_dir=args.root_dir)
        print(cfg.describe(), flush=True)
        started = False
        if cfg.is_local:
            print(f"local API server: starting or reusing {cfg.base_url} (the first start converts the model) ...", flush=True)
            started = start_local_backend(cfg)
            print(f"local API server ready ({'started now' if started else 'already running'}); "
                  f"log: {cfg.localapi_dir / 'server.log'}", flush=True)
            print(dashboard_line(cfg), flush=True)
        else:
            print(f"remote backend {cfg.base_url}: no local server needed", flush=True)
    except (ConfigError, LabError, LocalServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"starting JupyterLab on http://127.0.0.1:{plan.port} ...", flush=True)
    try:
        return run_lab(plan)
    finally:
        if started:
            print("stopping the local API server this command started", flush=True)
            try:
                stop_local_backend(cfg)
            except LocalServerError as exc:
                print(f"warning: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
