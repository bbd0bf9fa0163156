"""The first cell of every notebook: `cfg = setup_notebook("NN")`."""

from __future__ import annotations

import platform
from importlib import metadata

from helpers.config import Config, load_config
from helpers.fonts import setup_cjk_font
from helpers.local_backend import ensure_server
from helpers.tokens import encoding_for_model, ensure_tiktoken

# Packages whose versions are printed (torch only where a notebook trains or talks to the model).
BASE_PACKAGES = ("openai", "pandas", "tiktoken", "matplotlib", "ipywidgets")
MODEL_PACKAGES = ("torch", "transformers", "peft")
MODEL_NOTEBOOKS = {"05", "06", "07"}
API_NOTEBOOKS = {"04", "05", "06", "07"}  # these call the API: on the local backend its server must answer
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


def setup_notebook(nb_id: str) -> Config:
    """Load the configuration, start the local server if 04-07 need it and none answers, print what this run will use."""
    cfg = load_config()
    if cfg.is_local and nb_id[:2] in API_NOTEBOOKS and ensure_server(cfg, timeout=SERVER_START_TIMEOUT):
        print(f"local server: started on {cfg.base_url}; it keeps running for the next notebooks "
              "(stop it with `python -m helpers.local_backend stop`)")
    ensure_tiktoken()
    font = setup_cjk_font()
    names = BASE_PACKAGES + (MODEL_PACKAGES if nb_id[:2] in MODEL_NOTEBOOKS else ())
    print(f"notebook    : {nb_id}")
    print(cfg.describe())
    print(f"tokens      : {encoding_for_model(cfg.base_model).label()}")
    print(f"CJK font    : {font.describe()}")
    print("versions    : " + ", ".join(f"{k} {v}" for k, v in package_versions(names).items()))
    return cfg
