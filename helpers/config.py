"""The workbook's configuration: one place for backend, models, data source, sizes and paths.

Everything is read from the environment (or a git-ignored `.env` at the repository
root) once, by `load_config()`, into a frozen `Config`. Nothing here is global
mutable state: notebooks call `load_config()` in their first cell and pass the
result along.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from helpers.files import write_text_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
DEFAULT_LOCAL_PORT = 8765
DEFAULT_LOCAL_MODEL = "qwen2.5-coder-0.5b-instruct"  # writes Chinese a reader can read; chosen by measurement (benchmarks/README.md)
DEFAULT_REMOTE_MODEL = "gpt-4o-mini-2024-07-18"
# 2 epochs: the measured sweep's lowest full validation loss at the default rate (helpers/sweep.py; notebook 06)
DEFAULT_N_EPOCHS = 2
OPENAI_BASE_URL = "https://api.openai.com/v1"
HUATUO_HUB_ID = "FreedomIntelligence/huatuo26M-testdatasets"
HUATUO_HUB_FILE = "test_datasets.jsonl"  # the data file in that dataset repository (its one split, "test")
# The real test set, vendored byte for byte (Apache-2.0, see data/README.md): the local backend's default data.
VENDORED_PATH = REPO_ROOT / "data" / "huatuo26M_test_datasets.jsonl"
VENDORED_SHA256 = "79a587b05bbcdc9935b70c4a46c8c9db8b9b1d4e5150b78d6dcc3a6132a24050"
FIXTURE_PATH = REPO_ROOT / "data" / "huatuo_fixture.jsonl"  # synthetic rows for the tests (data/make_fixture.py)
DATA_SOURCES = ("vendored", "fixture", "hub")  # the values of HUATUO_SOURCE


BACKEND_CHOICES = {"", "local", "openai", "remote"}  # "remote" is an older name for "openai"


class ConfigError(ValueError):
    """A setting in the environment or `.env` is missing or invalid."""


@dataclass(frozen=True)
class Config:
    """Resolved settings for one run of the course (the API key is never shown in repr)."""

    backend: str  # "local" (our offline server) or "remote" (OpenAI or a compatible provider)
    backend_reason: str  # which setting chose the backend, for the first cell
    base_url: str
    api_key: str = field(repr=False)
    api_key_source: str  # where the key came from, for display: never the key itself
    base_model: str  # the model to fine-tune and to compare against
    data_source: str  # "vendored" (the real test set in data/), "fixture" (synthetic, for tests), "hub" or "path"
    data_path: Path | None  # the JSONL when data_source is "vendored", "fixture" or "path"
    seed: int
    n_train: int
    n_valid: int
    n_heldout: int
    n_epochs: int
    work_dir: Path
    build_dir: Path
    local_port: int
    allow_new_job: bool  # FINETUNE_NEW_JOB=1: launch a new job even if one with the same identity exists
    confirm_cost: bool  # FINETUNE_CONFIRM=1: accept the estimated cost on a remote backend without asking
    request_timeout: float  # seconds, for every API call

    @property
    def is_local(self) -> bool:
        """True when the API is our own offline server."""
        return self.backend == "local"

    @property
    def localapi_dir(self) -> Path:
        """Where the local server keeps its database, blobs and adapters."""
        return self.work_dir / "localapi"

    def describe(self) -> str:
        """A short, secret-free summary in Chinese for the first cell of each notebook (paths relative to the repository)."""
        label = {"vendored": "仓库自带的华佗-26M 真实测试集", "fixture": "合成的测试数据（fixture，只供测试用）",
                 "hub": "Hugging Face 上的华佗-26M 测试集"}
        name = label.get(self.data_source, self.data_source)
        data = name if self.data_path is None else f"{name}：{display_path(self.data_path)}"
        backend = "本地（local）" if self.is_local else "远程（remote）"
        return "\n".join(
            [
                f"后端          ：{backend}，{self.base_url}",
                f"为什么        ：{self.backend_reason}",
                f"API 密钥      ：{self.api_key_source}",
                f"基础模型      ：{self.base_model}",
                f"数据来源      ：{data}",
                f"数据量        ：训练 {self.n_train} 条，验证 {self.n_valid} 条，留出 {self.n_heldout} 条，随机种子（seed）{self.seed}",
                f"工作目录      ：{display_path(self.work_dir)}",
            ]
        )


def load_dotenv_file(path: Path | None = None) -> None:
    """Load KEY=VALUE pairs from `.env` into os.environ without overriding what is already set."""
    path = path or REPO_ROOT / ".env"
    if not path.is_file():
        return
    from dotenv import load_dotenv

    load_dotenv(path, override=False)


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """Read an integer setting, with a readable error when it is not one."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_flag(name: str) -> bool:
    """True for 1/true/yes/on (any case)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def is_loopback_url(url: str) -> bool:
    """True when the URL points at this machine (our local server)."""
    host = urlparse(url).hostname or ""
    return host in LOCAL_HOSTS or host.startswith("127.")


def display_path(path: Path) -> str:
    """A path relative to the repository when it lies inside it (messages and outputs never show machine paths)."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_absolute() and path.is_relative_to(REPO_ROOT) else str(path)


def local_key_path(work_dir: Path) -> Path:
    """The file where the local server stores its generated bearer key."""
    return work_dir / "localapi" / "api_key"


def read_or_create_local_key(work_dir: Path) -> tuple[str, str]:
    """Return (key, source) for the local server: LOCALAPI_KEY, else the stored key, else a new one."""
    env_key = os.environ.get("LOCALAPI_KEY", "").strip()
    if env_key:
        return env_key, "来自环境变量 LOCALAPI_KEY"
    path = local_key_path(work_dir)
    if path.is_file():
        return path.read_text(encoding="utf-8").strip(), f"保存在 {display_path(path)}"
    key = "local-" + secrets.token_urlsafe(24)
    write_text_atomic(path, key + "\n", mode=0o600)
    return key, f"新生成，保存在 {display_path(path)}"


def huatuo_file(path: Path, given: str) -> Path:
    """HUATUO_PATH's file: the path itself, or in a folder (a downloaded copy of the dataset) its test_datasets.jsonl or only *.jsonl."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(f"HUATUO_PATH={given!r} does not name a file or folder")
    if (path / HUATUO_HUB_FILE).is_file():
        return path / HUATUO_HUB_FILE
    found = sorted(path.glob("*.jsonl"))
    if len(found) == 1:
        return found[0]
    names = ", ".join(p.name for p in found) or "no .jsonl file"
    raise ConfigError(f"HUATUO_PATH={given!r} is a folder with {names}: set it to the test set's JSONL file itself")


def choose_backend(forced: str, base_url: str) -> tuple[str, str]:
    """("local" | "remote", why): remote only when FINETUNE_BACKEND=openai/remote or OPENAI_BASE_URL is not loopback."""
    forced = forced.strip().lower()
    if forced not in BACKEND_CHOICES:
        raise ConfigError(f"FINETUNE_BACKEND={forced!r}: use 'local' or 'openai' ('remote' is accepted too)")
    if forced == "local":
        return "local", "设置了 FINETUNE_BACKEND=local"
    if forced in {"openai", "remote"}:
        return "remote", f"设置了 FINETUNE_BACKEND={forced}"
    if base_url and not is_loopback_url(base_url):
        return "remote", "OPENAI_BASE_URL 指向另一台机器"
    if base_url:
        return "local", "OPENAI_BASE_URL 指向本机"
    return "local", ("默认如此：既没有设置 FINETUNE_BACKEND=openai，也没有指向别处的 OPENAI_BASE_URL"
                     "（只导出 OPENAI_API_KEY 不会切换后端）")


def load_config(env_file: Path | None = None) -> Config:
    """Resolve the course configuration from the environment and `.env`."""
    load_dotenv_file(env_file)
    work_dir = Path(os.environ.get("WORKBOOK_WORK_DIR") or REPO_ROOT / "data" / "work").resolve()
    build_dir = Path(os.environ.get("WORKBOOK_BUILD_DIR") or REPO_ROOT / "build").resolve()
    port = env_int("LOCALAPI_PORT", DEFAULT_LOCAL_PORT, minimum=1)

    base_url = os.environ.get("OPENAI_BASE_URL", "").strip().rstrip("/")
    env_key = os.environ.get("OPENAI_API_KEY", "").strip()
    backend, reason = choose_backend(os.environ.get("FINETUNE_BACKEND", ""), base_url)
    if backend == "local":
        base_url = base_url if base_url and is_loopback_url(base_url) else f"http://127.0.0.1:{port}/v1"
        # Our server's key is LOCALAPI_KEY or the stored one: an exported OPENAI_API_KEY is never sent to it.
        api_key, key_source = read_or_create_local_key(work_dir)
        default_model = DEFAULT_LOCAL_MODEL
    else:
        base_url = base_url or OPENAI_BASE_URL
        if not env_key:
            raise ConfigError(
                f"the remote backend is chosen ({reason}) but OPENAI_API_KEY is not set: put the key in the environment "
                "or in the git-ignored .env file (or set FINETUNE_BACKEND=local)"
            )
        api_key, key_source = env_key, "来自环境变量 OPENAI_API_KEY"
        default_model = DEFAULT_REMOTE_MODEL

    base_model = os.environ.get("FINETUNE_BASE_MODEL", "").strip() or default_model

    huatuo_path = os.environ.get("HUATUO_PATH", "").strip()
    source = os.environ.get("HUATUO_SOURCE", "").strip().lower()
    if huatuo_path:
        data_source, data_path = "path", huatuo_file(Path(huatuo_path).expanduser().resolve(), huatuo_path)
    else:
        if source and source not in DATA_SOURCES:
            raise ConfigError(f"HUATUO_SOURCE={source!r}: use 'vendored', 'fixture' or 'hub' (or set HUATUO_PATH)")
        data_source = source or ("hub" if backend == "remote" else "vendored")
        data_path = {"vendored": VENDORED_PATH, "fixture": FIXTURE_PATH}.get(data_source)

    return Config(
        backend=backend,
        backend_reason=reason,
        base_url=base_url,
        api_key=api_key,
        api_key_source=key_source,
        base_model=base_model,
        data_source=data_source,
        data_path=data_path,
        seed=env_int("WORKBOOK_SEED", 42),
        n_train=env_int("WORKBOOK_N_TRAIN", 100, minimum=10),
        n_valid=env_int("WORKBOOK_N_VALID", 20, minimum=1),
        n_heldout=env_int("WORKBOOK_N_HELDOUT", 50, minimum=1),
        n_epochs=env_int("WORKBOOK_N_EPOCHS", DEFAULT_N_EPOCHS, minimum=1),
        work_dir=work_dir,
        build_dir=build_dir,
        local_port=port,
        allow_new_job=env_flag("FINETUNE_NEW_JOB"),
        confirm_cost=env_flag("FINETUNE_CONFIRM"),
        request_timeout=float(env_int("WORKBOOK_REQUEST_TIMEOUT", 120, minimum=1)),
    )
