"""Client side of the offline backend: make sure the local API server is running, or stop it.

Talks to the server only over HTTP (never imports `helpers.localapi`): a server already listening on
`cfg.base_url` that accepts our key is reused; otherwise one is started detached (its own session, so it
outlives a notebook kernel) with `python -m helpers.localapi serve`, logging to `<work>/localapi/server.log`.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from helpers.config import REPO_ROOT, Config


class LocalServerError(RuntimeError):
    """The local server could not be reached, started or stopped; the message says what to do."""


def server_root(cfg: Config) -> str:
    """The server's root URL (`http://host:port`), from the configured `.../v1` base URL."""
    url = cfg.base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def dashboard_line(cfg: Config) -> str:
    """Where the local server's dashboard is and where its key comes from (never the key itself)."""
    return f"dashboard: {server_root(cfg)}/  (the API key it asks for: {cfg.api_key_source})"


def probe(cfg: Config, timeout: float = 2.0) -> dict | None:
    """The server's `/local/info` when one answers with our key, None when nothing listens; raises on a wrong key."""
    try:
        r = httpx.get(server_root(cfg) + "/local/info", headers={"Authorization": f"Bearer {cfg.api_key}"},
                      timeout=timeout)
    except httpx.TransportError:
        return None
    if r.status_code == 401:
        raise LocalServerError(
            f"A server on {cfg.base_url} rejects our API key ({cfg.api_key_source}). Stop that server, or use the "
            f"key it was started with (LOCALAPI_KEY), or pick another port with LOCALAPI_PORT.")
    if r.status_code != 200:
        raise LocalServerError(f"Something on {server_root(cfg)} answered /local/info with HTTP {r.status_code}; "
                               "it is not the workbook's local server. Pick another port with LOCALAPI_PORT.")
    return r.json()


def _log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of the server log, for error messages."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ensure_server(cfg: Config, timeout: float = 60.0, extra_args: list[str] | None = None) -> bool:
    """Reuse the local server on cfg.base_url, or start it detached and wait until it answers; True when this call started it."""
    if not cfg.is_local or _reusable(cfg):
        return False
    cfg.localapi_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.localapi_dir / "server.lock", "a+") as lock:  # two kernels starting at once: one server
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _reusable(cfg):
                return False
            _start(cfg, timeout, extra_args)
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _reusable(cfg: Config) -> bool:
    """True when our server already answers on cfg.base_url; raises when a different one does."""
    info = probe(cfg)
    if info is None:
        return False
    if Path(info.get("work_dir", "")).resolve() != cfg.work_dir.resolve():
        raise LocalServerError(
            f"The local server on {cfg.base_url} keeps its state in {info.get('work_dir')}, not in {cfg.work_dir}. "
            "Stop it (helpers.local_backend.stop_server) or choose another port with LOCALAPI_PORT.")
    return True


def _start(cfg: Config, timeout: float, extra_args: list[str] | None) -> None:
    """Start the server detached and wait until it answers."""
    parsed = urlparse(cfg.base_url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or cfg.local_port
    log_path = cfg.localapi_dir / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WORKBOOK_WORK_DIR": str(cfg.work_dir), "LOCALAPI_KEY": cfg.api_key}
    cmd = [sys.executable, "-m", "helpers.localapi", "serve", "--host", host, "--port", str(port), *(extra_args or [])]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if _reusable(cfg):  # another process started one first
                return
            raise LocalServerError(f"The local server exited with code {proc.returncode} while starting. "
                                   f"Last lines of {log_path}:\n{_log_tail(log_path)}")
        if probe(cfg, timeout=1.0) is not None:
            return
        time.sleep(0.2)
    raise LocalServerError(f"The local server did not answer on {cfg.base_url} within {timeout:.0f} s "
                           f"(pid {proc.pid}). Last lines of {log_path}:\n{_log_tail(log_path)}")


def release_models(cfg: Config, timeout: float = 60.0) -> int:
    """Ask the local server to unload its generation models (they load again on the next chat request), so that
    another program can have the memory: notebook 08 before llama.cpp loads the same model (issue 17). Returns how
    many base models were unloaded; 0 on a remote backend or when no local server answers."""
    if not cfg.is_local:
        return 0
    try:
        r = httpx.post(server_root(cfg) + "/local/release", headers={"Authorization": f"Bearer {cfg.api_key}"},
                       timeout=timeout)
    except httpx.TransportError:
        return 0
    if r.status_code != 200:
        raise LocalServerError(f"The server on {cfg.base_url} could not unload its models: HTTP {r.status_code} "
                               f"{r.text[:200]}")
    return int(r.json().get("released", 0))


def stop_server(cfg: Config, timeout: float = 30.0) -> bool:
    """Ask the local server on cfg.base_url to shut down and wait until it is gone; False when none was running."""
    if not cfg.is_local:
        return False
    try:
        r = httpx.post(server_root(cfg) + "/local/shutdown", headers={"Authorization": f"Bearer {cfg.api_key}"},
                       timeout=5.0)
    except httpx.TransportError:
        return False
    if r.status_code != 200:
        raise LocalServerError(f"The server on {cfg.base_url} refused to shut down: HTTP {r.status_code} {r.text[:200]}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(server_root(cfg) + "/health", timeout=1.0)
        except httpx.TransportError:
            return True
        time.sleep(0.2)
    raise LocalServerError(f"The local server on {cfg.base_url} did not stop within {timeout:.0f} s.")


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m helpers.local_backend start|stop` for the configured local server (taught in README)."""
    import argparse

    from helpers.config import ConfigError, load_config

    parser = argparse.ArgumentParser(prog="python -m helpers.local_backend",
                                     description="Start (detached) or stop the workbook's local API server.")
    parser.add_argument("command", choices=["start", "stop"])
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
        if not cfg.is_local:
            print(f"the configured backend is remote ({cfg.base_url}): no local server to {args.command}")
            return 0
        if args.command == "start":
            started = ensure_server(cfg, timeout=300.0)
            print(f"local server {'started' if started else 'already running'} on {cfg.base_url} "
                  f"(log: {cfg.localapi_dir / 'server.log'})")
            print(dashboard_line(cfg))
        else:
            stopped = stop_server(cfg)
            print(f"local server on {cfg.base_url} {'stopped' if stopped else 'was not running'}")
    except (ConfigError, LocalServerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
