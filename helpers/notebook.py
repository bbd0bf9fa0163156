"""The first cell of every notebook: `cfg = setup_notebook("NN")`, or `setup_notebook("02", seed=7)` to change a setting.

A reader changes a setting either in that call (`seed=7`, `n_train=200`, `n_epochs=2`,
`base_model="tiny-test"`, …: the names of `Config`'s fields) or with a `%env NAME=value` line
before it (`%env WORKBOOK_SEED=7`; the README lists every variable).
"""

from __future__ import annotations

import dataclasses
import platform
from importlib import metadata
from typing import Any

from helpers.config import Config, ConfigError, load_config
from helpers.fonts import setup_cjk_font
from helpers.local_backend import ensure_server
from helpers.tokens import encoding_for_model, ensure_tiktoken

# Packages whose versions are printed (torch only where a notebook trains or talks to the model).
BASE_PACKAGES = ("openai", "pandas", "tiktoken", "matplotlib", "ipywidgets")
MODEL_PACKAGES = ("torch", "transformers", "peft")
MODEL_NOTEBOOKS = {"05", "06", "07", "08"}
API_NOTEBOOKS = {"04", "05", "06", "07", "08"}  # these call the API: on the local backend its server must answer
SERVER_START_TIMEOUT = 300.0  # seconds; the first start converts the base model


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions from package metadata (nothing is imported, so torch costs nothing here)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# Fields a notebook may override, with their type and smallest value (the same bounds as their variables).
OVERRIDABLE: dict[str, tuple[type, float | None]] = {
    "seed": (int, 0), "n_train": (int, 10), "n_valid": (int, 1), "n_heldout": (int, 1), "n_epochs": (int, 1),
    "base_model": (str, None), "request_timeout": (float, 1), "allow_new_job": (bool, None), "confirm_cost": (bool, None),
}


def apply_overrides(cfg: Config, **overrides: Any) -> Config:
    """setup_notebook's overrides (every notebook's first cell): `cfg` with fields replaced; ConfigError naming a bad field."""
    for name, value in overrides.items():
        if name not in OVERRIDABLE:
            known = ", ".join(OVERRIDABLE)
            if name in {f.name for f in dataclasses.fields(Config)}:
                raise ConfigError(f"{name} cannot be changed in setup_notebook (it comes from the environment or .env); "
                                  f"these can: {known}")
            raise ConfigError(f"setup_notebook got {name}={value!r}, which is no setting; use one of {known}")
        kind, minimum = OVERRIDABLE[name]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{name}={value!r}: must be {'a whole number' if kind is int else kind.__name__}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name}={value!r}: must be at least {minimum:g}")
        if kind is str and not value.strip():
            raise ConfigError(f"{name}={value!r}: must not be empty")
    return dataclasses.replace(cfg, **{k: float(v) if OVERRIDABLE[k][0] is float else v for k, v in overrides.items()})


def setup_notebook(nb_id: str, **overrides: Any) -> Config:
    """The first cell of every notebook: load the configuration (plus field overrides), ready tiktoken and the CJK font offline, print what this run uses."""
    cfg = apply_overrides(load_config(), **overrides)
    if cfg.is_local and nb_id[:2] in API_NOTEBOOKS and ensure_server(cfg, timeout=SERVER_START_TIMEOUT):
        print(f"本地服务器（local server）已在 {cfg.base_url} 启动，后面的笔记本接着用它"
              "（要停掉它：`python -m helpers.local_backend stop`）")
    ensure_tiktoken()
    font = setup_cjk_font()
    names = BASE_PACKAGES + (MODEL_PACKAGES if nb_id[:2] in MODEL_NOTEBOOKS else ())
    print(f"笔记本        ：{nb_id}")
    if overrides:
        print("改动的设置    ：" + ", ".join(f"{k}={v!r}" for k, v in overrides.items()) + "（在这一格里设置）")
    print(cfg.describe())
    print(f"词元（token） ：{encoding_for_model(cfg.base_model).label()}")
    print(f"中文字体      ：{font.describe()}")
    print("版本          ：" + ", ".join(f"{k} {v}" for k, v in package_versions(names).items()))
    return cfg
